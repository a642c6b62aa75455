"""Reports of a run directory: a markdown summary and PNG plots.

:func:`write_report` reads ``<run_dir>/store.sqlite`` and writes

- ``report.md`` (text from :mod:`derl_gym.runtime.report_markdown`): run metadata, per-method
  iteration tables (best / mean validation, best formula), the final test table (``derl-gym
  evolve``) and the comparison table (``derl-gym compare``);
- ``validation.png``: best and mean validation score per iteration for each method;
- ``structure.png``: the share of formula structures per iteration (as in the paper's analysis):
  ``additive`` (a weighted sum of two or more primitives), ``multiplicative`` (primitives multiplied
  or divided by each other), ``single`` (one primitive, possibly scaled or shifted) and ``degenerate``
  (constant, invalid, or a failed inner run);
- ``primitives.png``: per iteration, the share of proposed formulas that use each primitive g1..gK.

Formulas are read with the Meta-Reward parser (:meth:`derl_gym.rewards.MetaReward.infer`: the
variables ``g1..gK`` it names, :attr:`~derl_gym.rewards.MetaReward.degree`); nothing is evaluated.
A stored canonical form outside the language (longer than its 512 characters, say) is read from
the proposed text instead.
"""

from __future__ import annotations

import functools
import logging
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from derl_gym.rewards.expression import InvalidExpression, MetaReward
from derl_gym.runtime.report_markdown import run_report_markdown
from derl_gym.runtime.spec import STATUS_OK, STATUS_STOPPED
from derl_gym.runtime.store import ResultStore

logger = logging.getLogger(__name__)

STRUCTURES = ("additive", "multiplicative", "single", "degenerate")


@functools.lru_cache(maxsize=4096)
def _shape(formula: str) -> tuple[int, frozenset[str]] | None:
    """Return ``(degree, variables)`` of a formula (see :attr:`MetaReward.degree`), or None when it
    does not parse."""
    try:
        reward = MetaReward.infer(formula)
    except InvalidExpression:
        return None
    return reward.degree, frozenset(reward.variables_used)


def classify_formula(formula: str, status: str = "ok", score: float | None = None) -> str:
    """Return the structure of a formula, one of :data:`STRUCTURES`.

    A valid formula with score 0 is still classified by its shape (the inner agent may simply have
    failed to learn); a run stopped early by the multi-fidelity scheduler (``"stopped"``) too.

    Args:
        formula: a Meta-Reward formula (``"g1 + 0.5*g4"``); read with the parser, never evaluated.
        status: the inner run's status; any status but ``"ok"``/``"stopped"`` (a failed or timed-out run)
            makes the formula ``"degenerate"``.
        score: accepted for symmetry with stored rows; not used.

    Returns:
        ``"additive"`` (a sum of two or more primitives), ``"multiplicative"`` (primitives multiplied or
        divided by each other), ``"single"`` (one primitive, possibly scaled or shifted) or
        ``"degenerate"`` (constant, unparsable, or a failed run).

    Example:
        >>> [classify_formula(f) for f in ("g1 + 0.5*g4", "g1*g2", "2*g3 - 1", "0.5", "g1 +")]
        ['additive', 'multiplicative', 'single', 'degenerate', 'degenerate']
        >>> classify_formula("g1 + g2", status="failed"), classify_formula("g1 + g2", status="stopped")
        ('degenerate', 'additive')
    """
    shape = _shape(formula) if status in (STATUS_OK, STATUS_STOPPED) and formula else None
    if shape is None or not shape[1]:
        return "degenerate"
    degree, names = shape
    if degree >= 2:
        return "multiplicative"
    return "additive" if len(names) >= 2 else "single"


def structure_shares(formulas: Sequence[str], statuses: Sequence[str] | None = None) -> dict[str, float]:
    """Return the share of each structure in :data:`STRUCTURES` among ``formulas``.

    Args:
        formulas: the formulas (canonical forms when available).
        statuses: their inner runs' statuses, aligned with ``formulas`` (default: all ``"ok"``).

    Returns:
        ``{structure: share in [0, 1]}`` for every structure of :data:`STRUCTURES` (all 0.0 when empty).

    Example:
        >>> structure_shares(["g1 + g2", "g1*g2", "g1", "g1 + g3"], ["ok", "ok", "ok", "failed"])
        {'additive': 0.25, 'multiplicative': 0.25, 'single': 0.25, 'degenerate': 0.25}
    """
    statuses = list(statuses) if statuses is not None else ["ok"] * len(formulas)
    counts = {s: 0 for s in STRUCTURES}
    for formula, status in zip(formulas, statuses):
        counts[classify_formula(formula, status)] += 1
    total = max(1, len(formulas))
    return {s: counts[s] / total for s in STRUCTURES}


def formula_variables(formula: str) -> frozenset[str]:
    """Return the variable names a formula uses.

    Args:
        formula: a Meta-Reward formula (read with the parser, never evaluated).

    Returns:
        The names (``g1``, ``g2`` ...) as a frozenset; empty when the formula does not parse.

    Example:
        >>> sorted(formula_variables("g3*g1 + 2")), formula_variables("g1 + foo")
        (['g1', 'g3'], frozenset())
    """
    shape = _shape(formula)
    return shape[1] if shape is not None else frozenset()


def primitive_shares(formulas: Sequence[str]) -> dict[str, float]:
    """Return how often each primitive is used among ``formulas``.

    Args:
        formulas: the formulas; one that does not parse uses nothing (but still counts in the total).

    Returns:
        ``{variable name: share in [0, 1] of formulas using it}``, in variable order (``g2`` before ``g10``).

    Example:
        >>> primitive_shares(["g1", "g1 +", "g2/g1", "g10"])
        {'g1': 0.5, 'g2': 0.25, 'g10': 0.25}
    """
    counts: dict[str, int] = {}
    for formula in formulas:
        for name in formula_variables(formula):
            counts[name] = counts.get(name, 0) + 1
    total = max(1, len(formulas))
    key = lambda n: (len(n), n)  # noqa: E731 - g2 before g10
    return {name: counts[name] / total for name in sorted(counts, key=key)}


@dataclass
class Report:
    """Paths written by :func:`write_report`: ``markdown`` (``report.md``) and ``plots`` (the PNG files).

    Example:
        >>> report = Report(markdown=Path("runs/demo/report.md"), plots=[Path("runs/demo/validation.png")])
        >>> report.markdown.name, [p.name for p in report.plots]
        ('report.md', ['validation.png'])
    """

    markdown: Path
    plots: list[Path]


def method_of(label: str) -> str:
    """Return the method of a checkpoint label (``compare`` stores one label per method and seed).

    Args:
        label: a checkpoint label such as ``"derl"`` or ``"derl/seed1"``.

    Returns:
        The label without its ``/seed<k>`` suffix; other labels unchanged.

    Example:
        >>> method_of("derl/seed1"), method_of("random/seed-3"), method_of("outcome")
        ('derl', 'random', 'outcome')
    """
    return re.sub(r"/seed-?\d+$", "", label)


def _readable(canonical: str | None, expression: str) -> str:
    """Return the stored canonical form when the parser reads it (it merges equal formulas, e.g.
    ``g1 - g1 + g2`` is ``g2``), else the proposed text (a canonical form may leave the language:
    over 512 characters after expansion, constants above 1e6, powers written ``**``)."""
    return canonical if canonical and _shape(canonical) is not None else expression


def _method_series(store: ResultStore) -> dict[str, list[dict[str, Any]]]:
    """Return per method (seeds pooled) one row per iteration: best and mean validation (averaged
    over seeds), the best formula (of the best seed), structure shares over all formulas, counts."""
    grouped: dict[str, dict[int, list[Any]]] = {}
    for label in store.methods():
        for cp in store.checkpoints(label):
            grouped.setdefault(method_of(label), {}).setdefault(int(cp["iteration"]), []).append(cp)
    series: dict[str, list[dict[str, Any]]] = {}
    for method, by_iteration in grouped.items():
        rows = []
        for iteration in sorted(by_iteration):
            bests, means, formulas, statuses = [], [], [], []
            best_score, best_expression, n, cached, failed, stopped = -1.0, None, 0, 0, 0, 0
            for cp in by_iteration[iteration]:
                scores = [float(x) for x in cp["scores"]]
                if not scores:
                    continue
                # best / mean over scored formulas only: a failed run's 0.0 is not a score
                ok = [i for i, st in enumerate(cp["statuses"]) if st == "ok" and i < len(scores)]
                if ok:
                    i = max(ok, key=scores.__getitem__)
                    bests.append(scores[i])
                    means.append(statistics.fmean(scores[j] for j in ok))
                    if scores[i] > best_score:
                        best_score, best_expression = scores[i], cp["expressions"][i]
                canon = cp["canonicals"] if len(cp["canonicals"]) == len(cp["expressions"]) else cp["expressions"]
                formulas += [_readable(c, e) for c, e in zip(canon, cp["expressions"])]
                statuses += list(cp["statuses"])
                n += len(scores)
                cached += sum(bool(c) for c in cp["cached"])
                # multi-fidelity: a run stopped early has a (lower-fidelity) score and is not a failure
                stopped += sum(st == STATUS_STOPPED for st in cp["statuses"])
                failed += sum(st not in (STATUS_OK, STATUS_STOPPED) for st in cp["statuses"])
            rows.append({"iteration": iteration, "best": statistics.fmean(bests) if bests else 0.0,
                         "mean": statistics.fmean(means) if means else 0.0, "best_expression": best_expression,
                         "shares": structure_shares(formulas, statuses), "primitives": primitive_shares(formulas),
                         "n": n, "cached": cached,
                         "failed": failed, "stopped": stopped, "runs": len(by_iteration[iteration])})
        series[method] = rows
    return series


def plot_validation(series: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Plot best (solid) and mean (dashed) validation score per iteration, one colour per method.

    Args:
        series: per method one row per iteration with ``iteration``, ``best`` and ``mean`` (as
            :func:`write_report` builds them: averaged over seeds when a method ran with several).
        path: the PNG file to write.

    Returns:
        ``path``, after the figure was saved there.

    Example:
        >>> import tempfile
        >>> series = {"derl": [{"iteration": 1, "best": 0.4, "mean": 0.2}, {"iteration": 2, "best": 0.7, "mean": 0.5}]}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     png = plot_validation(series, Path(tmp) / "validation.png")
        ...     png.name, png.read_bytes()[:4]
        ('validation.png', b'\\x89PNG')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (method, rows) in enumerate(series.items()):
        color = f"C{i % 10}"
        its = [r["iteration"] for r in rows]
        ax.plot(its, [r["best"] for r in rows], "-o", color=color, label=f"{method} best", markersize=3)
        ax.plot(its, [r["mean"] for r in rows], "--", color=color, label=f"{method} mean", alpha=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("meta iteration")
    ax.set_ylabel("validation success")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Validation score of the proposed Meta-Rewards")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_panels(series: dict[str, list[dict[str, Any]]], path: Path,
                 draw: Callable[[Any, list[dict[str, Any]]], None], ylabel: str, ylim: tuple[float, float],
                 legend_columns: int) -> Path:
    """Draw one panel per method (three per row) with ``draw(ax, rows)``, one legend above them all
    (from the first panel), and save the figure to ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    methods = list(series) or ["(no iterations)"]
    cols = min(3, len(methods))
    nrows = (len(methods) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for k, method in enumerate(methods):
        ax = axes[k // cols][k % cols]
        draw(ax, series.get(method, []))
        ax.set_title(method, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(*ylim)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
    for k in range(len(methods), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=legend_columns, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_structure(series: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Plot the stacked shares of formula structures per iteration, one panel per method.

    Args:
        series: per method one row per iteration with ``iteration`` and ``shares`` (a
            :func:`structure_shares` dict).
        path: the PNG file to write.

    Returns:
        ``path``, after the figure was saved there.

    Example:
        >>> import tempfile
        >>> series = {"derl": [{"iteration": 1, "shares": structure_shares(["g1", "g1 + g2"])}]}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     png = plot_structure(series, Path(tmp) / "structure.png")
        ...     png.stat().st_size > 1000
        True
    """
    colors = {"additive": "#4c72b0", "multiplicative": "#dd8452", "single": "#55a868", "degenerate": "#8c8c8c"}

    def draw(ax: Any, rows: list[dict[str, Any]]) -> None:
        its = [r["iteration"] for r in rows]
        bottom = [0.0] * len(rows)
        for structure in STRUCTURES:
            values = [r["shares"][structure] for r in rows]
            ax.bar(its, values, bottom=bottom, color=colors[structure], label=structure, width=0.8)
            bottom = [b + v for b, v in zip(bottom, values)]

    return _plot_panels(series, path, draw, "share of formulas", (0, 1), len(STRUCTURES))


def plot_primitives(series: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Plot, one panel per method, the share of proposed formulas using each primitive per iteration.

    Args:
        series: per method one row per iteration with ``iteration`` and ``primitives`` (a
            :func:`primitive_shares` dict); a primitive missing from a row counts as 0.
        path: the PNG file to write.

    Returns:
        ``path``, after the figure was saved there.

    Example:
        >>> import tempfile
        >>> rows = [{"iteration": 1, "primitives": primitive_shares(["g1", "g1 + g4"])}]
        >>> def png_width(methods, path):   # the pixel width in the PNG header
        ...     return int.from_bytes(plot_primitives(dict.fromkeys(methods, rows), path).read_bytes()[16:20], "big")
        >>> with tempfile.TemporaryDirectory() as tmp:    # one panel per method: two methods, twice as wide
        ...     [png_width(methods, Path(tmp) / "primitives.png") for methods in (["derl"], ["derl", "random"])]
        [462, 924]
    """
    names = sorted({n for rows in series.values() for r in rows for n in r.get("primitives", {})},
                   key=lambda n: (len(n), n))

    def draw(ax: Any, rows: list[dict[str, Any]]) -> None:
        its = [r["iteration"] for r in rows]
        for i, name in enumerate(names):
            ax.plot(its, [r.get("primitives", {}).get(name, 0.0) for r in rows], "-o", markersize=3,
                    color=f"C{i % 10}", label=name)

    return _plot_panels(series, path, draw, "share of formulas using it", (-0.02, 1.02), max(1, len(names)))


def write_report(run_dir: str | Path, store: ResultStore | None = None) -> Report:
    """Write ``report.md``, ``validation.png``, ``structure.png`` and ``primitives.png`` into ``run_dir``.

    Per method (the seeds of a ``compare`` run pooled) and iteration the report shows the best and mean
    validation score over the scored formulas, how many runs were trained, cached, failed (or timed out)
    and, for multi-fidelity runs, stopped early, the formula structures and the primitives used.

    Args:
        run_dir: the run directory of ``derl-gym evolve`` or ``compare``.
        store: an open store of that directory (default: open ``<run_dir>/store.sqlite`` and close it again).

    Returns:
        A :class:`Report` with the paths written.

    Raises:
        FileNotFoundError: when ``store`` is None and ``run_dir`` has no ``store.sqlite``.

    Example:
        >>> import tempfile
        >>> from derl_gym.agents.meta import make_optimizer
        >>> from derl_gym.runtime.evolve import run_evolution
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     with ResultStore(run_dir) as store:
        ...         _ = run_evolution(standin_spec(), make_optimizer("random", 4, seed=0),
        ...                           InlineRunner(job_fn=standin_inner), store, iterations=2, group_size=2,
        ...                           report_to="none")
        ...     report = write_report(run_dir)
        ...     text = report.markdown.read_text()
        ...     "## random" in text, [p.name for p in report.plots]
        (True, ['validation.png', 'structure.png', 'primitives.png'])
        >>> write_report("no/such/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no/such/run has no store.sqlite; pass the --run-dir of an evolve or compare run
    """
    run_dir = Path(run_dir)
    own = store is None
    if own:
        if not (run_dir / "store.sqlite").exists():
            raise FileNotFoundError(f"{run_dir} has no store.sqlite; pass the --run-dir of an evolve or compare run")
        store = ResultStore(run_dir)
    try:
        series = _method_series(store)
        meta = store.meta()
        plots = [plot_validation(series, run_dir / "validation.png"), plot_structure(series, run_dir / "structure.png"),
                 plot_primitives(series, run_dir / "primitives.png")]
        text = run_report_markdown(run_dir, meta, store.rows(), series)
        markdown = run_dir / "report.md"
        markdown.write_text(text, encoding="utf-8")
        return Report(markdown=markdown, plots=plots)
    finally:
        if own:
            store.close()


# ------------------------------------------------------------------------------ statistics
def t_critical_95(df: int) -> float:
    """Return the two-sided 95% Student-t critical value (``scipy.stats.t.ppf(0.975, df)``).

    Args:
        df: degrees of freedom, at least 1 (``n - 1`` for ``n`` values).

    Returns:
        The critical value (12.706 for df 1, tending to 1.96 for large df).

    Raises:
        ValueError: when ``df < 1``.

    Example:
        >>> round(t_critical_95(1), 3), round(t_critical_95(4), 3), round(t_critical_95(10_000), 2)
        (12.706, 2.776, 1.96)
    """
    from scipy import stats

    if df < 1:
        raise ValueError(f"a t interval needs df >= 1 (at least two values), got df={df!r}")
    return float(stats.t.ppf(0.975, df))


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Return the 95% t-interval of the mean of ``values``.

    Args:
        values: the numbers (e.g. one test score per seed).

    Returns:
        ``(mean, half_width)``: the interval is ``mean ± half_width``; the half width is NaN for fewer
        than two values, both are NaN for none.

    Example:
        >>> mean, half = t_interval([0.5, 0.7, 0.6])
        >>> round(mean, 3), round(half, 3)         # 4.303 * 0.1 / sqrt(3)
        (0.6, 0.248)
        >>> t_interval([0.5])
        (0.5, nan)
    """
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t_critical_95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Return Spearman's rank correlation of ``x`` and ``y`` (``scipy.stats.spearmanr``; ties share their mean rank).

    Args:
        x: the first values (e.g. validation scores of formulas).
        y: the second values, aligned with ``x`` (e.g. their test scores).

    Returns:
        The correlation in [-1, 1]; NaN for fewer than three pairs or when one side is constant.

    Raises:
        ValueError: when ``x`` and ``y`` differ in length.

    Example:
        >>> spearman([0.1, 0.4, 0.3, 0.9], [1, 3, 2, 10]), spearman([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
        >>> spearman([1, 2], [1, 2])
        nan
    """
    from scipy import stats

    if len(x) != len(y):
        raise ValueError(f"spearman needs two sequences of one length, got {len(x)} and {len(y)}")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(stats.spearmanr(list(x), list(y)).statistic)


def split_scores_by_formula(rows: Sequence[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Pool every finished run's recorded ``split`` test score by formula (a hindsight diagnostic).

    Runs of any label count (searches, baselines, retrainings), but only from-scratch ones (a run with
    ``extra["init_model"]``, such as DERL-pop's inherited agents, trained longer, so it is left out) and one
    per inner seed (the same formula on the same seed is the same experiment, stored again under another
    version or method):
    the first stored wins. A run without a recorded score on ``split`` (``extra["test"]``, written by
    ``score_test_splits`` and the final test) is skipped. Use it to ask whether the formula space held
    anything better than a reference on a test split; it reads test scores, so it must never feed a search.

    Args:
        rows: store rows (:meth:`ResultStore.rows`): ``canonical``, ``status``, ``extra``.
        split: the test split, e.g. ``"L2"``.

    Returns:
        One dict per formula: ``formula``, ``runs``, ``mean`` and ``ci95_half_width``
        (:func:`t_interval`; NaN for a single run), best mean first.

    Example:
        >>> rows = [{"canonical": f, "status": "ok", "seed": seed, "extra": {"test": {"L2": v}}}
        ...         for f, seed, v in [("g1", 0, 0.1), ("g1", 1, 0.3), ("g1", 1, 0.3), ("g1 + g2", 0, 0.5),
        ...                            ("g2", 0, 0.0)]]
        >>> rows.append({"canonical": "g2", "status": "failed", "seed": 3, "extra": {}})
        >>> rows.append({"canonical": "g2", "status": "ok", "seed": 4, "extra": {"test": {"L2": 1.0},
        ...              "init_model": "models/parent.zip"}})     # warm-started: left out
        >>> [(r["formula"], r["runs"], round(r["mean"], 2)) for r in split_scores_by_formula(rows, "L2")]
        [('g1 + g2', 1, 0.5), ('g1', 2, 0.2), ('g2', 1, 0.0)]
    """
    pooled: dict[str, dict[int, float]] = {}
    for row in rows:
        extra = row.get("extra") or {}
        test = extra.get("test")
        if (row.get("status") != STATUS_OK or not isinstance(test, dict) or split not in test
                or extra.get("init_model")):
            continue
        pooled.setdefault(row["canonical"], {}).setdefault(int(row["seed"]), float(test[split]))
    out = []
    for formula, by_seed in pooled.items():
        values = list(by_seed.values())
        mean, half = t_interval(values)
        out.append({"formula": formula, "runs": len(values), "mean": mean, "ci95_half_width": half})
    return sorted(out, key=lambda r: -r["mean"])


def variance_components(table: Sequence[Sequence[float]]) -> dict[str, float]:
    """Decompose a complete ``table[formula][seed]`` of scores (same seeds for every formula, i.e.
    common random numbers) by two-way ANOVA without replication; returns a dict with

    - ``formula_var``: variance of the true formula means (``(MS_formula - MS_residual) / n_seeds``,
      floored at 0): the signal a search can find;
    - ``seed_var``: variance of a seed's shared effect on every formula (what CRN cancels);
    - ``residual_var``: formula-by-seed noise (training and evaluation noise that CRN cannot cancel);
    - ``within_var``: the plain variance across seeds of one formula, averaged over formulas
      (``seed_var + residual_var`` in expectation: the noise of one score without CRN);
    - ``snr``: ``sqrt(formula_var / within_var)`` (signal std over one run's noise std);
    - ``n_formulas``, ``n_seeds``, ``grand_mean``.

    Args:
        table: ``table[formula][seed]``, every formula scored on the same seeds.

    Returns:
        The dict described above (floats, plus the two counts as ints).

    Raises:
        ValueError: unless there are >= 2 formulas and >= 2 seeds with no missing cell.

    Example:
        >>> parts = variance_components([[0.2, 0.4, 0.3], [0.6, 0.8, 0.7]])   # formula 2 is better on every seed
        >>> round(parts["formula_var"], 3), round(parts["residual_var"], 3), parts["n_formulas"], parts["n_seeds"]
        (0.08, 0.0, 2, 3)
        >>> variance_components([[0.2, 0.4]])
        Traceback (most recent call last):
        ...
        ValueError: variance_components needs a complete table of >= 2 formulas x >= 2 seeds, got [2]; run every formula on the same seeds
    """
    rows = [[float(v) for v in row] for row in table]
    nf = len(rows)
    ns = len(rows[0]) if rows else 0
    if nf < 2 or ns < 2 or any(len(r) != ns for r in rows):
        raise ValueError(f"variance_components needs a complete table of >= 2 formulas x >= 2 seeds, got "
                         f"{[len(r) for r in rows]}; run every formula on the same seeds")
    grand = statistics.fmean(v for r in rows for v in r)
    fmeans = [statistics.fmean(r) for r in rows]
    smeans = [statistics.fmean(rows[f][s] for f in range(nf)) for s in range(ns)]
    ss_f = ns * sum((m - grand) ** 2 for m in fmeans)
    ss_s = nf * sum((m - grand) ** 2 for m in smeans)
    ss_r = sum((rows[f][s] - fmeans[f] - smeans[s] + grand) ** 2 for f in range(nf) for s in range(ns))
    ms_f, ms_s = ss_f / (nf - 1), ss_s / (ns - 1)
    ms_r = ss_r / ((nf - 1) * (ns - 1))
    within = statistics.fmean(statistics.variance(r) for r in rows)
    formula_var = max(0.0, (ms_f - ms_r) / ns)
    seed_var = max(0.0, (ms_s - ms_r) / nf)
    snr = (formula_var / within) ** 0.5 if within > 0 else float("inf")
    return {"formula_var": formula_var, "seed_var": seed_var, "residual_var": ms_r, "within_var": within,
            "snr": snr, "n_formulas": nf, "n_seeds": ns, "grand_mean": grand}
