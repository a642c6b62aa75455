"""How many seeds pass each learning test of the suite, with the test's own budget and threshold.

Every learning assertion of the test suite is a function of a seed in ``tests/learning_checks.py``;
the tests check :data:`tests.learning_checks.TEST_SEEDS`. This script runs each check on 20 seeds
(by default), prints per check the number of seeds that pass, the metric's minimum / mean and the
smallest margin over the threshold, and writes ``benchmarks/results/seed_robustness.{json,md}``.

    .venv/bin/python benchmarks/bench_seed_robustness.py                     # all checks, 20 seeds, 2 workers
    .venv/bin/python benchmarks/bench_seed_robustness.py --checks toy_policy --seeds 5 --workers 1

A learning test is only trusted when this shows 20/20 with margin.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.learning_checks import CHECKS, TEST_SEEDS  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _run(name: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        check = CHECKS[name](seed)
        out = check.to_dict()
    except Exception as exc:  # noqa: BLE001 - a crashing seed counts as a failing seed
        out = {"name": name, "seed": seed, "metric": float("nan"), "threshold": float("nan"), "passed": False,
               "margin": float("nan"), "details": {"error": f"{type(exc).__name__}: {exc}"}}
    out["seconds"] = time.perf_counter() - start
    return out


def summarise(name: str, rows: list[dict]) -> dict:
    metrics = [r["metric"] for r in rows if r["metric"] == r["metric"]]
    margins = [r["margin"] for r in rows if r["margin"] == r["margin"]]
    return {"check": name, "seeds": len(rows), "passed": sum(bool(r["passed"]) for r in rows),
            "threshold": rows[0]["threshold"] if rows else None,
            "metric_min": min(metrics) if metrics else None,
            "metric_mean": statistics.fmean(metrics) if metrics else None,
            "margin_min": min(margins) if margins else None,
            "failing_seeds": [r["seed"] for r in rows if not r["passed"]],
            "seconds_per_seed": statistics.fmean(r["seconds"] for r in rows) if rows else None}


def to_markdown(summaries: list[dict], seeds: int) -> str:
    lines = [f"# Learning tests over {seeds} seeds", "",
             "Each row is one learning assertion of the test suite (`tests/learning_checks.py`), run with the "
             f"test's own budget and threshold; the tests themselves check seeds {list(TEST_SEEDS)}.", "",
             "| check | passed | threshold | metric min | metric mean | smallest margin | failing seeds | s / seed |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {s['check']} | {s['passed']}/{s['seeds']} | {fmt(s['threshold'])} | {fmt(s['metric_min'])} | "
                     f"{fmt(s['metric_mean'])} | {fmt(s['margin_min'])} | {s['failing_seeds'] or '–'} | "
                     f"{fmt(s['seconds_per_seed'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, from {','.join(CHECKS)}")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per check")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=str(RESULTS / "seed_robustness"), help="output path without extension")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.checks.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {sorted(CHECKS)}")
    start = time.perf_counter()
    rows: dict[str, list[dict]] = {n: [] for n in names}
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run, n, s): n for n in names for s in range(args.seeds)}
        for future in cf.as_completed(futures):
            row = future.result()
            rows[row["name"]].append(row)
            print(f"{row['name']:>22} seed {row['seed']:>2}: metric {row['metric']:.3f} "
                  f"({'pass' if row['passed'] else 'FAIL'}, {row['seconds']:.1f} s)", flush=True)
    summaries = [summarise(n, sorted(rows[n], key=lambda r: r["seed"])) for n in names]
    markdown = to_markdown(summaries, args.seeds)
    print(markdown)
    payload = {"seeds": args.seeds, "workers": args.workers, "wall_seconds": time.perf_counter() - start,
               "python": platform.python_version(), "summaries": summaries,
               "rows": {n: sorted(r, key=lambda x: x["seed"]) for n, r in rows.items()}}
    write_results(args.out, payload, markdown)
    return 0 if all(s["passed"] == s["seeds"] for s in summaries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
