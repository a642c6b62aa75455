"""Learning check of the ``scienceworld-tiny`` preset: outcome-only ``g1`` over seeds against a random policy.

For each seed, one ``run_inner(get_preset("scienceworld-tiny"), "g1", seed=...)`` (one worker); the
random baseline plays uniformly random candidates of the same ``TextActionWrapper`` (same filtered
action space) on the validation and test-L1 envs. Each run takes about 2-3 minutes on the busy
2-core machine, so the default (3 seeds + 150 random episodes per split) takes about 8 minutes.

Usage::

    .venv/bin/python benchmarks/bench_scienceworld_tiny.py [--seeds 0,1,2] [--random-episodes 150]

Writes ``benchmarks/results/bench_scienceworld_tiny.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def random_baseline(episodes: int, seed: int) -> dict[str, float]:
    """Return the random policy's success rate on ``validation`` and ``L1`` (same wrapper as training)."""
    from derl_gym.runtime.presets import get_preset
    from derl_gym.wrappers import TextActionWrapper

    spec = get_preset("scienceworld-tiny")
    out: dict[str, float] = {}
    for label, env_spec in (("validation", spec.validation_env), ("L1", spec.test_envs["L1"])):
        env = TextActionWrapper(env_spec.make(seed=seed), **spec.wrapper_kwargs)
        rng = np.random.default_rng(seed)
        wins = 0
        try:
            for _ in range(episodes):
                env.reset()
                info: dict[str, Any] = {}
                while True:
                    action = int(rng.choice(np.flatnonzero(env.action_masks())))
                    _, _, terminated, truncated, info = env.step(action)
                    if terminated or truncated:
                        break
                wins += bool(info.get("won"))
        finally:
            env.close()
        out[label] = wins / episodes
    return out


def main() -> dict[str, Any]:
    command = "python benchmarks/bench_scienceworld_tiny.py " + " ".join(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--random-episodes", type=int, default=150)
    parser.add_argument("--formula", default="g1")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_scienceworld_tiny.json")
    args = parser.parse_args()

    from derl_gym.runtime.inner import run_inner
    from derl_gym.runtime.presets import get_preset

    runs = []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        t0 = time.perf_counter()
        result = run_inner(get_preset("scienceworld-tiny"), args.formula, seed=seed, eval_splits=["L1"])
        run = {"seed": seed, "ok": result.ok, "validation": result.score,
               "test_L1": (result.extra.get("test") or {}).get("L1"),
               "train_success": result.extra.get("train_success"),
               "train_steps_per_second": result.extra.get("steps_per_second"), "env_steps": result.env_steps,
               "wall_seconds": time.perf_counter() - t0, "error": (result.error or "")[-400:]}
        runs.append(run)
        print(json.dumps(run), flush=True)
    baseline = random_baseline(args.random_episodes, 0) if args.random_episodes else {}
    ok = [r for r in runs if r["ok"]]
    summary = {
        "validation_mean": statistics.mean(r["validation"] for r in ok) if ok else None,
        "test_L1_mean": statistics.mean(r["test_L1"] for r in ok) if ok else None,
        "random_validation": baseline.get("validation"), "random_L1": baseline.get("L1"),
    }
    result = {"benchmark": "scienceworld_tiny_learning", "formula": args.formula, "runs": runs, "summary": summary,
              "random_episodes": args.random_episodes, "command": command,
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "load_average_1min": os.getloadavg()[0]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# scienceworld-tiny learning: `{command}`", "",
             f"Formula `{args.formula}`, one worker, {os.cpu_count()} CPU cores (shared), load average "
             f"{os.getloadavg()[0]:.1f}.", "", "| seed | validation | test L1 | train success | wall s |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['validation']} | {r['test_L1']} | {r['train_success']:.3f} | "
              f"{r['wall_seconds']:.0f} |" for r in ok]
    lines += ["", f"Mean validation {summary['validation_mean']}, mean test L1 {summary['test_L1_mean']}; random "
                  f"policy ({args.random_episodes} episodes): validation {summary['random_validation']}, "
                  f"L1 {summary['random_L1']}."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
