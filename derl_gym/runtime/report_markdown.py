"""Markdown rendering of runs: the final test table, the comparison table and the run report.

Every markdown text derl-gym writes about a run comes from here; the modules that produce the
figures only hold data:

- :func:`final_test_markdown`: a :class:`~derl_gym.runtime.evolve.FinalTest` (``FinalTest.to_markdown``);
- :func:`compare_markdown`: a :class:`~derl_gym.runtime.evolve.CompareResult` (``CompareResult.to_markdown``);
- :func:`run_report_markdown`: ``report.md`` of a run directory (:func:`~derl_gym.runtime.report.write_report`
  reads the store, draws the plots and writes the file).

This module imports nothing from the modules it renders (they import it), so it only reads the
attributes of the objects it is given.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from derl_gym.runtime.spec import STATUS_OK, STATUS_STOPPED

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from derl_gym.runtime.evolve import CompareResult, FinalTest

#: What tables say for a method (or seed) none of whose inner runs finished (also the status of such a seed).
NO_SCORED_FORMULA = "no scored formula"


def _mean_std(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"


def final_test_markdown(test: "FinalTest", extra_columns: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Return a final test as a markdown table: label, formula, validation, then mean ± std per test
    split (over seeds); ``extra_columns[column][label]`` adds columns. A label without a tested seed
    says ``"no scored formula"``; one whose seeds found different formulas names the others.

    Example:
        >>> from derl_gym.runtime.evolve import FinalTest, FinalTestRow
        >>> row = FinalTestRow("outcome", "g1", "g1", scores={"L0": [0.5, 0.7]}, validation=[0.6, 0.8],
        ...                    statuses=["ok", "ok"], formulas={0: "g1", 1: "g1"})
        >>> print(final_test_markdown(FinalTest(["L0"], [0, 1], [row])).splitlines()[2])
        | outcome | `g1` | 0.700 ± 0.100 | 0.600 ± 0.100 |
    """
    extra_columns = dict(extra_columns or {})
    head = ["method", "formula", "validation"] + [f"test {s}" for s in test.splits] + list(extra_columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in test.rows:
        val = _mean_std(row.validation) if row.validation else "-"
        if row.formula is None:
            cells = [row.label, NO_SCORED_FORMULA, val] + ["-" for _ in test.splits]
        else:
            formula = f"`{row.formula}`"
            tested = [s for s in test.seeds if s not in row.skipped]
            others = sorted({f for f in row.formulas.values() if f is not None and f != row.formula})
            if others:
                formula += f" (seed {tested[0]}; other seeds: {', '.join(f'`{f}`' for f in others)})"
            if row.skipped:
                formula += f" ({NO_SCORED_FORMULA} on seeds {row.skipped})"
            cells = [row.label, formula, val]
            cells += [f"{row.mean(s):.3f} ± {row.std(s):.3f}" for s in test.splits]
        cells += [str(extra_columns[c].get(row.label, "")) for c in extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in test.seeds)
    lines.append("")
    lines.append(f"Test success rate, mean ± std over seeds [{seeds}] (each formula retrained from scratch "
                 f"per seed); validation = the inner loop's validation success.")
    return "\n".join(lines)


def compare_markdown(result: "CompareResult") -> str:
    """Return a comparison as markdown: a header line (budget, iterations, seeds, wall time), then the
    final test table with the search's best validation, inner trainings and search wall time per method.

    Example:
        >>> from derl_gym.runtime.evolve import CompareResult, EvolutionResult, FinalTest, FinalTestRow
        >>> run = EvolutionResult("avg", [], "(g1 + g2)/2", "g1/2 + g2/2", 0.75, trained=1)
        >>> row = FinalTestRow("avg", "(g1 + g2)/2", "g1/2 + g2/2", {"L0": [0.5]}, [0.75], ["ok"])
        >>> result = CompareResult(["avg"], [0], budget=4, group_size=2, iterations=2, runs={"avg": {0: run}},
        ...                        test=FinalTest(["L0"], [0], [row]), wall_seconds={"avg": 3.0})
        >>> text = compare_markdown(result)
        >>> text.splitlines()[0]
        'Budget: 4 inner trainings per method and seed (2 iterations x group 2); seeds [0]; total wall time 0 s.'
        >>> text.splitlines()[4]
        '| avg | `(g1 + g2)/2` | 0.750 ± 0.000 | 0.500 ± 0.000 | 0.750 | 1 | 3 |'
    """
    trainings = {m: str(sum(r.trained for r in result.runs[m].values())) for m in result.methods}
    walls = {m: f"{result.wall_seconds[m]:.0f}" for m in result.methods}
    best_val = {}
    for m in result.methods:
        found = [r.best_score for r in result.runs[m].values() if r.best_expression is not None]
        best_val[m] = f"{statistics.fmean(found):.3f}" if found else NO_SCORED_FORMULA
    table = final_test_markdown(result.test, {"best val (search)": best_val, "inner trainings": trainings,
                                              "search wall (s)": walls})
    per = f" x {result.seeds_per_formula} inner seeds per formula" if result.seeds_per_formula > 1 else ""
    tested = (f"; best formulas retrained on test seeds {result.test_seeds}"
              if result.test_seeds and result.test_seeds != result.seeds else "")
    header = (f"Budget: {result.budget} inner trainings per method and seed "
              f"({result.iterations} iterations x group {result.group_size}{per}); seeds {result.seeds}{tested}; "
              f"total wall time {result.total_wall_seconds:.0f} s.\n\n")
    return header + table


def _iteration_table(method: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the lines of one method's section: validation, counts and formula structure per iteration."""
    runs = max((r["runs"] for r in rows), default=1)
    pooled = f" (best/mean averaged over {runs} seeds, structure over all their formulas)" if runs > 1 else ""
    # multi-fidelity runs: a "stopped" column (runs stopped early at a rung; scored, not failed)
    show_stopped = any(r.get("stopped", 0) for r in rows)
    lines = [f"## {method}", "", f"Validation per iteration{pooled}.", "",
             "| iteration | best val | mean val | trained | cached | failed | " + ("stopped | " if show_stopped else "")
             + "additive | multiplicative | single | degenerate | primitives used (share) | best formula |",
             "|---|---|---|---|---|---|" + ("---|" if show_stopped else "") + "---|---|---|---|---|---|"]
    for r in rows:
        s = r["shares"]
        best = f"`{r['best_expression']}`" if r["best_expression"] is not None else NO_SCORED_FORMULA
        stopped = f"{r.get('stopped', 0)} | " if show_stopped else ""
        lines.append(f"| {r['iteration']} | {r['best']:.3f} | {r['mean']:.3f} | {r['n'] - r['cached']} | "
                     f"{r['cached']} | {r['failed']} | {stopped}{s['additive']:.2f} | {s['multiplicative']:.2f} | "
                     f"{s['single']:.2f} | {s['degenerate']:.2f} | "
                     f"{' '.join(f'{k} {v:.2f}' for k, v in r['primitives'].items()) or '-'} | {best} |")
    lines.append("")
    return lines


def run_report_markdown(run_dir: str | Path, meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                        series: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Return the text of a run directory's ``report.md``.

    ``meta`` is the store's meta table (command, arguments, spec, and the final test / comparison
    markdown when the run wrote them), ``rows`` the stored evaluations (``status``, ``wall_seconds``),
    ``series`` per method one dict per iteration (``iteration``, ``best``, ``mean``, ``n``, ``cached``,
    ``failed``, ``stopped`` (optional; a column when any iteration has one), ``runs``, ``shares``, ``primitives``, ``best_expression``; see
    :func:`derl_gym.runtime.report.write_report`). The plots are linked as ``validation.png``,
    ``structure.png`` and ``primitives.png`` beside the file.

    Example:
        >>> shares = {"additive": 0.5, "multiplicative": 0.0, "single": 0.5, "degenerate": 0.0}
        >>> series = {"derl": [{"iteration": 1, "best": 0.8, "mean": 0.6, "n": 2, "cached": 0, "failed": 0,
        ...                     "runs": 1, "shares": shares, "primitives": {"g1": 1.0}, "best_expression": "g1"}]}
        >>> stored = [{"status": "ok", "wall_seconds": 30.0}] * 2
        >>> lines = run_report_markdown("runs/demo", {}, stored, series).splitlines()
        >>> lines[4], lines[6]
        ('Stored evaluations: 2 (2 ok, 0 failed or timed out); inner training time summed over jobs: 60 s.', '## derl')
        >>> lines[12]
        '| 1 | 0.800 | 0.600 | 2 | 0 | 0 | 0.50 | 0.00 | 0.50 | 0.00 | g1 1.00 | `g1` |'
    """
    lines = ["# derl-gym run report", "", f"Run directory: `{run_dir}`", ""]
    args = meta.get("args")
    if args:
        lines += ["## Command", "", "```", str(meta.get("command", "")), "```", "",
                  "| argument | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sorted(args.items())]
        lines.append("")
    spec = meta.get("spec")
    if spec:
        lines += [f"Preset / spec: **{spec.get('name', '?')}** (spec hash `{meta.get('spec_hash', '?')}`). "
                  f"{spec.get('description', '')}", ""]
    n_ok = sum(r["status"] == STATUS_OK for r in rows)
    n_stopped = sum(r["status"] == STATUS_STOPPED for r in rows)  # multi-fidelity: stopped early, not failed
    stopped = f", {n_stopped} stopped early" if n_stopped else ""
    total_wall = sum(float(r["wall_seconds"]) for r in rows)
    lines += [f"Stored evaluations: {len(rows)} ({n_ok} ok, {len(rows) - n_ok - n_stopped} failed or timed out{stopped}); "
              f"inner training time summed over jobs: {total_wall:.0f} s.", ""]
    for method, method_rows in series.items():
        lines += _iteration_table(method, method_rows)
    if "final_test_markdown" in meta:
        lines += ["## Final test (best formula retrained from scratch)", "", meta["final_test_markdown"], ""]
    if "compare_markdown" in meta:
        lines += ["## Comparison", "", meta["compare_markdown"], ""]
    lines += ["## Plots", "", "![validation](validation.png)", "",
              "Best (solid) and mean (dashed) validation success per meta iteration.", "",
              "![structure](structure.png)", "",
              "Share of formula structures per iteration: additive (weighted sums of primitives), "
              "multiplicative (primitives multiplied or divided by each other), single primitive, "
              "degenerate (constant, invalid or failed run).", "",
              "![primitives](primitives.png)", "",
              "Share of proposed formulas that use each primitive, per iteration.", ""]
    return "\n".join(lines)
