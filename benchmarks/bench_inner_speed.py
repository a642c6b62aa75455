"""Old versus new inner-run speed on one preset, in one script: wall time, train steps/s, validation.

Every inner run (:func:`derl_gym.runtime.inner.run_inner`, formula ``g1`` by default) runs in a
fresh spawned process, one at a time, with ``DERL_GYM_INNER_FAST=0`` (``old``: every fast path of
:mod:`derl_gym.utils.fastpath` off, i.e. the code as it was) or ``1`` (``new``). Old and new runs are
interleaved seed by seed (old first on even seeds, new first on odd ones) so that load from
other work on the machine hits both alike. ``--new-n-envs N`` / ``--old-n-envs N`` give the new / old runs N envs per
worker (``n_steps`` rescaled so that each PPO update still sees the preset's ``n_steps x n_envs``
steps): with N > 1 a batched policy forward, but a different (not bitwise-equal) training trajectory
than N = 1. ``alfworld-tiny`` defaults to 4 envs; ``--old-n-envs 1`` is the code as it was.

Before timing, every game of the train and validation splits is reset once, so the on-disk SAS
translation cache is warm for both variants (a fresh worker's steady state).

``--rss-runs N`` then runs N new-path inner runs back to back in ONE process (seeds 0..N-1) and
records the process's peak RSS (``resource.getrusage``) after each run and the sizes of the
process-wide caches (:func:`derl_gym.utils.lru.cache_stats`): what a long-lived runner worker holds.

Prints a table with the new/old ratios and writes ``benchmarks/results/inner_speed.{json,md}``.

    .venv/bin/python benchmarks/bench_inner_speed.py                  # 3 seeds x old/new, ~8-12 min
    .venv/bin/python benchmarks/bench_inner_speed.py --seeds 0        # one seed, ~3-4 min
    .venv/bin/python benchmarks/bench_inner_speed.py --seeds 0 1 2 --old-n-envs 1 --rss-runs 5
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _spec(preset: str, total_timesteps: int | None, n_envs: int | None):
    from benchmarks._common import preset_with_n_envs

    overrides = {} if total_timesteps is None else {"total_timesteps": total_timesteps}
    return preset_with_n_envs(preset, n_envs, **overrides)


def one_run(preset: str, formula: str, seed: int, fast: bool, total_timesteps: int | None,
            n_envs: int | None) -> dict[str, Any]:
    """Run one inner run in this (fresh) process with the fast paths on or off; return its figures."""
    os.environ["DERL_GYM_INNER_FAST"] = "1" if fast else "0"
    import torch

    from derl_gym.runtime.inner import run_inner

    torch.set_num_threads(1)
    spec = _spec(preset, total_timesteps, n_envs)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_inner(spec, formula, seed=seed)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"variant": "new" if fast else "old", "seed": seed, "status": result.status, "score": result.score,
            "wall_seconds": wall, "cpu_seconds": cpu, "train_seconds": result.extra.get("train_seconds"),
            "steps_per_second": result.extra.get("steps_per_second"), "env_steps": result.env_steps,
            "train_success": result.extra.get("train_success"), "n_envs": spec.agent.n_envs,
            "peak_rss_mb": _peak_rss_mb(), "curve_tail": result.curve[-3:],
            "error": (result.error or "").splitlines()[0] if result.error else None}


def rss_runs(preset: str, formula: str, runs: int, total_timesteps: int | None, n_envs: int | None) -> dict[str, Any]:
    """Run ``runs`` new-path inner runs in this process; return peak RSS and cache sizes after each."""
    os.environ["DERL_GYM_INNER_FAST"] = "1"
    import torch

    from derl_gym.runtime.inner import run_inner
    from derl_gym.utils.lru import cache_stats

    torch.set_num_threads(1)
    spec = _spec(preset, total_timesteps, n_envs)
    rows = []
    for seed in range(runs):
        start = time.perf_counter()
        result = run_inner(spec, formula, seed=seed)
        rows.append({"seed": seed, "status": result.status, "score": result.score,
                     "wall_seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb(),
                     "caches": {k: v["size"] for k, v in cache_stats().items()}})
    return {"runs": rows, "cache_limits": {k: v["maxsize"] for k, v in cache_stats().items()}}


def warm_translations(preset: str) -> float:
    """Reset every train and validation game once (fills the on-disk SAS cache); returns seconds."""
    spec = _spec(preset, None, None)
    spec.prepare()
    start = time.perf_counter()
    for env_spec in (spec.train_env, spec.validation_env):
        env = env_spec.make()
        try:
            for i in range(len(env.unwrapped.game_files)):
                env.reset(options={"game": i})
        finally:
            env.close()
    return time.perf_counter() - start


def _transition_folder() -> str | None:
    os.environ["DERL_GYM_INNER_FAST"] = "1"
    from derl_gym.envs.alfworld.engine import transition_cache_dir

    folder = transition_cache_dir()
    return str(folder) if folder else None


def _in_fresh_process(fn, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _std(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-tiny")
    parser.add_argument("--formula", default="g1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--new-n-envs", type=int, default=None,
                        help="envs per worker for the new runs (default: the preset's)")
    parser.add_argument("--old-n-envs", type=int, default=None,
                        help="envs per worker for the old runs (default: the preset's); e.g. 1, the code as it was")
    parser.add_argument("--only", choices=("old", "new"), default=None, help="run one variant only")
    parser.add_argument("--rss-runs", type=int, default=0, help="then N new runs in one process (peak RSS)")
    parser.add_argument("--clear-transition-cache", action="store_true",
                        help="delete the on-disk ALFWorld transition cache first (the first new run starts cold)")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    folder = _in_fresh_process(_transition_folder)
    if args.clear_transition_cache and folder and Path(folder).is_dir():
        import shutil

        shutil.rmtree(folder)
    files_before = len(list(Path(folder).glob("*.json.gz"))) if folder and Path(folder).is_dir() else 0
    print(f"on-disk transition cache {folder}: {files_before} game files at start", flush=True)
    warm = _in_fresh_process(warm_translations, args.preset)
    runs = []
    for seed in args.seeds:
        order = [False, True] if seed % 2 == 0 else [True, False]
        for fast in order:
            if args.only and args.only != ("new" if fast else "old"):
                continue
            row = _in_fresh_process(one_run, args.preset, args.formula, seed, fast, args.total_timesteps,
                                    args.new_n_envs if fast else args.old_n_envs)
            print(f"  {row['variant']} seed {seed}: {row['wall_seconds']:.1f} s ({row['cpu_seconds']:.1f} s CPU), "
                  f"{row['steps_per_second'] or 0:.0f} steps/s, validation {row['score']:.2f}, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
            runs.append(row)
    rss = _in_fresh_process(rss_runs, args.preset, args.formula, args.rss_runs, args.total_timesteps,
                            args.new_n_envs) if args.rss_runs else None
    total = time.perf_counter() - start

    summary = {}
    for variant in ("old", "new"):
        rows = [r for r in runs if r["variant"] == variant and r["status"] == "ok"]
        summary[variant] = {
            "runs": len(rows), "n_envs": rows[0]["n_envs"] if rows else None,
            "wall_seconds_mean": _mean([r["wall_seconds"] for r in rows]),
            "cpu_seconds_mean": _mean([r.get("cpu_seconds", float("nan")) for r in rows]),
            "steps_per_second_mean": _mean([r["steps_per_second"] for r in rows]),
            "validation_mean": _mean([r["score"] for r in rows]), "validation_std": _std([r["score"] for r in rows]),
            "validation_per_seed": [r["score"] for r in rows],
            "peak_rss_mb_max": max((r["peak_rss_mb"] for r in rows), default=float("nan")),
        }
    old, new = summary["old"], summary["new"]
    ratio = {"wall_new_over_old": new["wall_seconds_mean"] / old["wall_seconds_mean"] if old["runs"] and new["runs"] else None,
             "speedup_wall": old["wall_seconds_mean"] / new["wall_seconds_mean"] if old["runs"] and new["runs"] else None,
             "speedup_steps_per_second": new["steps_per_second_mean"] / old["steps_per_second_mean"]
             if old["runs"] and new["runs"] else None,
             "speedup_cpu": old["cpu_seconds_mean"] / new["cpu_seconds_mean"] if old["runs"] and new["runs"] else None}
    payload = {"preset": args.preset, "formula": args.formula, "seeds": args.seeds,
               "total_timesteps": args.total_timesteps, "new_n_envs": args.new_n_envs, "old_n_envs": args.old_n_envs,
               "warm_translation_seconds": warm, "transition_cache_dir": folder,
               "transition_files_at_start": files_before, "cleared_transition_cache": args.clear_transition_cache, "total_wall_seconds": total, "summary": summary, "ratio": ratio,
               "runs": runs, "rss": rss, "machine": platform.platform(), "python": platform.python_version(),
               "cpus": os.cpu_count(), "load_average_end": os.getloadavg()}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "inner_speed" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str))

    def f(v: Any, digits: int = 2) -> str:
        return "–" if v is None or v != v else f"{v:.{digits}f}"

    lines = [f"# Inner-run speed, old vs new path ({args.preset}, `{args.formula}`)", "",
             f"Seeds {args.seeds}, one run at a time, each in a fresh process, old and new interleaved; "
             f"budget {args.total_timesteps or 'preset'} env steps. Machine: {os.cpu_count()} cores shared with "
             f"other work (load average at the end {os.getloadavg()[0]:.1f}), so absolute seconds vary; "
             f"the ratio is the figure. The new path's on-disk transition cache held {files_before} game files at "
             f"the start{' (cleared)' if args.clear_transition_cache else ''}; each new run adds the states it "
             f"reached, so later new runs touch the engine less. Total {total:.0f} s.", "",
             "| path | n_envs | wall s / run | CPU s / run | train steps/s | validation (mean ± std) | per seed | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in ("old", "new"):
        row = summary[variant]
        if not row["runs"]:
            continue
        lines.append(f"| {variant} | {row['n_envs']} | {f(row['wall_seconds_mean'], 1)} | {f(row['cpu_seconds_mean'], 1)} | "
                     f"{f(row['steps_per_second_mean'], 0)} | {f(row['validation_mean'])} ± {f(row['validation_std'])} | "
                     f"{', '.join(f(s) for s in row['validation_per_seed'])} | {f(row['peak_rss_mb_max'], 0)} |")
    if ratio["speedup_wall"]:
        lines += ["", f"new/old wall time: **{ratio['wall_new_over_old']:.2f}** "
                      f"({ratio['speedup_wall']:.2f}x faster); process CPU time {ratio['speedup_cpu']:.2f}x less; "
                      f"train steps/s ratio {ratio['speedup_steps_per_second']:.2f}x."]
    if rss:
        lines += ["", f"Peak RSS of one process over {args.rss_runs} back-to-back new-path runs (MB): "
                      + ", ".join(f(r["peak_rss_mb"], 0) for r in rss["runs"]) + "; process-wide cache sizes after the last: "
                      + ", ".join(f"{k} {v}/{rss['cache_limits'][k]}" for k, v in rss["runs"][-1]["caches"].items()) + "."]
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
