"""A small-scale Table 1 of DERL (arXiv 2512.13399) on ALFWorld, built on ``derl-gym compare``.

Runs every method (derl, derl-pop, evolution, random, cmaes, outcome, avg) with the same number of inner
trainings per method and search seed (:func:`derl_gym.runtime.evolve.compare`), retrains each method's
best formula from scratch on fresh test seeds (one per search seed, disjoint from the search's inner
seeds) and scores L0, L1 and L2. Every searched formula also scores the test splits (stored in the
result's ``extra``, never seen by the search) so that the rank correlation between the search's
signal (validation) and test-L2 success can be measured over all formulas the searches trained.

Writes ``benchmarks/results/table1.{json,md}`` and plots ``table1_{validation,structure,primitives,
val_vs_l2}.png``: mean ± 95% t-interval over seeds per split, the paper's Table 1 ALFWorld rows, the
formulas found, the search cost (inner trainings, env steps, wall time), Spearman correlations, the
per-iteration structure / primitive shares, and whether the issue's goal is met.

Resumable in chunks: results live in ``--run-dir``'s ``store.sqlite`` (commit it as it grows; trained
agents under ``models/`` are not needed). Stop it at any time (Ctrl-C, ``timeout``) and run the same
command again; finished inner trainings are not redone. ``--methods`` runs a subset (a chunk); the
final table is written from whatever the store holds for the methods asked.

    .venv/bin/python benchmarks/bench_table1.py --quick                 # stand-in inner loop, seconds
    .venv/bin/python benchmarks/bench_table1.py --preset alfworld-l2 --budget 8 --seeds 0,1,2 --workers 1
    # the same searches under another selection score, in their own store, reusing the first one's runs
    .venv/bin/python benchmarks/bench_table1.py ... --selection-score curve-tail \
        --run-dir benchmarks/results/table1_curvetail_run --import-runs-from benchmarks/results/table1_run \
        --out benchmarks/results/table1_curvetail
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derl_gym.runtime.evolve import ALL_METHODS, compare  # noqa: E402
from derl_gym.runtime.report import (  # noqa: E402
    _method_series, spearman, split_scores_by_formula, t_interval, write_report)
from benchmarks._common import add_run_flags, inner_loop, int_list, parse_args  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from derl_gym.runtime.runners import make_runner  # noqa: E402
from derl_gym.runtime.selection import SELECTION_SCORES, curve_tail, selection_score  # noqa: E402
from derl_gym.runtime.spec import STATUS_OK, InnerResult  # noqa: E402
from derl_gym.runtime.store import ResultStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: The paper's Table 1, ALFWorld rows (success %, L0 / L1 / L2).
PAPER = {"outcome": (76.6, 71.1, 29.7), "avg": (88.1, 85.4, 30.5), "derl": (91.0, 89.1, 65.0),
         "derl-pop": (91.8, 88.3, 76.4)}
SPLITS = ("L0", "L1", "L2")
TEST_SEED_OFFSET = 100


def _fmt(mean: float, half: float) -> str:
    if mean != mean:
        return "-"
    return f"{100 * mean:.1f} ± {100 * half:.1f}" if half == half else f"{100 * mean:.1f}"


def searched_runs(store: ResultStore, methods: list[str]) -> list[dict]:
    """Return one dict per stored search run (formula x inner seed) of ``methods`` that finished and has
    test scores: method, formula, seed, validation and test per split."""
    from derl_gym.runtime.report import method_of

    out = []
    for row in store.rows(status="ok"):
        label = row.get("method") or ""
        if label == "final-test" or method_of(label) not in methods:
            continue
        test = (row.get("extra") or {}).get("test")
        if not isinstance(test, dict):
            continue
        tail = curve_tail(row.get("curve") or [])
        out.append({"method": method_of(label), "formula": row["canonical"], "seed": int(row["seed"]),
                    "validation": float(row["score"]), "curve_tail": float("nan") if tail is None else tail,
                    "test": {k: float(v) for k, v in test.items()}})
    return out


def plot_val_vs_l2(runs: list[dict], path: Path) -> Path:
    """Scatter of validation vs test-L2 success over searched runs, coloured by method; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    methods = sorted({r["method"] for r in runs})
    for i, m in enumerate(methods):
        pts = [(r["validation"], r["test"].get("L2", float("nan"))) for r in runs if r["method"] == m]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=f"C{i % 10}", label=m, alpha=0.7)
    ax.set_xlabel("validation success (search signal)")
    ax.set_ylabel("test L2 success (never seen by the search)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stored_selection_score(row: dict, how: str) -> float:
    """Return a stored run's search score under selection ``how`` (its validation score, its learning
    curve's tail, or their mean), as :func:`derl_gym.runtime.selection.selection_score` scores a run.

    Example:
        >>> row = {"score": 0.5, "curve": [[100, 0.1], [200, 0.3]]}
        >>> [stored_selection_score(row, how) for how in ("validation", "curve-tail", "validation+curve-tail")]
        [0.5, 0.3, 0.4]
    """
    run = InnerResult(expression=row.get("expression", ""), canonical=row.get("canonical", ""),
                      score=float(row["score"]), status=row.get("status", STATUS_OK), curve=row.get("curve") or [])
    return selection_score(run, how)


def retrained_selection_scores(store: ResultStore, canonicals: list[str | None], test_seeds: list[int],
                               how: str) -> list[float]:
    """Return the selection score (``how``) of the retraining of ``canonicals[i]`` on ``test_seeds[i]`` (NaN
    where the store has no finished retraining)."""
    found = {(r["canonical"], int(r["seed"])): r for r in store.rows(status="ok") if r.get("method") == "final-test"}
    return [stored_selection_score(found[(c, t)], how) if (c, t) in found else float("nan")
            for c, t in zip(canonicals, test_seeds)]


def winners_curse_lines(payload_rows: dict[str, dict], seeds: list[int], how: str = "validation") -> list[str]:
    """Return markdown lines comparing each method's best search score (the score it was selected by,
    ``how``) with the same score of the same formula retrained on the test seed."""
    name = "validation" if how == "validation" else f"score (`{how}`)"
    lines = ["", "## Selected vs retrained validation (the winner's curse)", "",
             f"The best formula's search {name} (what selected it) against the same score when it is retrained "
             "from scratch on the test seed; per search seed, then the mean drop.", "",
             f"| method | search {name} | retrained {name} | mean drop |", "|---|---|---|---|"]
    for m, row in payload_rows.items():
        found = [row["best_search_validation"].get(str(s)) for s in seeds]
        again = list(row["validation_retrained"] if how == "validation" else row["selection_retrained"])
        pairs = [(a, b) for a, b in zip(found, again) if a is not None and b is not None and a == a and b == b]
        drop = statistics.fmean(a - b for a, b in pairs) if pairs else float("nan")
        lines.append(f"| {m} | " + ", ".join("-" if v is None or v != v else f"{v:.2f}" for v in found) + " | "
                     + (", ".join("-" if v != v else f"{v:.2f}" for v in again) or "-") + f" | {drop:+.2f} |")
    return lines


def headroom_lines(l2_by_formula: list[dict], reference: str = "g1", top: int = 8) -> list[str]:
    """Return markdown lines on the L2 headroom in hindsight: the ``top`` formulas (at least 2 runs each)
    by mean test L2 over :func:`split_scores_by_formula`'s runs, against ``reference``'s pooled runs."""
    ref = next((r for r in l2_by_formula if r["formula"] == reference), None)
    if ref is None:
        return []
    half = ref["ci95_half_width"] if ref["ci95_half_width"] == ref["ci95_half_width"] else 0.0  # NaN: one run
    lo, hi = ref["mean"] - half, ref["mean"] + half
    pooled = [r for r in l2_by_formula if r["runs"] >= 2]
    above = [r for r in pooled if r["formula"] != reference and r["mean"] - r["ci95_half_width"] > hi]
    lines = ["", "## Headroom in hindsight (diagnostic: reads test scores, which no search ever sees)", "",
             "Every stored from-scratch run with a test score (search runs, baselines, retrainings; one per "
             "formula and inner seed; warm-started DERL-pop runs left out), pooled by formula: "
             f"`{reference}` scores L2 {_fmt(ref['mean'], ref['ci95_half_width'])} % over {ref['runs']} runs "
             f"(interval {100 * lo:.1f}-{100 * hi:.1f}). Of {len(pooled)} formulas with at least 2 runs, "
             f"{len(above)} have an L2 interval entirely above it; {len(l2_by_formula)} formulas in all.", "",
             "| formula | runs | test L2 % (mean ± 95% CI) |", "|---|---|---|"]
    shown = pooled[:top] + ([ref] if ref not in pooled[:top] else [])
    lines += [f"| `{r['formula']}` | {r['runs']} | {_fmt(r['mean'], r['ci95_half_width'])} |" for r in shown]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-l2")
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--budget", type=int, default=8, help="inner trainings per method and search seed")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2", help="search seeds (>= 3 for a t-interval worth reading)")
    parser.add_argument("--test-seeds", default=None,
                        help=f"retraining seeds, one per search seed (default: search seed + {TEST_SEED_OFFSET})")
    parser.add_argument("--seeds-per-formula", type=int, default=1, help="inner seeds per searched formula (CRN)")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--validation", default="paper", help="selection split: paper, fresh or unseen-plans")
    parser.add_argument("--selection-score", default="validation", choices=SELECTION_SCORES,
                        help="what the searches learn from and select by (derl_gym.runtime.selection)")
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backend", default="process", choices=("process", "ray", "inline"))
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--run-dir", default=None, help="default benchmarks/results/table1_run")
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/table1)")
    parser.add_argument("--import-runs-from", default=None, metavar="RUN_DIR",
                        help="copy another store's trained runs (not its checkpoints) into --run-dir first, so a "
                             "search under other settings (e.g. --selection-score) reuses them as cache hits")
    add_run_flags(parser, "smoke run: stand-in inner loop, budget 4, group 2 (writes table1_quick.*)")
    args, argv = parse_args(parser, argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = int_list(args.seeds)
    test_seeds = int_list(args.test_seeds) if args.test_seeds else [s + TEST_SEED_OFFSET for s in seeds]
    spec, job_fn = inner_loop(args.quick, args.preset, args.total_timesteps, args.eval_episodes, args.validation)
    if args.quick:
        budget, group = min(args.budget, 4), min(args.group_size, 2)
        run_dir = Path(args.run_dir or "/tmp/derl-gym-table1-quick")
        out = Path(args.out or RESULTS / "table1_quick")
    else:
        budget, group = args.budget, args.group_size
        run_dir = Path(args.run_dir or RESULTS / "table1_run")
        out = Path(args.out or RESULTS / "table1")
    missing = [s for s in SPLITS if s not in spec.test_envs]
    if missing:
        raise SystemExit(f"error: preset {spec.name!r} has no test split(s) {missing}; Table 1 needs L0, L1 and L2 "
                         "(use alfworld-l2 or a preset derived from it)")
    if not args.quick:
        spec.prepare()
    store = ResultStore(run_dir)
    key = {"spec_hash": spec.spec_hash(include_versions=False), "budget": budget, "group_size": group,
           "seeds_per_formula": args.seeds_per_formula, "test_seeds": dict(zip(map(str, seeds), test_seeds))}
    if args.selection_score != "validation":  # the default adds nothing: older stores still resume
        key["selection_score"] = args.selection_score
    previous = store.get_meta("table1_key")
    if previous is not None and previous != key:
        store.close()
        raise SystemExit(f"error: {run_dir} holds another Table 1 run ({previous} vs {key}); use the same arguments "
                         "to resume, or another --run-dir")
    if args.import_runs_from:
        print(f"imported {store.import_evaluations(args.import_runs_from)} runs from {args.import_runs_from}",
              flush=True)
    store.set_meta("table1_key", key)
    store.set_meta("spec", spec.to_dict())
    runner = make_runner(args.backend, workers=args.workers, job_fn=job_fn, retries=1, ray_address=args.ray_address)
    start = time.perf_counter()

    def progress(record) -> None:
        print(f"[{record.method}] iteration {record.iteration}{' (resumed)' if record.resumed else ''}: "
              f"best {record.best_score:.3f} mean {record.mean_score:.3f} ({record.trained} trained, "
              f"{record.wall_seconds:.0f} s) {record.best_expression}", flush=True)

    try:
        result = compare(spec, methods, budget, seeds, runner, store, group_size=group,
                         progress=progress, seeds_per_formula=args.seeds_per_formula, score_test_splits=True,
                         test_seeds=test_seeds, reuse_across_versions=args.reuse_across_versions,
                         selection_score=args.selection_score)
    finally:
        runner.close()
    wall = time.perf_counter() - start

    # ------------------------------------------------------------------ the table
    rows, payload_rows = [], {}
    for m in methods:
        trow = result.test.row(m)
        cells = {s: t_interval(trow.scores.get(s, [])) for s in SPLITS}
        runs = result.runs[m]
        labels = {f"{m}/seed{s}" for s in seeds}
        # what the stored runs cost when they were trained: a resumed sitting's own wall time is near 0
        cost = {"inner_trainings": sum(r.trained for r in runs.values()),
                "env_steps": sum(r.env_steps for r in runs.values()),
                "inner_run_seconds": float(sum(float(r["wall_seconds"] or 0.0) for r in store.rows()
                                               if r.get("method") in labels)),
                "search_wall_seconds_this_sitting": result.wall_seconds[m]}
        found = {str(s): runs[s].best_expression for s in seeds}
        payload_rows[m] = {"test": {s: {"per_seed": trow.scores.get(s, []), "mean": cells[s][0],
                                        "ci95_half_width": cells[s][1]} for s in SPLITS},
                           "validation_retrained": trow.validation, "formulas": found,
                           "best_search_validation": {str(s): runs[s].best_score for s in seeds},
                           "selection_retrained": retrained_selection_scores(
                               store, [runs[s].best_canonical for s in seeds], test_seeds, args.selection_score),
                           "cost": cost,
                           "paper": PAPER.get(m)}
        paper = PAPER.get(m)
        rows.append(f"| {m} | " + " | ".join(_fmt(*cells[s]) for s in SPLITS) + " | "
                    + (" / ".join(f"{v:.1f}" for v in paper) if paper else "-") + " | "
                    + "; ".join(f"`{f}`" if f else "no scored formula" for f in found.values()) + " | "
                    + f"{cost['inner_trainings']} | {cost['env_steps']:,} | {cost['inner_run_seconds']:.0f} |")

    runs_all = searched_runs(store, methods)
    corr = {s: spearman([r["validation"] for r in runs_all], [r["test"].get(s, float("nan")) for r in runs_all])
            for s in SPLITS}
    # per distinct formula (mean over its inner seeds): the correlation a search actually acts on
    by_formula: dict[str, list[dict]] = {}
    for r in runs_all:
        by_formula.setdefault(r["formula"], []).append(r)
    fval = [statistics.fmean(x["validation"] for x in v) for v in by_formula.values()]
    fl2 = [statistics.fmean(x["test"].get("L2", 0.0) for x in v) for v in by_formula.values()]
    corr_formula_l2 = spearman(fval, fl2)
    corr_tail = {s: spearman([r["curve_tail"] for r in runs_all], [r["test"].get(s, float("nan")) for r in runs_all])
                 for s in SPLITS}

    # hindsight: did any formula tried (by any method, on any seed) beat outcome-only on L2?
    l2_by_formula = split_scores_by_formula(store.rows(status="ok"), "L2")
    series = _method_series(store)
    report = write_report(run_dir, store)
    store.close()
    plots = {}
    for plot in report.plots:
        target = out.parent / f"{out.name}_{plot.name}"
        shutil.copyfile(plot, target)
        plots[plot.stem] = target.name
    plots["val_vs_l2"] = plot_val_vs_l2(runs_all, out.parent / f"{out.name}_val_vs_l2.png").name

    def mean_of(m: str, s: str) -> float:
        return payload_rows[m]["test"][s]["mean"] if m in payload_rows else float("nan")

    def ci(m: str, s: str) -> tuple[float, float]:
        c = payload_rows[m]["test"][s]
        return c["mean"] - c["ci95_half_width"], c["mean"] + c["ci95_half_width"]

    goal = {}
    if "derl" in payload_rows and "outcome" in payload_rows:
        goal["derl_L2_at_least_2x_outcome"] = mean_of("derl", "L2") >= 2 * mean_of("outcome", "L2")
        goal["derl_over_outcome_L2_ratio"] = (mean_of("derl", "L2") / mean_of("outcome", "L2")
                                              if mean_of("outcome", "L2") > 0 else None)
        for other in ("avg", "evolution", "random"):
            if other in payload_rows:
                lo, _ = ci("derl", "L2")
                _, hi = ci(other, "L2")
                goal[f"derl_L2_ci_above_{other}"] = bool(lo > hi)
    if "derl" in payload_rows and "derl-pop" in payload_rows:
        goal["derl_pop_L2_at_least_derl"] = mean_of("derl-pop", "L2") >= mean_of("derl", "L2")

    shares_rows = []
    for m, mrows in series.items():
        for r in mrows:
            shares_rows.append({"method": m, "iteration": r["iteration"], **r["shares"],
                                "primitives": r.get("primitives", {}), "n": r["n"]})
    payload = {"preset": spec.name, "quick": args.quick, "spec_hash": spec.spec_hash(), "methods": methods,
               "search_seeds": seeds, "test_seeds": test_seeds, "budget_per_method_and_seed": budget,
               "group_size": group, "iterations": result.iterations, "seeds_per_formula": args.seeds_per_formula,
               "eval_episodes": spec.eval_episodes, "validation": args.validation if not args.quick else "standin",
               "total_timesteps": spec.agent.total_timesteps, "workers": args.workers, "rows": payload_rows,
               "spearman_validation_vs_test_runs": corr, "spearman_validation_vs_L2_formulas": corr_formula_l2,
               "spearman_curve_tail_vs_test_runs": corr_tail, "selection_score": args.selection_score,
               "searched_runs": len(runs_all), "distinct_formulas": len(by_formula), "trajectory": shares_rows,
               "goal": goal, "l2_by_formula": l2_by_formula, "wall_seconds_this_sitting": wall, "compare_total_wall_seconds": result.total_wall_seconds,
               "final_test_wall_seconds": result.test.wall_seconds, "plots": plots,
               "command": "python benchmarks/bench_table1.py " + shlex.join(argv)}
    title = f"# Small-scale Table 1 ({spec.name}{': STAND-IN inner loop, plumbing only' if args.quick else ''})"
    lines = [title, "", f"Command: `{payload['command']}`", "",
             f"{len(methods)} methods x {len(seeds)} search seeds {seeds}; {budget} inner trainings per method and "
             f"seed ({result.iterations} iterations x group {group}"
             + (f" x {args.seeds_per_formula} inner seeds per formula" if args.seeds_per_formula > 1 else "")
             + f"); best formula of search seed k retrained from scratch on test seed {test_seeds} and tested on "
             f"L0/L1/L2 ({spec.eval_episodes} episodes each); {spec.agent.total_timesteps:,} env steps per inner run; "
             f"selection split: {payload['validation']}.", "",
             "Success % on the test splits, mean ± 95% t-interval half width over the test seeds; the paper's "
             "Table 1 ALFWorld row (L0 / L1 / L2) beside ours. Inner trainings, env steps and inner run s = the "
             "method's search runs in the store (cache hits not counted; seconds summed over runs as each was "
             "trained, in whatever sitting, so parallel runs add up).", "",
             "| method | L0 | L1 | L2 | paper L0 / L1 / L2 | formulas found (per search seed) | inner trainings | "
             "env steps | inner run s (sum) |", "|---|---|---|---|---|---|---|---|---|", *rows, "",
             f"Search signal vs test (Spearman over all {len(runs_all)} searched runs, each formula x inner seed, "
             f"test scores recorded but never used by the search): validation vs L0 {corr['L0']:.2f}, vs L1 "
             f"{corr['L1']:.2f}, vs L2 **{corr['L2']:.2f}**; over {len(by_formula)} distinct formulas (mean over their "
             f"runs), validation vs L2 {corr_formula_l2:.2f}. The learning curve's tail (mean training success over "
             f"its last quarter, `--selection-score curve-tail`) vs L0 {corr_tail['L0']:.2f}, vs L1 "
             f"{corr_tail['L1']:.2f}, vs L2 **{corr_tail['L2']:.2f}**. This table's searches selected by "
             f"`{args.selection_score}`.", "",
             "## Goal check", ""]
    lines += [f"- {k}: {v if not isinstance(v, float) else f'{v:.2f}'}" for k, v in goal.items()] or ["- (needs derl and outcome)"]
    lines += winners_curse_lines(payload_rows, seeds, args.selection_score)
    lines += headroom_lines(l2_by_formula)
    lines += ["", "## What the searches proposed (per iteration, pooled over seeds)", "",
              "| method | iteration | additive | multiplicative | single | degenerate | primitive use |",
              "|---|---|---|---|---|---|---|"]
    for r in shares_rows:
        prim = " ".join(f"{k} {v:.2f}" for k, v in r["primitives"].items()) or "-"
        lines.append(f"| {r['method']} | {r['iteration']} | {r['additive']:.2f} | {r['multiplicative']:.2f} | "
                     f"{r['single']:.2f} | {r['degenerate']:.2f} | {prim} |")
    lines += ["", *[f"![{k}]({v})" for k, v in plots.items()], "",
              f"Wall time of this sitting: {wall:.0f} s (compare, all sittings: {result.total_wall_seconds:.0f} s as "
              f"counted by this sitting; final test {result.test.wall_seconds:.0f} s). Run directory: `{run_dir}`."]
    write_results(out, payload, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
