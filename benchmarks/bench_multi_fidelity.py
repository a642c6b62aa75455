"""Multi-fidelity meta search (asynchronous successive halving) against full-budget search.

Runs the same method(s) twice through :func:`derl_gym.runtime.evolve.compare` over the same search seeds and the
same number of proposed formulas: once at the full inner budget (arm ``full``), once with the
multi-fidelity scheduler (arm ``mf``: runs whose training-success curve is behind the top 1/eta of the
search's runs at a rung stop there; :mod:`derl_gym.runtime.multi_fidelity`). Each arm's best formula per
search seed (full-budget runs only) is retrained from scratch on a test seed (search seed + 100) and scored on
L0 / L1 / L2. Cost is what the search's stored inner runs cost (env steps and wall seconds of every stored run
the arm's searches wrote), so a full arm resumed from an existing store is charged what its runs cost when
they were trained.

Each arm has its own store: ``<run-dir>/full`` and ``<run-dir>/mf`` (a shared store would let cached
full-budget results answer look-ups the scheduler would have stopped). Both are resumable: rerun the same
command after an interruption. ``--full-run-dir`` points the full arm at another store, e.g. a *copy* of a
Table 1 run of the same preset, seeds, budget, group size and ``--eval-episodes`` (its checkpoints
``derl/seed<k>`` are then resumed as finished: nothing is retrained).

``--retrospective STORE`` also reads the full-budget runs of an existing store (read-only, from a temporary
copy) and reports how well the rung metric (training success before the rung) ranks their final validation
and test-L2 scores, the question the scheduler bets on.

    .venv/bin/python benchmarks/bench_multi_fidelity.py --quick          # stand-in inner loop, ~1 min
    .venv/bin/python benchmarks/bench_multi_fidelity.py --preset alfworld-l2-fast --methods derl \\
        --budget 8 --group-size 4 --seeds 0,1,2 --eval-episodes 48 --workers 1

Writes ``benchmarks/results/multi_fidelity.{json,md}`` (``multi_fidelity_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402
from derl_gym.runtime.evolve import compare  # noqa: E402
from derl_gym.runtime.multi_fidelity import MultiFidelity, rung_metric  # noqa: E402
from derl_gym.runtime.report import method_of, spearman, t_interval  # noqa: E402
from derl_gym.runtime.runners import make_runner  # noqa: E402
from derl_gym.runtime.store import ResultStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPLITS = ("L0", "L1", "L2")
TEST_SEED_OFFSET = 100


def _fmt(values: list[float]) -> str:
    mean, half = t_interval(values)
    if mean != mean:
        return "-"
    return f"{mean:.3f} ± {half:.3f}" if half == half else f"{mean:.3f}"


def search_cost(store: ResultStore, labels: set[str]) -> dict[str, float]:
    """Return the cost of the stored inner runs written by the search ``labels`` (``"derl/seed0"`` ...):
    runs, full-budget runs, stopped runs, failed runs, env steps and wall seconds (summed)."""
    rows = [r for r in store.rows() if r.get("method") in labels]
    return {"runs": len(rows), "full": sum(r["status"] == "ok" for r in rows),
            "stopped": sum(r["status"] == "stopped" for r in rows),
            "failed": sum(r["status"] not in ("ok", "stopped") for r in rows),
            "env_steps": int(sum(int(r["env_steps"]) for r in rows)),
            "wall_seconds": float(sum(float(r["wall_seconds"]) for r in rows))}


def retrospective(path: Path, config: MultiFidelity, total_timesteps: int | None) -> dict:
    """Return how well the rung metric of the full-budget runs in the store at ``path`` ranks their final
    validation and test-L2 scores (Spearman), read from a temporary copy of the store's runs."""
    with tempfile.TemporaryDirectory(prefix="derl-gym-mf-retro-") as tmp:
        with ResultStore(tmp) as store:
            store.import_evaluations(path)
            rows = [r for r in store.rows(status="ok") if r.get("method") != "final-test" and r["curve"]]
    if total_timesteps is None and rows:
        total_timesteps = int(statistics.median(int(r["env_steps"]) for r in rows))
    rows = [r for r in rows if total_timesteps and int(r["env_steps"]) >= total_timesteps * 0.99]
    out: dict = {"store": str(path), "runs": len(rows), "total_timesteps": total_timesteps, "rungs": {}}
    for step in config.rung_steps(total_timesteps or 1):
        metric = [rung_metric(r["curve"], step, config.window) for r in rows]
        val = [float(r["score"]) for r in rows]
        l2 = [float((r["extra"].get("test") or {}).get("L2", float("nan"))) for r in rows]
        tail = [rung_metric(r["curve"], int(total_timesteps) + 1, 0.25) for r in rows]
        pairs = [(m, v) for m, v in zip(metric, l2) if v == v]
        out["rungs"][str(step)] = {
            "spearman_metric_vs_validation": spearman(metric, val),
            "spearman_metric_vs_test_L2": spearman([p[0] for p in pairs], [p[1] for p in pairs]),
            "spearman_metric_vs_final_curve": spearman(metric, tail),
            "spearman_validation_vs_test_L2": spearman([v for v, x in zip(val, l2) if x == x], [x for x in l2 if x == x]),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-l2-fast")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods of compare (default derl; --quick: derl,random)")
    parser.add_argument("--budget", type=int, default=None,
                        help="proposed formulas per method and search seed (default 8; --quick: 16)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2", help="search seeds (>= 3)")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backend", default="process", choices=("process", "ray", "inline"))
    parser.add_argument("--run-dir", default=None, help="default benchmarks/results/multi_fidelity_run")
    parser.add_argument("--full-run-dir", default=None, help="store of the full-budget arm (default <run-dir>/full)")
    parser.add_argument("--arms", default="full,mf", help="which arms to run now (a chunk): full, mf or both")
    parser.add_argument("--no-score-test-splits", action="store_true",
                        help="searched formulas score validation only (Table 1 runs score the test splits too; "
                             "keep the default to reuse a Table 1 store)")
    parser.add_argument("--rungs", default="0.3333333333333333", help="rung fractions of the budget, comma-separated")
    parser.add_argument("--eta", type=float, default=3.0)
    parser.add_argument("--min-runs", type=int, default=4)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--margin", type=float, default=0.0)
    parser.add_argument("--feedback", default="censored", choices=("censored", "exclude"))
    parser.add_argument("--reuse-across-versions", action="store_true")
    parser.add_argument("--retrospective", default=None, help="also analyse the full-budget runs of this store")
    parser.add_argument("--quick", action="store_true",
                        help="stand-in inner loop (seconds), methods derl,random, budget 16, group 4")
    parser.add_argument("--out", default=None)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    test_seeds = [s + TEST_SEED_OFFSET for s in seeds]
    config = MultiFidelity(rungs=tuple(float(r) for r in args.rungs.split(",")), eta=args.eta,
                           min_runs=args.min_runs, window=args.window, margin=args.margin, feedback=args.feedback)
    methods = [m.strip() for m in (args.methods or ("derl,random" if args.quick else "derl")).split(",") if m.strip()]
    if args.quick:
        from derl_gym.runtime.standin import standin_inner, standin_spec

        os.environ.setdefault("DERL_GYM_STANDIN_SLEEP", "0.04")  # a run "trains" 40 ms: wall time means something
        spec, job_fn = standin_spec(), standin_inner
        budget = args.budget or 16
        run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="derl-gym-mf-quick-"))
        out = Path(args.out or RESULTS / "multi_fidelity_quick")
    else:
        from derl_gym.runtime.inner import run_inner
        from derl_gym.runtime.presets import get_preset

        spec, job_fn, budget = get_preset(args.preset), run_inner, args.budget or 8
        run_dir = Path(args.run_dir or RESULTS / "multi_fidelity_run")
        out = Path(args.out or RESULTS / "multi_fidelity")
    if args.eval_episodes is not None:
        spec = spec.replace(eval_episodes=args.eval_episodes)
    if not args.quick:
        spec.prepare()
    arms = {"full": (Path(args.full_run_dir) if args.full_run_dir else run_dir / "full", None),
            "mf": (run_dir / "mf", config)}
    wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
    runner = make_runner(args.backend, workers=args.workers, job_fn=job_fn, retries=1)
    results, costs, sitting = {}, {}, {}
    try:
        for arm in ("full", "mf"):
            if arm not in wanted:
                continue
            path, mf = arms[arm]
            t0 = time.perf_counter()
            with ResultStore(path) as store:
                def progress(record, arm=arm) -> None:
                    print(f"[{arm} {record.method}] iteration {record.iteration}{' (resumed)' if record.resumed else ''}"
                          f": {record.statuses} best {record.best_score:.3f} ({record.trained} trained, "
                          f"{record.env_steps} env steps)", flush=True)

                results[arm] = compare(spec, methods, budget, seeds, store=store, runner=runner,
                                       group_size=args.group_size, progress=progress, test_seeds=test_seeds,
                                       score_test_splits=not args.no_score_test_splits, report_to="none",
                                       reuse_across_versions=args.reuse_across_versions, multi_fidelity=mf)
                costs[arm] = {m: search_cost(store, {f"{m}/seed{s}" for s in seeds}) for m in methods}
            sitting[arm] = time.perf_counter() - t0
    finally:
        runner.close()

    rows, payload_rows = [], {}
    for arm, result in results.items():
        for m in methods:
            trow = result.test.row(m)
            runs = result.runs[m]
            best_val = [r.best_score for r in runs.values() if r.best_expression is not None]
            cost = costs[arm][m]
            payload_rows[f"{arm}/{m}"] = {
                "arm": arm, "method": m, "cost": cost,
                "best_validation": {str(s): runs[s].best_score for s in seeds},
                "formulas": {str(s): runs[s].best_expression for s in seeds},
                "test": {sp: {"per_seed": trow.scores.get(sp, []), "mean": t_interval(trow.scores.get(sp, []))[0],
                              "ci95_half_width": t_interval(trow.scores.get(sp, []))[1]} for sp in result.test.splits},
                "validation_retrained": trow.validation}
            rows.append(f"| {arm} | {m} | {cost['runs']} ({cost['full']} full, {cost['stopped']} stopped) | "
                        f"{cost['env_steps']:,} | {cost['wall_seconds']:.0f} | {_fmt(best_val)} | "
                        + " | ".join(_fmt(trow.scores.get(sp, [])) for sp in SPLITS if sp in result.test.splits)
                        + " | " + "; ".join(f"`{f}`" if f else "none" for f in payload_rows[f"{arm}/{m}"]["formulas"].values())
                        + " |")
    ratios = {}
    if "full" in costs and "mf" in costs:
        for m in methods:
            f, g = costs["full"][m], costs["mf"][m]
            ratios[m] = {"env_steps": g["env_steps"] / f["env_steps"] if f["env_steps"] else None,
                         "wall_seconds": g["wall_seconds"] / f["wall_seconds"] if f["wall_seconds"] else None}
    retro = retrospective(Path(args.retrospective), config, None if args.quick else spec.agent.total_timesteps) \
        if args.retrospective else None

    payload = {"preset": spec.name, "quick": args.quick, "methods": methods, "search_seeds": seeds,
               "test_seeds": test_seeds, "budget": budget, "group_size": args.group_size,
               "total_timesteps": spec.agent.total_timesteps, "eval_episodes": spec.eval_episodes,
               "multi_fidelity": config.to_dict(), "rows": payload_rows, "mf_over_full": ratios,
               "sitting_wall_seconds": sitting, "retrospective": retro, "run_dir": str(run_dir),
               "command": "python benchmarks/bench_multi_fidelity.py " + shlex.join(argv)}
    splits_head = " | ".join(f"test {sp}" for sp in SPLITS)
    lines = [f"# Multi-fidelity vs full-budget meta search ({spec.name}"
             f"{': STAND-IN inner loop, plumbing only' if args.quick else ''})", "",
             f"Command: `{payload['command']}`", "",
             f"{', '.join(methods)} x search seeds {seeds}, {budget} proposed formulas per method and seed (group "
             f"{args.group_size}), {spec.agent.total_timesteps:,} env steps per full-budget run; best formula of "
             f"each search (full-budget runs only) retrained on test seeds {test_seeds}. Scheduler: rungs "
             f"{list(config.rungs)} of the budget, eta {config.eta:g}, min_runs {config.min_runs}, window "
             f"{config.window:g}, margin {config.margin:g}, feedback {config.feedback}.", "",
             "Cost = the stored inner runs of the arm's searches (env steps, wall seconds summed over runs); "
             "validation = the searches' best full-budget validation; test = the retrained best formula, "
             "mean ± 95% t-interval over test seeds.", "",
             f"| arm | method | inner runs | env steps | run wall s | best validation | {splits_head} | formulas |",
             "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    for m, r in ratios.items():
        if r["env_steps"] is not None:
            lines.append(f"- {m}: multi-fidelity / full env steps {r['env_steps']:.2f}, run wall time "
                         f"{r['wall_seconds']:.2f}" if r["wall_seconds"] else f"- {m}: env steps {r['env_steps']:.2f}")
    if retro:
        lines += ["", f"## Retrospective: rung metric of {retro['runs']} full-budget runs in `{retro['store']}`", "",
                  "| rung step | Spearman rung metric vs validation | vs test L2 | vs final curve | "
                  "validation vs test L2 |", "|---|---|---|---|---|"]
        for step, v in retro["rungs"].items():
            lines.append(f"| {step} | {v['spearman_metric_vs_validation']:.2f} | {v['spearman_metric_vs_test_L2']:.2f} "
                         f"| {v['spearman_metric_vs_final_curve']:.2f} | {v['spearman_validation_vs_test_L2']:.2f} |")
    lines += ["", f"Wall time of this sitting per arm: "
              + ", ".join(f"{a} {s:.0f} s" for a, s in sitting.items()) + f". Run directory: `{run_dir}`."]
    write_results(out, payload, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
