"""Learning benchmark of the inner loop: trained agent vs a random policy on an ALFWorld preset.

For each formula (outcome-only ``g1`` and the shaped ``g1 + 0.5*(g2 + g3 + g4)/3`` by default) and
each seed, runs :func:`derl_gym.runtime.inner.run_inner` on the preset (``alfworld-tiny`` by
default) and records the validation success rate (task reward, deterministic masked policy), the
L0/L1 test success rates, wall time and training steps/s. The random baseline is the masked
uniform policy over the same candidate commands, on the same validation env, one run per seed.

Writes ``benchmarks/results/bench_inner.json`` and ``bench_inner.md`` (markdown table; ``--tag T``:
``bench_inner_T.*``) and prints the table. Not a test: it takes minutes.

    .venv/bin/python benchmarks/bench_inner.py                    # 3 seeds, 2 formulas
    .venv/bin/python benchmarks/bench_inner.py --seeds 0 --workers 1
    .venv/bin/python benchmarks/bench_inner.py --preset alfworld-small --seeds 0 1 --workers 1 --tag small
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derl_gym.runtime.inner import make_eval_env, run_inner  # noqa: E402
from derl_gym.runtime.presets import get_preset  # noqa: E402

DEFAULT_FORMULAS = ("g1", "g1 + 0.5*(g2 + g3 + g4)/3")


def random_baseline(spec, seed: int, episodes: int) -> dict:
    """Return the masked-uniform random policy's validation success on ``spec``'s validation env."""
    from derl_gym.agents.inner.trainer import evaluate_random

    env = make_eval_env(spec, spec.validation_env)
    start = time.perf_counter()
    result = evaluate_random(env, episodes, seed=seed + 100_003)
    env.close()
    return {"seed": seed, "score": result.success_rate, "episodes": episodes,
            "wall_seconds": time.perf_counter() - start}


def _mean(values):
    return statistics.fmean(values) if values else float("nan")


def _std(values):
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--formulas", nargs="+", default=list(DEFAULT_FORMULAS))
    parser.add_argument("--workers", type=int, default=2, help="parallel inner runs (processes)")
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--random-episodes", type=int, default=100)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the output files (bench_inner_<tag>.{json,md})")
    args = parser.parse_args(argv)

    overrides = {} if args.total_timesteps is None else {"total_timesteps": args.total_timesteps}
    spec = get_preset(args.preset, **overrides)
    spec.prepare()  # generate/cache the games once in this process before the workers start

    start = time.perf_counter()
    jobs = [(formula, seed) for formula in args.formulas for seed in args.seeds]
    results = {}
    if args.workers > 1:
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_inner, spec, formula, seed=seed, eval_splits=tuple(spec.test_envs)):
                       (formula, seed) for formula, seed in jobs}
            for future in cf.as_completed(futures):
                results[futures[future]] = future.result()
    else:
        for formula, seed in jobs:
            results[(formula, seed)] = run_inner(spec, formula, seed=seed, eval_splits=tuple(spec.test_envs))
    randoms = [random_baseline(spec, seed, args.random_episodes) for seed in args.seeds]
    total = time.perf_counter() - start

    runs = []
    for formula, seed in jobs:
        r = results[(formula, seed)]
        runs.append({"formula": formula, "canonical": r.canonical, "seed": seed, "status": r.status,
                     "score": r.score, "test": r.extra.get("test", {}), "wall_seconds": r.wall_seconds,
                     "env_steps": r.env_steps, "steps_per_second": r.extra.get("steps_per_second", 0.0),
                     "train_success": r.extra.get("train_success"), "curve": r.curve, "error": r.error})
    summary = []
    for formula in args.formulas:
        rows = [x for x in runs if x["formula"] == formula and x["status"] == "ok"]
        scores = [x["score"] for x in rows]
        summary.append({
            "policy": f"trained on `{formula}`", "runs": len(rows),
            "validation_mean": _mean(scores), "validation_std": _std(scores), "validation_per_seed": scores,
            "test_L0_mean": _mean([x["test"].get("L0", float("nan")) for x in rows]),
            "test_L1_mean": _mean([x["test"].get("L1", float("nan")) for x in rows]),
            "wall_seconds_mean": _mean([x["wall_seconds"] for x in rows]),
            "steps_per_second_mean": _mean([x["steps_per_second"] for x in rows]),
            "env_steps": rows[0]["env_steps"] if rows else 0,
        })
    rscores = [x["score"] for x in randoms]
    summary.append({"policy": "random (masked uniform)", "runs": len(randoms), "validation_mean": _mean(rscores),
                    "validation_std": _std(rscores), "validation_per_seed": rscores,
                    "test_L0_mean": float("nan"), "test_L1_mean": float("nan"),
                    "wall_seconds_mean": _mean([x["wall_seconds"] for x in randoms]),
                    "steps_per_second_mean": float("nan"), "env_steps": 0})

    payload = {"preset": args.preset, "spec": spec.to_dict(), "seeds": args.seeds, "formulas": args.formulas,
               "workers": args.workers, "total_wall_seconds": total, "machine": platform.platform(),
               "python": platform.python_version(), "summary": summary, "runs": runs, "random": randoms}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_inner" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str))

    def fmt(v):
        return "–" if v != v else f"{v:.2f}"  # NaN -> dash

    lines = [
        f"# Inner-loop learning benchmark ({args.preset})",
        "",
        f"Validation success rate (task reward; deterministic masked policy; {spec.eval_episodes} episodes) "
        f"over seeds {args.seeds}; budget {spec.agent.total_timesteps} env steps per run "
        f"({spec.agent.algorithm}, {spec.agent.n_envs} env); random = masked uniform policy over the same "
        f"candidates ({args.random_episodes} episodes per seed). {args.workers} runs in parallel on a "
        f"shared 2-core machine; total {total:.0f} s.",
        "",
        "| policy | validation success (mean ± std) | per seed | test L0 | test L1 | wall s / run | train steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        per_seed = ", ".join(f"{s:.2f}" for s in row["validation_per_seed"])
        lines.append(f"| {row['policy']} | {fmt(row['validation_mean'])} ± {fmt(row['validation_std'])} | {per_seed} | "
                     f"{fmt(row['test_L0_mean'])} | {fmt(row['test_L1_mean'])} | {fmt(row['wall_seconds_mean'])} | "
                     f"{fmt(row['steps_per_second_mean'])} |")
    failed = [x for x in runs if x["status"] != "ok"]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed: " + "; ".join(
            f"{x['formula']} seed {x['seed']}: {(x['error'] or '').splitlines()[0]}" for x in failed)]
    table = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
