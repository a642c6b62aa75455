"""The meta loop: evolve Meta-Rewards with a meta-optimizer, test the best, compare methods.

:func:`run_evolution` runs one method for a number of iterations::

    for each iteration:
        formulas = optimizer.propose(group_size)
        results = evaluator.evaluate(formulas)          # cache, then train the new ones in parallel
        optimizer.update(formulas, [r.score for r in results])
        store.save_checkpoint(method, iteration, optimizer.state_dict(), ...)

It resumes from the latest checkpoint in the store: finished iterations are skipped (the optimizer
state is reloaded), and the formulas of a partly finished iteration are proposed again (the
optimizer's RNG is part of its state) and answered from the cache. DERL-pop
(``optimizer.warm_start_inner``) starts every inner run of iteration ``i`` from the best inner agent
of iteration ``i - 1``; the trained agents are saved under ``<run_dir>/models``.

:func:`final_test` retrains formulas from scratch on several seeds and scores the preset's test
splits; :func:`compare` runs several methods on the same inner-training budget and tests each
method's best formula.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from derl_gym.runtime.evaluator import Evaluator, ResultCallback
from derl_gym.runtime.spec import InnerLoopSpec, InnerResult
from derl_gym.runtime.store import ResultStore

logger = logging.getLogger(__name__)

#: Methods whose formula is fixed (one training per seed is all they need).
FIXED_METHODS = ("outcome", "avg")
#: Every method ``compare`` knows, in the paper's order.
ALL_METHODS = ("derl", "derl-pop", "evolution", "random", "cmaes", "outcome", "avg")


@dataclass
class IterationRecord:
    """What one meta iteration proposed and scored.

    ``scores``/``statuses``/``cached`` align with ``expressions``; ``best_*`` and ``mean_score`` are
    over this iteration's group; ``resumed`` is True when the record was loaded from a checkpoint.
    """

    method: str
    iteration: int
    expressions: list[str]
    canonicals: list[str]
    scores: list[float]
    statuses: list[str]
    cached: list[bool]
    best_score: float
    mean_score: float
    best_expression: str
    wall_seconds: float = 0.0
    trained: int = 0
    best_model_path: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "IterationRecord":
        """Rebuild a record from a :meth:`ResultStore.latest_checkpoint`-style row."""
        stats = dict(checkpoint.get("stats") or {})
        scores = [float(s) for s in checkpoint.get("scores", [])]
        expressions = list(checkpoint.get("expressions", []))
        statuses = list(checkpoint.get("statuses", []))
        ok = [i < len(statuses) and statuses[i] == "ok" for i in range(len(scores))]
        best = max(range(len(scores)), key=lambda i: (ok[i], scores[i])) if scores else None
        return cls(method=checkpoint["method"], iteration=int(checkpoint["iteration"]), expressions=expressions,
                   canonicals=list(checkpoint.get("canonicals", [])), scores=scores,
                   statuses=list(checkpoint.get("statuses", [])), cached=list(checkpoint.get("cached", [])),
                   best_score=scores[best] if best is not None else 0.0,
                   mean_score=statistics.fmean(scores) if scores else 0.0,
                   best_expression=expressions[best] if best is not None else "",
                   wall_seconds=float(stats.pop("_wall_seconds", 0.0)), trained=int(stats.pop("_trained", 0)),
                   best_model_path=stats.pop("_best_model_path", None), stats=stats, resumed=True)


@dataclass
class EvolutionResult:
    """The outcome of :func:`run_evolution`: per-iteration records and the best formula found
    (highest validation score over all iterations; the earliest one on ties)."""

    method: str
    records: list[IterationRecord]
    best_expression: str | None
    best_canonical: str | None
    best_score: float
    best_model_path: str | None = None
    trained: int = 0
    cache_hits: int = 0
    wall_seconds: float = 0.0
    resumed_iterations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-serialisable dicts."""
        return asdict(self)


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def run_evolution(spec: InnerLoopSpec, optimizer: Any, runner: Any, store: ResultStore, iterations: int,
                  group_size: int, seed: int = 0, *, method: str | None = None,
                  progress: Callable[[IterationRecord], None] | None = None,
                  on_result: ResultCallback | None = None, model_dir: str | Path | None = None) -> EvolutionResult:
    """Run (or resume) ``iterations`` meta iterations of ``optimizer`` with groups of ``group_size``
    formulas; returns an :class:`EvolutionResult`.

    Every inner training uses ``seed``. ``method`` labels checkpoints and store rows (default
    ``optimizer.name``; ``compare`` uses ``"<method>/seed<k>"``). ``progress(record)`` is called
    after every iteration (also for iterations loaded from a checkpoint, with ``resumed=True``);
    ``on_result(result, from_cache)`` for every formula result. ``model_dir`` (default
    ``<store dir>/models/<method>``) receives DERL-pop's inner agents.
    """
    if iterations < 1 or group_size < 1:
        raise ValueError(f"iterations and group_size must be >= 1, got {iterations!r} and {group_size!r}")
    label = method or getattr(optimizer, "name", type(optimizer).__name__)
    warm = bool(getattr(optimizer, "warm_start_inner", False))
    if warm and model_dir is None:
        model_dir = Path(store.path).parent / "models" / _safe_label(label)
    evaluator = Evaluator(spec, runner, store, method=label, model_dir=model_dir if warm else None,
                          on_result=on_result)
    start = time.perf_counter()
    records: list[IterationRecord] = []
    latest = store.latest_checkpoint(label)
    if latest is not None:
        optimizer.load_state_dict(latest["state"])
        records = [IterationRecord.from_checkpoint(c) for c in store.checkpoints(label)]
        logger.info("resuming %s from iteration %d of %d", label, latest["iteration"], iterations)
        for record in records:
            if progress is not None and record.iteration <= iterations:
                progress(record)
    done = records[-1].iteration if records else 0
    for iteration in range(done + 1, iterations + 1):
        t0 = time.perf_counter()
        trained_before = evaluator.trained
        init_model = records[-1].best_model_path if (warm and records) else None
        expressions = list(optimizer.propose(group_size))
        pairs = evaluator.evaluate(expressions, seed=seed, init_model=init_model, iteration=iteration)
        results = [r for r, _ in pairs]
        scores = [float(r.score) if math.isfinite(r.score) else 0.0 for r in results]
        stats = optimizer.update(expressions, scores) or {}
        best = max(range(len(scores)), key=lambda i: (results[i].ok, scores[i]))  # a failed run is never "best"
        best_model = results[best].model_path if warm else None
        if warm and best_model is None and init_model is not None:
            best_model = init_model  # the best run saved nothing: keep warm-starting from the last agent
        record = IterationRecord(method=label, iteration=iteration, expressions=expressions,
                                 canonicals=[r.canonical for r in results], scores=scores,
                                 statuses=[r.status for r in results], cached=[c for _, c in pairs],
                                 best_score=scores[best], mean_score=statistics.fmean(scores),
                                 best_expression=expressions[best], wall_seconds=time.perf_counter() - t0,
                                 trained=evaluator.trained - trained_before, best_model_path=best_model,
                                 stats=_jsonable(stats))
        store.save_checkpoint(label, iteration, optimizer.state_dict(), expressions=expressions,
                              canonicals=record.canonicals, scores=scores, statuses=record.statuses,
                              cached=record.cached,
                              stats={**record.stats, "_wall_seconds": record.wall_seconds,
                                     "_trained": record.trained, "_best_model_path": best_model})
        records.append(record)
        if progress is not None:
            progress(record)
    records = [r for r in records if r.iteration <= iterations]
    best_record, best_index = None, -1
    for record in records:
        for i, score in enumerate(record.scores):
            if record.statuses[i] == "ok" and (best_record is None or score > best_record.scores[best_index]):
                best_record, best_index = record, i
    return EvolutionResult(
        method=label, records=records,
        best_expression=best_record.expressions[best_index] if best_record else None,
        best_canonical=best_record.canonicals[best_index] if best_record else None,
        best_score=best_record.scores[best_index] if best_record else 0.0,
        best_model_path=best_record.best_model_path if best_record and warm else None,
        trained=evaluator.trained + sum(r.trained for r in records if r.resumed),
        cache_hits=evaluator.cache_hits, wall_seconds=time.perf_counter() - start + sum(
            r.wall_seconds for r in records if r.resumed),
        resumed_iterations=sum(1 for r in records if r.resumed))


def _jsonable(value: Any) -> Any:
    """Return ``value`` with numpy scalars/arrays turned into plain Python (for the store)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------ final test

@dataclass
class FinalTestRow:
    """Test scores of one labelled formula: ``scores[split]`` lists one score per seed."""

    label: str
    formula: str
    canonical: str
    scores: dict[str, list[float]]
    validation: list[float]
    statuses: list[str]
    formulas: dict[int, str] = field(default_factory=dict)

    def mean(self, split: str) -> float:
        """Return the mean score over seeds on ``split`` (0 when there is none)."""
        values = self.scores.get(split, [])
        return statistics.fmean(values) if values else 0.0

    def std(self, split: str) -> float:
        """Return the population std over seeds on ``split`` (0 for fewer than two seeds)."""
        values = self.scores.get(split, [])
        return statistics.pstdev(values) if len(values) > 1 else 0.0


@dataclass
class FinalTest:
    """The table written by :func:`final_test`: one row per label, one column per test split."""

    splits: list[str]
    seeds: list[int]
    rows: list[FinalTestRow]
    wall_seconds: float = 0.0

    def row(self, label: str) -> FinalTestRow:
        """Return the row of ``label``; raises ``KeyError`` naming the known labels."""
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"no row {label!r}; known: {[r.label for r in self.rows]}")

    def to_markdown(self, extra_columns: Mapping[str, Mapping[str, str]] | None = None) -> str:
        """Return a markdown table: label, formula, validation, then mean ± std per test split
        (over seeds); ``extra_columns[column][label]`` adds columns."""
        extra_columns = dict(extra_columns or {})
        head = ["method", "formula", "validation"] + [f"test {s}" for s in self.splits] + list(extra_columns)
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            val = (f"{statistics.fmean(row.validation):.3f} ± {statistics.pstdev(row.validation):.3f}"
                   if row.validation else "-")
            formula = f"`{row.formula}`"
            others = sorted({f for f in row.formulas.values() if f != row.formula})
            if others:
                formula += f" (seed {self.seeds[0]}; other seeds: {', '.join(f'`{f}`' for f in others)})"
            cells = [row.label, formula, val]
            cells += [f"{row.mean(s):.3f} ± {row.std(s):.3f}" for s in self.splits]
            cells += [str(extra_columns[c].get(row.label, "")) for c in extra_columns]
            lines.append("| " + " | ".join(cells) + " |")
        seeds = ", ".join(str(s) for s in self.seeds)
        lines.append("")
        lines.append(f"Test success rate, mean ± std over seeds [{seeds}] (each formula retrained from scratch "
                     f"per seed); validation = the inner loop's validation success.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the table as JSON-serialisable dicts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinalTest":
        """Rebuild a table from :meth:`to_dict` output."""
        rows = [FinalTestRow(**{**r, "formulas": {int(k): v for k, v in r.get("formulas", {}).items()}})
                for r in data["rows"]]
        return cls(splits=list(data["splits"]), seeds=list(data["seeds"]), rows=rows,
                   wall_seconds=float(data.get("wall_seconds", 0.0)))


def final_test(spec: InnerLoopSpec, formulas: Mapping[str, str | Mapping[int, str]], runner: Any,
               seeds: Sequence[int] = (0,), store: ResultStore | None = None, *,
               on_result: ResultCallback | None = None) -> FinalTest:
    """Retrain each formula from scratch on every seed and score the spec's test splits; returns a
    :class:`FinalTest` table.

    ``formulas`` maps a label to a formula, or to ``{seed: formula}`` (a method whose best formula
    differs per seed). Jobs run with ``eval_splits = list(spec.test_envs)`` and results are cached in
    ``store`` (a temporary store when None) under a spec hash that includes the test splits. A spec
    without test splits reports the validation score as the single column ``validation``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("final_test needs at least one seed, e.g. seeds=[0]")
    splits = list(spec.test_envs)
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory(prefix="derl-gym-test-")
        store = ResultStore(tmp.name)
    start = time.perf_counter()
    evaluator = Evaluator(spec, runner, store, method="final-test", eval_splits=splits, on_result=on_result)
    per_seed = {seed: {label: (f if isinstance(f, str) else f[seed]) for label, f in formulas.items()}
                for seed in seeds}

    def run(seed: int) -> list[tuple[InnerResult, bool]]:
        return evaluator.evaluate(list(per_seed[seed].values()), seed=seed)

    try:
        with ThreadPoolExecutor(max_workers=len(seeds)) as pool:
            outputs = dict(zip(seeds, pool.map(run, seeds)))
    finally:
        if tmp is not None:
            store.close()
            tmp.cleanup()
    rows = []
    columns = splits or ["validation"]
    for j, label in enumerate(formulas):
        scores: dict[str, list[float]] = {s: [] for s in columns}
        validation, statuses = [], []
        for seed in seeds:
            result = outputs[seed][j][0]
            statuses.append(result.status)
            validation.append(float(result.score))
            test = (result.extra or {}).get("test", {}) if splits else {"validation": result.score}
            for split in columns:
                scores[split].append(float(test.get(split, 0.0)) if result.ok else 0.0)
        first = per_seed[seeds[0]][label]
        rows.append(FinalTestRow(label=label, formula=first, canonical=outputs[seeds[0]][j][0].canonical,
                                 scores=scores, validation=validation, statuses=statuses,
                                 formulas={seed: per_seed[seed][label] for seed in seeds}))
    return FinalTest(splits=columns, seeds=seeds, rows=rows, wall_seconds=time.perf_counter() - start)


def baseline_formulas(num_variables: int) -> dict[str, str]:
    """Return the fixed reference formulas: ``outcome`` (g1) and ``avg`` (mean of all primitives)."""
    from derl_gym.agents.meta.base import avg_formula

    return {"outcome": "g1", "avg": avg_formula(num_variables)}


# ------------------------------------------------------------------------------ compare

@dataclass
class CompareResult:
    """What :func:`compare` measured: per-method evolution results (per seed), the final test table,
    wall seconds per method (search + test) and the markdown report table."""

    methods: list[str]
    seeds: list[int]
    budget: int
    group_size: int
    iterations: int
    runs: dict[str, dict[int, EvolutionResult]]
    test: FinalTest
    wall_seconds: dict[str, float]
    total_wall_seconds: float = 0.0

    def to_markdown(self) -> str:
        """Return the comparison as a markdown table (test success mean ± std over seeds)."""
        trainings = {m: str(sum(r.trained for r in self.runs[m].values())) for m in self.methods}
        walls = {m: f"{self.wall_seconds[m]:.0f}" for m in self.methods}
        best_val = {m: f"{statistics.fmean([r.best_score for r in self.runs[m].values()]):.3f}"
                    for m in self.methods}
        table = self.test.to_markdown({"best val (search)": best_val, "inner trainings": trainings,
                                       "search wall (s)": walls})
        header = (f"Budget: {self.budget} inner trainings per method and seed "
                  f"({self.iterations} iterations x group {self.group_size}); seeds {self.seeds}; "
                  f"total wall time {self.total_wall_seconds:.0f} s.\n\n")
        return header + table

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON-serialisable dicts."""
        return {"methods": self.methods, "seeds": self.seeds, "budget": self.budget, "group_size": self.group_size,
                "iterations": self.iterations, "test": self.test.to_dict(), "wall_seconds": self.wall_seconds,
                "total_wall_seconds": self.total_wall_seconds,
                "runs": {m: {str(s): r.to_dict() for s, r in runs.items()} for m, runs in self.runs.items()}}


def compare(spec: InnerLoopSpec, methods: Sequence[str], budget: int, seeds: Sequence[int], runner: Any,
            store: ResultStore, *, group_size: int = 4, optimizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
            progress: Callable[[IterationRecord], None] | None = None,
            on_result: ResultCallback | None = None, parallel_seeds: bool = True) -> CompareResult:
    """Run every method on ``budget`` inner trainings per seed (``budget // group_size`` iterations
    of ``group_size`` formulas; fixed formulas hit the cache after their first training), then
    retrain each method's best formula per seed and test it; returns a :class:`CompareResult`.

    Resumable like :func:`run_evolution` (labels ``"<method>/seed<k>"`` in ``store``). With
    ``parallel_seeds`` the seeds of one method run side by side in threads (jobs share the runner).
    ``wall_seconds[method]`` is the wall time of that method's search over all its seeds.
    """
    from derl_gym.agents.meta import make_optimizer

    methods = list(methods)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1 inner training, got {budget!r}")
    seeds = [int(s) for s in seeds]
    group = max(1, min(group_size, budget))
    iterations = max(1, budget // group)
    num_variables = len(spec.primitives.build())
    start = time.perf_counter()
    runs: dict[str, dict[int, EvolutionResult]] = {}
    walls: dict[str, float] = {}
    for name in methods:
        t0 = time.perf_counter()
        kwargs = dict((optimizer_kwargs or {}).get(name, {}))
        # built here, one after another: an optimizer's initialisation may seed torch's global RNG
        optimizers = {seed: make_optimizer(name, num_variables, seed=seed, **kwargs) for seed in seeds}

        def run_seed(seed: int, name: str = name, optimizers: dict[int, Any] = optimizers) -> EvolutionResult:
            optimizer = optimizers[seed]
            return run_evolution(spec, optimizer, runner, store, iterations, group, seed=seed,
                                 method=f"{name}/seed{seed}", progress=progress, on_result=on_result)

        # seeds run side by side (their jobs share the runner's workers): a method whose groups are
        # smaller than the worker count (fixed formulas: one training) does not leave workers idle
        with ThreadPoolExecutor(max_workers=len(seeds) if parallel_seeds else 1) as pool:
            runs[name] = dict(zip(seeds, pool.map(run_seed, seeds)))
        walls[name] = time.perf_counter() - t0
    formulas: dict[str, dict[int, str]] = {
        name: {seed: runs[name][seed].best_expression or "g1" for seed in seeds} for name in methods}
    test = final_test(spec, formulas, runner, seeds, store, on_result=on_result)
    result = CompareResult(methods=methods, seeds=seeds, budget=budget, group_size=group, iterations=iterations,
                           runs=runs, test=test, wall_seconds=walls, total_wall_seconds=time.perf_counter() - start)
    store.set_meta("compare", result.to_dict())
    store.set_meta("compare_markdown", result.to_markdown())
    return result
