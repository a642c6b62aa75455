"""The meta loop: evolve Meta-Rewards with a meta-optimizer, test the best, compare methods.

:func:`run_evolution` runs one method for a number of iterations::

    for each iteration:
        formulas = optimizer.propose(group_size)
        results = evaluator.evaluate(formulas)          # cache, then train the new ones in parallel
        ok = [i for i, r in enumerate(results) if r.ok]  # failed / timed-out runs carry no score
        optimizer.update([formulas[i] for i in ok], [results[i].score for i in ok])  # skipped if none
        store.save_checkpoint(method, iteration, optimizer.state_dict(), ...)

A failed or timed-out inner run says nothing about its formula, so it never enters the update (it is
kept in the store and in the checkpoint as failed, and counted in ``IterationRecord.failed``); an
iteration in which no run finished is still checkpointed, without an update.

It resumes from the latest checkpoint in the store: finished iterations are skipped (the optimizer
state is reloaded), and the formulas of a partly finished iteration are proposed again (the
optimizer's RNG is part of its state) and answered from the cache. Checkpoints carry the spec hash
they were written under; resuming them with another spec raises ``ValueError``. When the code or
library versions changed since the run last ran, a warning names them and results trained under
the old versions are retrained (unless ``reuse_across_versions=True``). DERL-pop
(``optimizer.warm_start_inner``) starts every inner run of iteration ``i`` from the best inner agent
of iteration ``i - 1``; the trained agents are saved under ``<run_dir>/models``.

:func:`final_test` retrains formulas from scratch on several seeds and scores the preset's test
splits; :func:`compare` runs several methods on the same inner-training budget and tests each
method's best formula. Their tables are rendered by :mod:`derl_gym.runtime.report_markdown`.
"""

from __future__ import annotations

import functools
import inspect
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

from derl_gym.agents.meta import ALL_METHODS, FIXED_METHODS  # noqa: F401 - the one list of methods, re-exported
from derl_gym.runtime.evaluator import Evaluator, ResultCallback
from derl_gym.runtime.multi_fidelity import update_scores
from derl_gym.runtime.report_markdown import NO_SCORED_FORMULA, compare_markdown, final_test_markdown
from derl_gym.runtime.selection import check_selection_score
from derl_gym.runtime.spec import InnerLoopSpec, InnerResult
from derl_gym.runtime.store import ResultStore
from derl_gym.runtime.tracking import make_tracker
from derl_gym.runtime.versions import record_versions

logger = logging.getLogger(__name__)



@dataclass
class IterationRecord:
    """What one meta iteration proposed and scored.

    ``scores``/``statuses``/``cached`` align with ``expressions`` (a failed run's score is 0.0 and
    its status says so); ``best_*`` and ``mean_score`` are over this iteration's *scored* formulas
    (status ``"ok"``): ``best_expression`` is None and both scores are 0.0 when none finished;
    ``failed`` counts the runs that failed or timed out (they were left out of the update; runs the
    multi-fidelity scheduler stopped early are not failures); ``resumed`` is True when the record was loaded
    from a checkpoint (:meth:`from_checkpoint`).

    Example:
        >>> checkpoint = {"method": "derl", "iteration": 2, "expressions": ["g1", "g1 + g2", "g9"],
        ...               "scores": [0.4, 0.7, 0.0], "statuses": ["ok", "ok", "failed"],
        ...               "stats": {"_wall_seconds": 12.5, "_trained": 3, "entropy": 1.2}}
        >>> record = IterationRecord.from_checkpoint(checkpoint)
        >>> record.best_expression, record.best_score, round(record.mean_score, 3), record.failed
        ('g1 + g2', 0.7, 0.55, 1)
        >>> record.resumed, record.trained, record.stats      # the private "_" statistics became fields
        (True, 3, {'entropy': 1.2})
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
    best_expression: str | None
    wall_seconds: float = 0.0
    trained: int = 0
    best_model_path: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    failed: int = 0
    env_steps: int = 0

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "IterationRecord":
        """Rebuild a record from a :meth:`ResultStore.latest_checkpoint`-style row."""
        stats = dict(checkpoint.get("stats") or {})
        scores = [float(s) for s in checkpoint.get("scores", [])]
        expressions = list(checkpoint.get("expressions", []))
        statuses = list(checkpoint.get("statuses", []))
        ok = [i for i in range(len(scores)) if i < len(statuses) and statuses[i] == "ok"]
        best = max(ok, key=lambda i: scores[i]) if ok else None
        for key in ("_spec_hash", "_cache_hash", "_seeds_per_formula"):
            stats.pop(key, None)
        return cls(method=checkpoint["method"], iteration=int(checkpoint["iteration"]), expressions=expressions,
                   canonicals=list(checkpoint.get("canonicals", [])), scores=scores,
                   statuses=statuses, cached=list(checkpoint.get("cached", [])),
                   best_score=scores[best] if best is not None else 0.0,
                   mean_score=statistics.fmean(scores[i] for i in ok) if ok else 0.0,
                   best_expression=expressions[best] if best is not None else None,
                   wall_seconds=float(stats.pop("_wall_seconds", 0.0)), trained=int(stats.pop("_trained", 0)),
                   best_model_path=stats.pop("_best_model_path", None), stats=stats, resumed=True,
                   failed=len(scores) - len(ok) - statuses.count("stopped"), env_steps=int(stats.pop("_env_steps", 0) or 0))


@dataclass
class EvolutionResult:
    """The outcome of :func:`run_evolution`: per-iteration ``records`` and the best formula found
    (highest validation score of a finished run over all iterations; the earliest one on ties), with
    ``trained`` inner trainings, ``cache_hits``, ``wall_seconds`` and ``env_steps`` summed over the
    iterations (those of a resumed run included).

    Example:
        >>> result = EvolutionResult("avg", records=[], best_expression="(g1 + g2)/2", best_canonical="g1/2 + g2/2",
        ...                          best_score=0.75, trained=1)
        >>> data = result.to_dict()
        >>> data["best_canonical"], data["trained"], data["records"]
        ('g1/2 + g2/2', 1, [])
    """

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
    env_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-serialisable dicts."""
        return asdict(self)


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _closes_own_tracker(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap :func:`run_evolution` / :func:`compare`: turn their ``report_to`` into a
    :class:`~derl_gym.runtime.tracking.RunTracker` for ``<store dir>`` before the call (``make_tracker``), and
    close a tracker made here however the call ends, so a run that raises midway leaves no writer open
    (a tracker passed in is the caller's to close). Returns the wrapped function."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        report_to = bound.arguments.get("report_to", signature.parameters["report_to"].default)
        tracker, owned = make_tracker(report_to, Path(bound.arguments["store"].path).parent)
        bound.arguments["report_to"] = tracker
        try:
            return fn(*bound.args, **bound.kwargs)
        finally:
            if owned:
                tracker.close()

    return wrapper


@_closes_own_tracker

def run_evolution(spec: InnerLoopSpec, optimizer: Any, runner: Any, store: ResultStore, iterations: int,
                  group_size: int, seed: int = 0, *, method: str | None = None,
                  progress: Callable[[IterationRecord], None] | None = None,
                  on_result: ResultCallback | None = None, model_dir: str | Path | None = None,
                  reuse_across_versions: bool = False, seeds_per_formula: int = 1,
                  score_test_splits: bool = False, report_to: Any = "auto",
                  multi_fidelity: Any = None, selection_score: str = "validation") -> EvolutionResult:
    """Run (or resume) ``iterations`` meta iterations of ``optimizer`` with groups of ``group_size``
    formulas; returns an :class:`EvolutionResult`.

    Every inner training uses ``seed``. ``method`` labels checkpoints and store rows (default
    ``optimizer.name``; ``compare`` uses ``"<method>/seed<k>"``). ``progress(record)`` is called
    after every iteration (also for iterations loaded from a checkpoint, with ``resumed=True``);
    ``on_result(result, from_cache)`` for every formula result. ``model_dir`` (default
    ``<store dir>/models/<method>``) receives DERL-pop's inner agents. Only the formulas whose
    inner run finished (status ``"ok"``) enter ``optimizer.update``.

    ``seeds_per_formula=N`` trains every formula on the same N inner seeds (``seed``, ``seed + 1000``,
    ...: common random numbers, see :class:`~derl_gym.runtime.evaluator.Evaluator`) and the optimizer
    learns from the mean validation score; each formula then costs N inner trainings. With
    ``score_test_splits`` every inner run also scores the spec's test splits (kept in
    ``result.extra["test"]`` for analysis, e.g. the rank correlation of validation with test); the search
    itself only ever sees ``result.score``, the validation score.

    ``multi_fidelity`` (None: off, the default; True or a :class:`~derl_gym.runtime.multi_fidelity.MultiFidelity`)
    lets inner runs whose learning curve is behind stop at a rung (asynchronous successive halving, see
    :mod:`derl_gym.runtime.multi_fidelity`): stopped runs (status ``"stopped"``) never become the best formula
    and enter the update with a censored score (``min(own, lowest full-budget score of the group)``).

    ``report_to`` (``"tensorboard"``, ``"wandb"``, ``"none"``, ``"auto"`` = tensorboard when importable, or a
    :class:`~derl_gym.runtime.tracking.RunTracker`) logs every new iteration's scores, optimizer statistics,
    primitive means and inner learning curves under ``<store dir>/tensorboard/<method>`` (see
    :mod:`derl_gym.runtime.tracking`); ``ImportError`` when the backend asked for is not installed.

    ``selection_score`` is the score the optimizer learns from and the best formula is picked by:
    ``"validation"`` (the paper's, the default), ``"curve-tail"`` (mean training success over the learning
    curve's last quarter) or ``"validation+curve-tail"`` (their mean); see :mod:`derl_gym.runtime.selection`.
    The store keeps validation scores either way; resuming with another choice raises ``ValueError``.

    Raises ``ValueError`` when the store holds checkpoints of ``method`` written under another
    spec (their spec hash is not ``spec.spec_hash(include_versions=False)``) or a checkpoint whose
    state is not in the safe format. The store's ``meta`` records the code and library versions;
    when they changed since the run last ran a warning names them, and results trained under the
    old versions are retrained unless ``reuse_across_versions=True``. A tracker made here (``report_to`` not a
    ``RunTracker``) is closed when the function returns or raises.

    Args:
        spec: the inner loop (a preset, or :func:`~derl_gym.runtime.standin.standin_spec`).
        optimizer: a meta-optimizer (:func:`~derl_gym.agents.meta.make_optimizer`): ``propose``, ``update``,
            ``state_dict``, ``load_state_dict``.
        runner: where inner runs execute (:func:`~derl_gym.runtime.runners.make_runner`).
        store: the result store (cache and checkpoints) of the run directory.
        iterations: meta iterations in all (a resumed run only runs the missing ones).
        group_size: formulas proposed per iteration.
        seed: the inner runs' seed.

    Returns:
        An :class:`EvolutionResult` over iterations ``1..iterations``.

    Raises:
        ValueError: for ``iterations`` or ``group_size`` below 1, or a store whose checkpoints do not fit (see above).

    Example:
        >>> from derl_gym.agents.meta import make_optimizer
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> runner = InlineRunner(job_fn=standin_inner)
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     result = run_evolution(standin_spec(), make_optimizer("random", 4, seed=0), runner, store,
        ...                            iterations=2, group_size=3, report_to="none")
        ...     # the same call with more iterations resumes: iterations 1-2 come from their checkpoints
        ...     more = run_evolution(standin_spec(), make_optimizer("random", 4, seed=0), runner, store,
        ...                          iterations=3, group_size=3, report_to="none")
        >>> [r.iteration for r in result.records], result.trained
        ([1, 2], 6)
        >>> result.best_score == max(s for r in result.records for s in r.scores)
        True
        >>> [r.resumed for r in more.records], more.trained, more.best_score >= result.best_score
        ([True, True, False], 9, True)
    """
    if iterations < 1 or group_size < 1:
        raise ValueError(f"iterations and group_size must be >= 1, got {iterations!r} and {group_size!r}")
    label = method or getattr(optimizer, "name", type(optimizer).__name__)
    warm = bool(getattr(optimizer, "warm_start_inner", False))
    if warm and model_dir is None:
        model_dir = Path(store.path).parent / "models" / _safe_label(label)
    evaluator = Evaluator(spec, runner, store, method=label, model_dir=model_dir if warm else None,
                          on_result=on_result, reuse_across_versions=reuse_across_versions,
                          seeds_per_formula=seeds_per_formula, multi_fidelity=multi_fidelity,
                          eval_splits=list(spec.test_envs) if score_test_splits else (),
                          selection_score=selection_score)
    spec_hash = spec.spec_hash(include_versions=False)
    record_versions(store, spec.agent.algorithm, reuse_across_versions=reuse_across_versions)
    tracker, _ = make_tracker(report_to, Path(store.path).parent)  # a RunTracker: @_closes_own_tracker closes it
    start = time.perf_counter()
    records: list[IterationRecord] = []
    latest = store.latest_checkpoint(label)
    if latest is not None:
        checkpoints = store.checkpoints(label)
        _check_checkpoint_spec(checkpoints, label, spec_hash, store)
        _check_checkpoint_setting(checkpoints, label, store, "seeds_per_formula", int(seeds_per_formula), 1)
        _check_checkpoint_setting(checkpoints, label, store, "selection_score", selection_score, "validation")
        try:
            optimizer.load_state_dict(latest["state"])
        except ValueError as exc:
            raise type(exc)(f"cannot resume {label!r} from its checkpoint of iteration {latest['iteration']} in "
                            f"{store.path}: {exc}") from None
        records = [IterationRecord.from_checkpoint(c) for c in checkpoints]
        logger.info("resuming %s from iteration %d of %d", label, latest["iteration"], iterations)
        for record in records:
            tracker.note_resumed(record)
            if progress is not None and record.iteration <= iterations:
                progress(record)
    done = records[-1].iteration if records else 0
    for iteration in range(done + 1, iterations + 1):
        t0 = time.perf_counter()
        trained_before, steps_before = evaluator.trained, evaluator.env_steps
        init_model = records[-1].best_model_path if (warm and records) else None
        expressions = list(optimizer.propose(group_size))
        pairs = evaluator.evaluate(expressions, seed=seed, init_model=init_model, iteration=iteration)
        results = [r for r, _ in pairs]
        scores = [float(r.score) if math.isfinite(r.score) else 0.0 for r in results]
        ok = [i for i, r in enumerate(results) if r.ok and math.isfinite(r.score)]
        stopped = sum(r.status == "stopped" for r in results)  # multi-fidelity: stopped early, not failed
        failed = len(results) - len(ok) - stopped
        fed = update_scores(results, evaluator.feedback)  # the ok ones, plus censored stopped runs (multi-fidelity)
        if fed:  # a failed / timed-out run says nothing about its formula: only scored ones are learned from
            stats = dict(optimizer.update([expressions[i] for i, _ in fed], [f for _, f in fed]) or {})
        else:
            stats = {"updated": False, "skipped_update": NO_SCORED_FORMULA}
            logger.warning("%s iteration %d: all %d inner runs failed; the optimizer is not updated",
                           label, iteration, len(results))
        stats.update(failed=failed, scored=len(ok), **({"stopped": stopped} if evaluator.scheduler else {}))
        best = max(ok, key=lambda i: scores[i]) if ok else None
        best_model = results[best].model_path if (warm and best is not None) else None
        if warm and best_model is None and init_model is not None:
            best_model = init_model  # the best run saved nothing: keep warm-starting from the last agent
        record = IterationRecord(method=label, iteration=iteration, expressions=expressions,
                                 canonicals=[r.canonical for r in results], scores=scores,
                                 statuses=[r.status for r in results], cached=[c for _, c in pairs],
                                 best_score=scores[best] if best is not None else 0.0,
                                 mean_score=statistics.fmean(scores[i] for i in ok) if ok else 0.0,
                                 best_expression=expressions[best] if best is not None else None,
                                 wall_seconds=time.perf_counter() - t0,
                                 trained=evaluator.trained - trained_before, best_model_path=best_model,
                                 stats=_jsonable(stats), failed=failed,
                                 env_steps=evaluator.env_steps - steps_before)
        store.save_checkpoint(label, iteration, optimizer.state_dict(), expressions=expressions,
                              canonicals=record.canonicals, scores=scores, statuses=record.statuses,
                              cached=record.cached,
                              stats={**record.stats, "_wall_seconds": record.wall_seconds,
                                     "_trained": record.trained, "_best_model_path": best_model,
                                     "_env_steps": record.env_steps,
                                     "_spec_hash": spec_hash, "_cache_hash": spec.spec_hash(),
                                     "_seeds_per_formula": int(seeds_per_formula),
                                     "_selection_score": selection_score})
        records.append(record)
        tracker.log_iteration(record, results)
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
        resumed_iterations=sum(1 for r in records if r.resumed),
        env_steps=sum(r.env_steps for r in records))


def _check_checkpoint_spec(checkpoints: Sequence[Mapping[str, Any]], label: str, spec_hash: str,
                           store: ResultStore) -> None:
    """Raise ``ValueError`` when a checkpoint of ``label`` was written under another spec hash
    (checkpoints from before spec hashes were recorded are accepted)."""
    written = sorted({str((c.get("stats") or {}).get("_spec_hash")) for c in checkpoints
                      if (c.get("stats") or {}).get("_spec_hash")})
    other = [h for h in written if h != spec_hash]
    if other:
        raise ValueError(f"{store.path} holds checkpoints of {label!r} written under spec hash(es) {other}, but this "
                         f"spec's hash is {spec_hash!r} (spec.spec_hash(include_versions=False)); resuming them with "
                         "another spec would mix two experiments. Use a new run directory (or another method label) "
                         "for this spec, or resume with the same spec as before")


def _check_checkpoint_setting(checkpoints: Sequence[Mapping[str, Any]], label: str, store: ResultStore, name: str,
                              value: Any, default: Any) -> None:
    """Raise ``ValueError`` when a checkpoint of ``label`` was written with another value of the scoring
    setting ``name`` (kept in its stats as ``_<name>``; checkpoints without the field were written with
    ``default``): resuming would mix two meta signals in one search."""
    written = sorted({type(default)((c.get("stats") or {}).get(f"_{name}", default)) for c in checkpoints})
    other = [v for v in written if v != value]
    if other:
        raise ValueError(f"{store.path} holds checkpoints of {label!r} scored with {name}={other}, but this run asks "
                         f"for {name}={value!r}; resume with the same value, or use a new run directory (or another "
                         "method label)")


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
    """Test scores of one labelled formula: ``scores[split]`` lists one score per tested seed.

    ``skipped`` lists the seeds that had no formula to test (the method found no scored formula
    there); their status is ``"no scored formula"`` and they have no scores. ``formula`` and
    ``canonical`` are those of the first tested seed (None when no seed was tested); ``formulas``
    maps every seed to its formula.

    Example:
        >>> row = FinalTestRow("outcome", "g1", "g1", scores={"L0": [0.5, 0.7]}, validation=[0.6, 0.8],
        ...                    statuses=["ok", "ok"])
        >>> round(row.mean("L0"), 3), round(row.std("L0"), 3), row.mean("L1")
        (0.6, 0.1, 0.0)
    """

    label: str
    formula: str | None
    canonical: str | None
    scores: dict[str, list[float]]
    validation: list[float]
    statuses: list[str]
    formulas: dict[int, str | None] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

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
    """The table written by :func:`final_test`: one :class:`FinalTestRow` per label, one column per test
    split (``splits``), scores over ``seeds``.

    Example:
        >>> row = FinalTestRow("avg", "(g1 + g2)/2", "g1/2 + g2/2", {"L0": [0.5]}, [0.75], ["ok"])
        >>> table = FinalTest(splits=["L0"], seeds=[0], rows=[row])
        >>> table.row("avg").validation, FinalTest.from_dict(table.to_dict()) == table
        ([0.75], True)
        >>> table.to_markdown().splitlines()[2]
        '| avg | `(g1 + g2)/2` | 0.750 ± 0.000 | 0.500 ± 0.000 |'
        >>> table.row("derl")
        Traceback (most recent call last):
        ...
        KeyError: "no row 'derl'; known: ['avg']"
    """

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
        return final_test_markdown(self, extra_columns)

    def to_dict(self) -> dict[str, Any]:
        """Return the table as JSON-serialisable dicts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinalTest":
        """Rebuild a table from :meth:`to_dict` output."""
        rows = [FinalTestRow(**{**r, "formulas": {int(k): v for k, v in r.get("formulas", {}).items()},
                                "skipped": [int(s) for s in r.get("skipped", [])]})
                for r in data["rows"]]
        return cls(splits=list(data["splits"]), seeds=list(data["seeds"]), rows=rows,
                   wall_seconds=float(data.get("wall_seconds", 0.0)))


def final_test(spec: InnerLoopSpec, formulas: Mapping[str, str | None | Mapping[int, str | None]], runner: Any,
               seeds: Sequence[int] = (0,), store: ResultStore | None = None, *,
               on_result: ResultCallback | None = None, reuse_across_versions: bool = False) -> FinalTest:
    """Retrain each formula from scratch on every seed and score the spec's test splits; returns a
    :class:`FinalTest` table.

    ``formulas`` maps a label to a formula, or to ``{seed: formula}`` (a method whose best formula
    differs per seed). A formula of ``None`` (or a seed missing from the mapping) means the method
    found no scored formula there: that label/seed is skipped and the table says
    ``"no scored formula"``. Jobs run with ``eval_splits = list(spec.test_envs)`` and results are
    cached in ``store`` (a temporary store when None) under a spec hash that includes the test
    splits. A spec without test splits reports the validation score as the single column ``validation``.

    Args:
        spec: the inner loop whose ``test_envs`` are scored.
        formulas: label -> formula, or label -> ``{seed: formula}``.
        runner: where the retrainings execute (the seeds run side by side in threads).
        seeds: the seeds every formula is retrained on.
        store: the result store to cache in (default: a temporary one).
        on_result: called as ``on_result(result, from_cache)`` for every result.
        reuse_across_versions: reuse results trained under other code / library versions.

    Returns:
        A :class:`FinalTest` with one row per label, in the order of ``formulas``.

    Raises:
        ValueError: when ``seeds`` is empty.

    Example:
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> table = final_test(standin_spec(), {"best": "g1 + 0.5*g4", "outcome": "g1", "none found": None},
        ...                    InlineRunner(job_fn=standin_inner), seeds=[0, 1])
        >>> table.splits, table.seeds, table.row("best").statuses
        (['L0', 'L1', 'L2'], [0, 1], ['ok', 'ok'])
        >>> table.row("best").mean("L0") > table.row("outcome").mean("L0")   # the stand-in favours g4
        True
        >>> table.row("none found").statuses, table.row("none found").skipped
        (['no scored formula', 'no scored formula'], [0, 1])
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
    evaluator = Evaluator(spec, runner, store, method="final-test", eval_splits=splits, on_result=on_result,
                          reuse_across_versions=reuse_across_versions)
    per_seed: dict[int, dict[str, str | None]] = {
        seed: {label: (f if (f is None or isinstance(f, str)) else f.get(seed)) for label, f in formulas.items()}
        for seed in seeds}

    def run(seed: int) -> dict[str, InnerResult]:
        labels = [label for label, f in per_seed[seed].items() if f is not None]
        if not labels:
            return {}
        pairs = evaluator.evaluate([per_seed[seed][label] for label in labels], seed=seed)
        return {label: result for label, (result, _) in zip(labels, pairs)}

    try:
        with ThreadPoolExecutor(max_workers=len(seeds)) as pool:
            outputs = dict(zip(seeds, pool.map(run, seeds)))
    finally:
        if tmp is not None:
            store.close()
            tmp.cleanup()
    rows = []
    columns = splits or ["validation"]
    for label in formulas:
        scores: dict[str, list[float]] = {s: [] for s in columns}
        validation, statuses, skipped = [], [], []
        first: InnerResult | None = None
        for seed in seeds:
            result = outputs[seed].get(label)
            if result is None:
                statuses.append(NO_SCORED_FORMULA)
                skipped.append(seed)
                continue
            first = first or result
            statuses.append(result.status)
            validation.append(float(result.score))
            test = (result.extra or {}).get("test", {}) if splits else {"validation": result.score}
            for split in columns:
                scores[split].append(float(test.get(split, 0.0)) if result.ok else 0.0)
        if skipped:
            logger.warning("final test: %s has no scored formula on seeds %s; skipped there", label, skipped)
        first_seed = next((seed for seed in seeds if seed not in skipped), None)
        rows.append(FinalTestRow(label=label, formula=per_seed[first_seed][label] if first_seed is not None else None,
                                 canonical=first.canonical if first is not None else None,
                                 scores=scores, validation=validation, statuses=statuses,
                                 formulas={seed: per_seed[seed][label] for seed in seeds}, skipped=skipped))
    return FinalTest(splits=columns, seeds=seeds, rows=rows, wall_seconds=time.perf_counter() - start)


def baseline_formulas(num_variables: int) -> dict[str, str]:
    """Return the fixed reference formulas the final test of ``derl-gym evolve`` retrains next to the best one.

    Args:
        num_variables: how many primitives ``g1..gK`` the spec has.

    Returns:
        ``{"outcome": "g1", "avg": <the mean of all primitives>}``.

    Example:
        >>> baseline_formulas(4)
        {'outcome': 'g1', 'avg': '(g1 + g2 + g3 + g4)/4'}
    """
    from derl_gym.agents.meta.base import avg_formula

    return {"outcome": "g1", "avg": avg_formula(num_variables)}


# ------------------------------------------------------------------------------ compare

@dataclass
class CompareResult:
    """What :func:`compare` measured: ``runs[method][seed]`` (an :class:`EvolutionResult`), the final
    ``test`` table (one row per method), ``wall_seconds[method]`` (its search over all seeds) and the
    settings (``budget``, ``group_size``, ``iterations``, ``seeds``, ``test_seeds``, ``seeds_per_formula``).

    Example:
        >>> run = EvolutionResult("outcome", [], "g1", "g1", 0.7, trained=1)
        >>> row = FinalTestRow("outcome", "g1", "g1", {"L0": [0.6]}, [0.7], ["ok"])
        >>> result = CompareResult(["outcome"], [0], budget=2, group_size=2, iterations=1, runs={"outcome": {0: run}},
        ...                        test=FinalTest(["L0"], [0], [row]), wall_seconds={"outcome": 1.0})
        >>> result.to_dict()["runs"]["outcome"]["0"]["best_expression"], result.to_markdown().splitlines()[0][:22]
        ('g1', 'Budget: 2 inner traini')
    """

    methods: list[str]
    seeds: list[int]
    budget: int
    group_size: int
    iterations: int
    runs: dict[str, dict[int, EvolutionResult]]
    test: FinalTest
    wall_seconds: dict[str, float]
    total_wall_seconds: float = 0.0
    seeds_per_formula: int = 1
    test_seeds: list[int] = field(default_factory=list)

    def to_markdown(self) -> str:
        """Return the comparison as a markdown table (test success mean ± std over seeds)."""
        return compare_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON-serialisable dicts."""
        return {"methods": self.methods, "seeds": self.seeds, "budget": self.budget, "group_size": self.group_size,
                "iterations": self.iterations, "seeds_per_formula": self.seeds_per_formula,
                "test_seeds": self.test_seeds, "test": self.test.to_dict(), "wall_seconds": self.wall_seconds,
                "total_wall_seconds": self.total_wall_seconds,
                "runs": {m: {str(s): r.to_dict() for s, r in runs.items()} for m, runs in self.runs.items()}}


@_closes_own_tracker
def compare(spec: InnerLoopSpec, methods: Sequence[str], budget: int, seeds: Sequence[int], runner: Any,
            store: ResultStore, *, group_size: int = 4, optimizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
            progress: Callable[[IterationRecord], None] | None = None,
            on_result: ResultCallback | None = None, parallel_seeds: bool = True,
            reuse_across_versions: bool = False, seeds_per_formula: int = 1, score_test_splits: bool = False,
            test_seeds: Sequence[int] | None = None, report_to: Any = "auto", multi_fidelity: Any = None,
            selection_score: str = "validation") -> CompareResult:
    """Run every method on ``budget`` inner trainings per seed (``budget // group_size`` iterations
    of ``group_size`` formulas; fixed formulas hit the cache after their first training), then
    retrain each method's best formula per seed and test it; returns a :class:`CompareResult`.

    Resumable like :func:`run_evolution` (labels ``"<method>/seed<k>"`` in ``store``). With
    ``parallel_seeds`` the seeds of one method run side by side in threads (jobs share the runner).
    ``wall_seconds[method]`` is the wall time of that method's search over all its seeds. A method
    (seed) that found no scored formula is not tested; the table says ``"no scored formula"``.
    ``reuse_across_versions`` is passed to :func:`run_evolution` and :func:`final_test`.

    ``seeds_per_formula=N`` scores every searched formula by its mean over N inner seeds (common random
    numbers, see :func:`run_evolution`); the budget still counts inner trainings, so a method runs
    ``budget // (group_size * N)`` iterations. ``score_test_splits`` also scores the test splits of every
    searched formula (for analysis only, never seen by the search). ``test_seeds`` (default ``seeds``, one
    per search seed, in order) are the seeds the best formula of search seed ``seeds[k]`` is retrained on:
    seeds disjoint from the search's inner seeds avoid re-testing the very run the search selected.
    ``multi_fidelity`` is passed to :func:`run_evolution` (the final test always trains the full budget), and so
    is ``selection_score`` (the final test's table always reports validation and test success).
    ``report_to`` is :func:`run_evolution`'s (one tracker for all methods: TensorBoard runs ``<method>/seed<k>``
    under ``<store dir>/tensorboard``, plus the comparison table as text under ``compare``; a tracker made here
    is closed when the function returns or raises). The result is also stored in ``store``'s meta
    (``compare``, ``compare_markdown``).

    Args:
        spec: the inner loop.
        methods: method names of :data:`ALL_METHODS`.
        budget: inner trainings per method and seed.
        seeds: the search seeds (one run of every method per seed).
        runner: where inner runs execute.
        store: the result store (cache, checkpoints, meta) of the run directory.
        group_size: formulas per iteration (at most ``budget``).
        optimizer_kwargs: per method, keyword arguments of :func:`~derl_gym.agents.meta.make_optimizer`.

    Returns:
        A :class:`CompareResult`.

    Raises:
        ValueError: for an unknown method, ``budget < 1``, ``seeds_per_formula < 1``, ``test_seeds`` of
            another length than ``seeds`` or an unknown ``selection_score``.

    Example:
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     result = compare(standin_spec(), ["random", "outcome"], budget=4, seeds=[0, 1],
        ...                      runner=InlineRunner(job_fn=standin_inner), store=store, group_size=2,
        ...                      report_to="none")
        ...     stored = store.get_meta("compare_markdown") == result.to_markdown()
        >>> result.iterations, sorted(result.runs["random"]), stored
        (2, [0, 1], True)
        >>> result.runs["outcome"][0].best_expression, result.runs["outcome"][0].trained   # trained once, then cached
        ('g1', 1)
        >>> [row.label for row in result.test.rows], result.test.row("outcome").statuses
        (['random', 'outcome'], ['ok', 'ok'])
    """
    from derl_gym.agents.meta import make_optimizer

    methods = list(methods)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1 inner training, got {budget!r}")
    check_selection_score(selection_score)
    seeds = [int(s) for s in seeds]
    test_seeds = seeds if test_seeds is None else [int(s) for s in test_seeds]
    if len(test_seeds) != len(seeds):
        raise ValueError(f"test_seeds {test_seeds} must give one test seed per search seed {seeds}")
    if int(seeds_per_formula) < 1:
        raise ValueError(f"seeds_per_formula must be >= 1, got {seeds_per_formula!r}")
    group = max(1, min(group_size, budget))
    iterations = max(1, budget // (group * int(seeds_per_formula)))
    num_variables = len(spec.primitives.build())
    start = time.perf_counter()
    # once here, before the seeds' threads (each run_evolution then finds the versions recorded)
    record_versions(store, spec.agent.algorithm, reuse_across_versions=reuse_across_versions)
    tracker, _ = make_tracker(report_to, Path(store.path).parent)  # a RunTracker: @_closes_own_tracker closes it
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
                                 method=f"{name}/seed{seed}", progress=progress, on_result=on_result,
                                 reuse_across_versions=reuse_across_versions, seeds_per_formula=seeds_per_formula,
                                 score_test_splits=score_test_splits, report_to=tracker,
                                 multi_fidelity=multi_fidelity, selection_score=selection_score)

        # seeds run side by side (their jobs share the runner's workers): a method whose groups are
        # smaller than the worker count (fixed formulas: one training) does not leave workers idle
        with ThreadPoolExecutor(max_workers=len(seeds) if parallel_seeds else 1) as pool:
            runs[name] = dict(zip(seeds, pool.map(run_seed, seeds)))
        walls[name] = time.perf_counter() - t0
    # a method/seed without a scored formula is not tested (None): no stand-in formula is made up for it
    formulas: dict[str, dict[int, str | None]] = {
        name: {t: runs[name][seed].best_expression for seed, t in zip(seeds, test_seeds)} for name in methods}
    test = final_test(spec, formulas, runner, test_seeds, store, on_result=on_result,
                      reuse_across_versions=reuse_across_versions)
    result = CompareResult(methods=methods, seeds=seeds, budget=budget, group_size=group, iterations=iterations,
                           runs=runs, test=test, wall_seconds=walls, total_wall_seconds=time.perf_counter() - start,
                           seeds_per_formula=int(seeds_per_formula), test_seeds=test_seeds)
    store.set_meta("compare", result.to_dict())
    store.set_meta("compare_markdown", result.to_markdown())
    tracker.log_text("compare", "results", result.to_markdown(), 0)
    return result
