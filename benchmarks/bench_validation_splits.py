"""Which selection split ranks trained agents by their test-L2 success? Paper vs held-out validation.

The paper selects formulas by validation success on 20% of the training games (``--validation paper``).
This script takes every trained agent a store kept (DERL-pop saves its agents; other methods keep only
scores), scores it again on each validation kind of :func:`derl_gym.runtime.presets.with_validation`
(``paper``, ``fresh``: held-out games of the training task types, ``unseen-plans``: the same on unseen
floor plans) and reports the Spearman rank correlation of each with the agent's stored test scores
(L0/L1/L2, recorded when it was trained and never used by a search). No agent is trained: each is read
back with ``set_parameters`` (no pickle) and evaluated, so the comparison is paired over the same agents.
The ``paper`` column re-scores the stored validation (same episodes and seed as training used): it
must reproduce the stored score, which checks that the re-evaluation is the one the search saw.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_validation_splits.py \\
        --run-dir benchmarks/results/table1_run --preset alfworld-l2-fast --eval-episodes 48

Writes ``benchmarks/results/validation_splits.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import parse_args  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPLITS = ("L0", "L1", "L2")


def stored_agents(store, methods: list[str] | None) -> list[dict]:
    """Return the store's finished runs whose agent file still exists and that carry test scores."""
    from derl_gym.runtime.report import method_of

    out = []
    for row in store.rows(status="ok"):
        extra = row.get("extra") or {}
        path = row.get("model_path")
        if not path or not os.path.exists(path) or not isinstance(extra.get("test"), dict):
            continue
        if methods and method_of(row.get("method") or "") not in methods:
            continue
        out.append({"method": row.get("method"), "formula": row["canonical"], "seed": int(row["seed"]),
                    "model_path": path, "stored_validation": float(row["score"]),
                    "warm_started": bool(extra.get("init_model")),
                    "test": {k: float(v) for k, v in extra["test"].items()}})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=str(RESULTS / "table1_run"), help="store directory with models/")
    parser.add_argument("--preset", default="alfworld-l2-fast", help="the preset the store's runs trained on")
    parser.add_argument("--eval-episodes", type=int, default=48, help="episodes per validation kind (as trained)")
    parser.add_argument("--kinds", default="paper,fresh,unseen-plans")
    parser.add_argument("--methods", default="", help="comma-separated method filter (default: all)")
    parser.add_argument("--out", default=str(RESULTS / "validation_splits"))
    args, argv = parse_args(parser, argv)

    from derl_gym.agents.inner.registry import get_trainer
    from derl_gym.runtime.inner import VALIDATION_SEED_OFFSET
    from derl_gym.runtime.presets import get_preset, with_validation
    from derl_gym.runtime.report import spearman
    from derl_gym.runtime.store import ResultStore

    import torch

    torch.set_num_threads(1)
    kinds = [k for k in args.kinds.split(",") if k]
    base = get_preset(args.preset, eval_episodes=args.eval_episodes)
    specs = {k: with_validation(base, k) for k in kinds}
    for spec in specs.values():
        spec.validation_env.make().close()  # generate and cache the games once, outside the timing
    with ResultStore(args.run_dir) as store:
        agents = stored_agents(store, [m for m in args.methods.split(",") if m] or None)
    if len(agents) < 3:
        raise SystemExit(f"error: {args.run_dir} holds {len(agents)} saved agents with test scores; need >= 3")
    trainer = get_trainer(base.agent.algorithm)
    start = time.perf_counter()
    for i, agent_row in enumerate(agents):
        model = trainer.load(base, agent_row["model_path"])
        try:
            agent_row["validation"] = {
                k: trainer.evaluate(model, spec, spec.validation_env, args.eval_episodes,
                                    agent_row["seed"] + VALIDATION_SEED_OFFSET)["score"]
                for k, spec in specs.items()}
        finally:
            trainer.close(model)
        print(f"[{i + 1}/{len(agents)}] {agent_row['method']} seed {agent_row['seed']} {agent_row['formula'][:40]:40s} "
              + " ".join(f"{k} {v:.3f}" for k, v in agent_row["validation"].items())
              + f"  L2 {agent_row['test'].get('L2', float('nan')):.3f}", flush=True)
    wall = time.perf_counter() - start

    corr = {k: {s: spearman([a["validation"][k] for a in agents], [a["test"][s] for a in agents]) for s in SPLITS}
            for k in kinds}
    reproduced = ([abs(a["validation"]["paper"] - a["stored_validation"]) < 1e-9 for a in agents]
                  if "paper" in kinds else [])
    ref = corr.get("paper", {}).get("L2", float("nan"))
    payload = {"preset": args.preset, "run_dir": args.run_dir, "eval_episodes": args.eval_episodes, "kinds": kinds,
               "agents": agents, "spearman": corr, "paper_reproduced": sum(reproduced),
               "warm_started_agents": sum(a["warm_started"] for a in agents), "wall_seconds": wall,
               "command": "python benchmarks/bench_validation_splits.py " + shlex.join(argv)}
    lines = ["# Selection split vs test success (paired over the same trained agents)", "",
             f"Command: `{payload['command']}`", "",
             f"{len(agents)} saved agents of `{args.run_dir}` ({payload['warm_started_agents']} warm-started by "
             f"DERL-pop), each scored on every validation kind with {args.eval_episodes} episodes; test scores are "
             "those stored when the agent was trained (never seen by a search)."
             + (f" The `paper` re-evaluation reproduced the stored validation for {sum(reproduced)} of "
                f"{len(reproduced)} agents." if reproduced else ""), "",
             "| validation kind | mean validation | Spearman vs L0 | vs L1 | vs L2 | L2 correlation minus paper's |",
             "|---|---|---|---|---|---|"]
    for k in kinds:
        mean_val = statistics.fmean(a["validation"][k] for a in agents)
        lines.append(f"| {k} | {mean_val:.3f} | {corr[k]['L0']:.2f} | {corr[k]['L1']:.2f} | **{corr[k]['L2']:.2f}** | "
                     f"{corr[k]['L2'] - ref:+.2f} |")
    lines += ["", "Mean scores of the same agents by how they were trained (DERL-pop's warm-started agents continue "
              "from the previous iteration's best, so they have trained twice as long):", "",
              "| agents | n | " + " | ".join(f"{k} validation" for k in kinds) + " | test L0 | L1 | L2 |",
              "|---|---|" + "---|" * (len(kinds) + 3)]
    for label, warm in (("from scratch", False), ("warm-started", True)):
        group = [a for a in agents if a["warm_started"] == warm]
        if group:
            lines.append(f"| {label} | {len(group)} | "
                         + " | ".join(f"{statistics.fmean(a['validation'][k] for a in group):.3f}" for k in kinds)
                         + " | " + " | ".join(f"{statistics.fmean(a['test'][s] for a in group):.3f}" for s in SPLITS)
                         + " |")
    lines += ["", f"Wall time: {wall:.0f} s ({wall / max(len(agents), 1):.1f} s per agent for {len(kinds)} kinds)."]
    write_results(args.out, payload, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
