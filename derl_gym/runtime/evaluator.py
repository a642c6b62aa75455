"""Evaluator: formulas in, inner-loop results out, through the store's cache and a runner.

For a batch of formula texts :meth:`Evaluator.evaluate`:

1. parses each with :class:`~derl_gym.rewards.expression.MetaReward` over the spec's primitives;
   an invalid formula gets an immediate failed result (score 0, no training);
2. canonicalises, so that algebraically equal formulas share one key;
3. looks each canonical form up in the store (key ``(canonical, spec hash, seed)``; the spec hash
   covers the code and library versions, and also ``init_model`` and test splits when they are
   used; with ``reuse_across_versions=True`` a result stored under other versions of the same spec
   answers too), trains each remaining canonical form once (duplicates inside the batch wait for
   the same job);
4. stores every result as soon as its job finishes (a kill mid-batch keeps the finished ones);
5. returns ``(result, from_cache)`` per input formula, in input order.

Failure policy: stored failures are retried by a later run (see :mod:`derl_gym.runtime.store`),
but within one Evaluator a formula that already failed is not trained again (its failure is reused).

Several inner seeds per formula (``seeds_per_formula=N``): one inner run's validation score moves by
about ±0.15 between seeds for the same formula on ALFWorld (benchmarks/results/meta_noise.md), so a
search that ranks single runs ranks seed noise. With ``N > 1`` every formula of a call is trained on
the same N inner seeds (common random numbers: :func:`inner_seeds` ``(seed, N)``, the first being
``seed`` itself, so ``N = 1`` results are reused) and scored by the mean over the seeds whose run
finished. Each seed's result is stored (and cached) as its own row; the returned result aggregates
them (``extra["seed_scores"]``, ``extra["seeds"]``, ``extra["score_std"]``, test splits averaged).

Multi-fidelity (``multi_fidelity=True`` or a :class:`~derl_gym.runtime.multi_fidelity.MultiFidelity`; off by
default): every job gets a stop rule from the search's
:class:`~derl_gym.runtime.multi_fidelity.MultiFidelityScheduler` and may stop at a rung when its learning
curve is behind the runs of this search that reached the rung before it (asynchronous successive halving,
see :mod:`derl_gym.runtime.multi_fidelity`). A stopped run (status ``"stopped"``) is stored under its own key
(it never answers a full-budget look-up) and answers a later look-up only while the current thresholds
would stop it again; otherwise the formula is retrained from scratch. A full-budget result in the store
always answers. The scheduler's history is the runs this evaluator has seen plus, on the first call, the
store's rows written by the same ``method`` and the formulas of its checkpoints (a resumed search keeps its
thresholds). Needs ``seeds_per_formula == 1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any, Callable, Sequence

from derl_gym.runtime.multi_fidelity import (MultiFidelity, MultiFidelityScheduler, resolve_multi_fidelity,
                                             stopped_spec_hash)
from derl_gym.runtime.selection import check_selection_score, rescore
from derl_gym.runtime.spec import STATUS_OK, STATUS_STOPPED, InnerLoopSpec, InnerResult
from derl_gym.runtime.store import ResultStore

logger = logging.getLogger(__name__)

ResultCallback = Callable[[InnerResult, bool], None]


def effective_spec_hash(spec: InnerLoopSpec, init_model: str | None = None, eval_splits: Sequence[str] = (), *,
                        include_versions: bool = True) -> str:
    """Return the cache key's spec part for one kind of evaluation.

    A warm-started or test-scored run is a different experiment from a plain one, so the warm-start
    model and the test splits (with the test envs' settings) extend the spec hash when given.

    Args:
        spec: the inner-loop spec.
        init_model: the warm-start model path, if any.
        eval_splits: the test splits scored, if any.
        include_versions: False gives the version-free key (``reuse_across_versions``).

    Returns:
        ``spec.spec_hash(include_versions)`` when neither ``init_model`` nor ``eval_splits`` is given,
        else a 16-hex-digit hash of all of them.

    Example:
        >>> from derl_gym.runtime.standin import standin_spec
        >>> spec = standin_spec()
        >>> effective_spec_hash(spec) == spec.spec_hash()
        True
        >>> tested = effective_spec_hash(spec, eval_splits=["L0"])
        >>> len(tested), tested != spec.spec_hash(), tested != effective_spec_hash(spec, eval_splits=["L1"])
        (16, True, True)
    """
    base = spec.spec_hash(include_versions=include_versions)
    if not init_model and not eval_splits:
        return base
    extra = f"{base}|init={init_model or ''}|test={','.join(eval_splits)}"
    if eval_splits:
        extra += "|" + repr(sorted((k, repr(v)) for k, v in spec.test_envs.items()))
    return hashlib.sha256(extra.encode()).hexdigest()[:16]


#: Distance between the inner seeds of one formula (:func:`inner_seeds`); far from the small seeds
#: (0, 1, 2 ...) that compare and final_test use for separate repetitions.
SEED_STRIDE = 1000


def inner_seeds(seed: int, seeds_per_formula: int) -> list[int]:
    """Return the inner seeds a formula is trained on (common random numbers across formulas).

    Args:
        seed: the call's seed (the first inner seed, so one-seed results are reused).
        seeds_per_formula: how many seeds.

    Returns:
        ``[seed, seed + 1000, seed + 2000, ...]``, ``seeds_per_formula`` of them (:data:`SEED_STRIDE`
        apart); the same for every formula of a call.

    Raises:
        ValueError: when ``seeds_per_formula < 1``.

    Example:
        >>> inner_seeds(0, 3), inner_seeds(7, 1)
        ([0, 1000, 2000], [7])
        >>> inner_seeds(0, 0)
        Traceback (most recent call last):
            ...
        ValueError: seeds_per_formula must be >= 1, got 0
    """
    if int(seeds_per_formula) < 1:
        raise ValueError(f"seeds_per_formula must be >= 1, got {seeds_per_formula!r}")
    return [int(seed) + SEED_STRIDE * k for k in range(int(seeds_per_formula))]


def aggregate_seeds(results: Sequence[InnerResult], seeds: Sequence[int], text: str) -> InnerResult:
    """Return one result for a formula trained on several inner seeds.

    Args:
        results: one result per seed, in the order of ``seeds``.
        seeds: the inner seeds (:func:`inner_seeds`).
        text: the formula text the returned result carries as ``expression``.

    Returns:
        An :class:`InnerResult` whose ``score`` is the mean over the seeds whose run finished (status
        ``"ok"`` if any did, else the first failure), with ``wall_seconds`` and ``env_steps`` summed (the
        cost), ``curve``/``model_path`` of the first finished seed, and in ``extra``: ``seeds``,
        ``seed_scores`` (None for a failed seed), ``seed_statuses``, ``score_std``, ``failed_seeds`` and,
        when the runs scored test splits, ``test`` (per split, mean over finished seeds) and
        ``test_per_seed``.

    Example:
        >>> runs = [InnerResult("g1", "g1", score=0.6, seed=0, env_steps=100),
        ...         InnerResult("g1", "g1", score=0.8, seed=1000, env_steps=100),
        ...         InnerResult.failure("g1", "g1", "timeout", seed=2000)]
        >>> result = aggregate_seeds(runs, [0, 1000, 2000], "g1")
        >>> result.status, round(result.score, 3), result.env_steps, result.extra["seed_scores"]
        ('ok', 0.7, 200, [0.6, 0.8, None])
        >>> result.extra["failed_seeds"], round(result.extra["score_std"], 3)
        ([2000], 0.1)
    """
    import statistics

    ok = [r for r in results if r.ok]
    extra: dict[str, Any] = {"seeds": [int(s) for s in seeds],
                             "seed_scores": [float(r.score) if r.ok else None for r in results],
                             "seed_statuses": [r.status for r in results],
                             "failed_seeds": [int(s) for s, r in zip(seeds, results) if not r.ok]}
    if any((r.extra or {}).get("invalid") for r in results):
        extra["invalid"] = True
    wall = float(sum(r.wall_seconds for r in results))
    steps = int(sum(r.env_steps for r in results))
    if not ok:
        first = results[0]
        return dataclasses.replace(first, expression=str(text), seed=int(seeds[0]), wall_seconds=wall, env_steps=steps,
                                   curve=list(first.curve), extra={**(first.extra or {}), **extra})
    scores = [float(r.score) for r in ok]
    extra["score_std"] = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    tests = [(r.extra or {}).get("test") for r in ok]
    if all(isinstance(t, dict) for t in tests) and tests:
        splits = list(tests[0])
        extra["test"] = {sp: statistics.fmean(float(t.get(sp, 0.0)) for t in tests) for sp in splits}
        extra["test_per_seed"] = {sp: [float(t.get(sp, 0.0)) for t in tests] for sp in splits}
    first = ok[0]
    return InnerResult(expression=str(text), canonical=first.canonical, score=statistics.fmean(scores),
                       status=first.status, seed=int(seeds[0]), curve=list(first.curve), wall_seconds=wall,
                       env_steps=steps, error=None, model_path=first.model_path, extra=extra)


def model_filename(canonical: str, spec_hash: str, seed: int) -> str:
    """Return the file-name stem under which one evaluation's trained inner agent is saved.

    Args:
        canonical: the formula's canonical form.
        spec_hash: the evaluation's spec hash (:func:`effective_spec_hash`).
        seed: the inner seed.

    Returns:
        ``"model_<16 hex digits>"``, a digest of the three, so each (formula, spec, seed) has its own file.

    Example:
        >>> model_filename("g1", "abc", 0)
        'model_7aec7291e982e455'
        >>> model_filename("g1", "abc", 1) != model_filename("g1", "abc", 0)
        True
    """
    digest = hashlib.sha256(f"{canonical}|{spec_hash}|{seed}".encode()).hexdigest()[:16]
    return f"model_{digest}"


class Evaluator:
    """Evaluate formulas with ``runner`` and cache their results in ``store`` (see the module doc).

    Counters: ``trained`` counts jobs run, ``cache_hits`` the (formula, seed) pairs answered without
    training, ``env_steps`` sums the trained jobs' env steps and ``stopped`` counts trained jobs stopped
    early.

    Args:
        spec: the inner-loop spec every formula is trained under.
        runner: a runner (:func:`~derl_gym.runtime.runners.make_runner`) whose ``submit`` runs the jobs.
        store: the :class:`~derl_gym.runtime.store.ResultStore` that caches results.
        method: the label of the stored rows (and of the multi-fidelity history).
        model_dir: when set, each job saves its trained agent there (DERL-pop warm starts from it).
        eval_splits: test splits each job scores (final testing); keys of ``spec.test_envs``.
        canonicalize: overrides how a formula is canonicalised (default
            ``MetaReward(text, primitive_set).canonical``); it must raise ``ValueError`` for an invalid
            formula.
        on_result: ``on_result(result, from_cache)`` is called for every result as it arrives.
        reuse_across_versions: lets a result trained under other code/library versions of the same spec
            answer a look-up (the key normally includes the versions, so an upgrade retrains).
        seeds_per_formula: trains every formula on N inner seeds (common random numbers, see the module
            doc) and scores the mean.
        multi_fidelity: None (off), True (the default
            :class:`~derl_gym.runtime.multi_fidelity.MultiFidelity`) or settings: jobs may stop early at rungs.
        selection_score: which score the returned results carry (:mod:`derl_gym.runtime.selection`:
            ``"validation"``, the paper's, or the learning curve's tail); the store keeps the validation score.

    Raises:
        ValueError: for ``seeds_per_formula < 1``, multi-fidelity with several seeds, an unknown
            ``selection_score`` or ``eval_splits`` that are not test splits of ``spec``.

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> with tempfile.TemporaryDirectory() as run_dir, ResultStore(run_dir) as store:
        ...     evaluator = Evaluator(standin_spec(), InlineRunner(job_fn=standin_inner), store, method="demo")
        ...     first = evaluator.evaluate(["g1 + 0.5*g4", "0.5*g4 + g1", "g1 +* g2"], seed=0)
        ...     again = evaluator.evaluate(["g1 + 0.5*g4"], seed=0)
        >>> [(round(result.score, 3), result.status, from_cache) for result, from_cache in first]
        [(0.901, 'ok', False), (0.901, 'ok', True), (0.0, 'failed', True)]
        >>> again[0][1], evaluator.trained, evaluator.cache_hits   # one training for two equal formulas
        (True, 1, 2)
    """

    def __init__(self, spec: InnerLoopSpec, runner: Any, store: ResultStore, method: str | None = None, *,
                 model_dir: str | Path | None = None, eval_splits: Sequence[str] = (),
                 canonicalize: Callable[[str], str] | None = None, on_result: ResultCallback | None = None,
                 reuse_across_versions: bool = False, seeds_per_formula: int = 1,
                 multi_fidelity: MultiFidelity | bool | dict | None = None,
                 selection_score: str = "validation") -> None:
        self.spec = spec
        self.selection_score = check_selection_score(selection_score)
        self.seeds_per_formula = int(seeds_per_formula)
        inner_seeds(0, self.seeds_per_formula)  # validates
        self.multi_fidelity = resolve_multi_fidelity(multi_fidelity)
        if self.multi_fidelity is not None and self.seeds_per_formula != 1:
            raise ValueError(f"multi_fidelity needs seeds_per_formula=1, got {self.seeds_per_formula}; "
                             "use one or the other")
        self.scheduler: MultiFidelityScheduler | None = None
        if self.multi_fidelity is not None:
            label = "".join(c if c.isalnum() or c in "-_." else "_" for c in (method or f"evaluator-{id(self)}"))
            board = Path(store.path).parent / "multi_fidelity" / f"{label}-{spec.spec_hash()[:8]}.json"
            self.scheduler = MultiFidelityScheduler(self.multi_fidelity, int(spec.agent.total_timesteps),
                                                    board=str(board))
        self._history_restored: set[int] = set()
        self.stopped = 0
        self.reuse_across_versions = bool(reuse_across_versions)
        self.runner = runner
        self.store = store
        self.method = method
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.eval_splits = list(eval_splits)
        unknown = [s for s in self.eval_splits if s not in spec.test_envs]
        if unknown:
            raise ValueError(f"eval_splits {unknown} are not test splits of spec {spec.name!r}; "
                             f"known: {sorted(spec.test_envs)}")
        self.on_result = on_result
        self._canonicalize = canonicalize
        self._primitives = None
        self._session_failures: dict[tuple[str, str, int], InnerResult] = {}
        self.trained = 0
        self.cache_hits = 0
        self.env_steps = 0
        self._count_lock = threading.Lock()  # seeds of one call are evaluated in threads

    # ------------------------------------------------------------------ canonical forms
    @property
    def num_variables(self) -> int:
        """The number of primitives (variables g1..gK) of the spec."""
        return len(self._primitive_set())

    def _primitive_set(self):
        if self._primitives is None:
            self._primitives = self.spec.primitives.build()
        return self._primitives

    def canonical(self, expression: str) -> str:
        """Return the canonical form of ``expression``; raises ``ValueError`` (``InvalidExpression``)
        when it is not a valid formula over the spec's primitives."""
        if self._canonicalize is not None:
            return self._canonicalize(expression)
        from derl_gym.rewards.expression import MetaReward

        return MetaReward(expression, self._primitive_set()).canonical

    @property
    def feedback(self) -> str | None:
        """How stopped runs enter the meta-optimizer's update (``"censored"`` / ``"exclude"``), None when the
        scheduler is off (see :func:`~derl_gym.runtime.multi_fidelity.update_scores`)."""
        return self.multi_fidelity.feedback if self.multi_fidelity is not None else None

    def _restore_history(self, seed: int, spec_hash: str, lookup_base: str | None) -> None:
        """Feed the scheduler, once per seed, with the store's runs of this search: rows written by
        ``method`` and the formulas of its checkpoints (full-budget or stopped results); returns nothing."""
        if self.scheduler is None or self.method is None or seed in self._history_restored:
            return
        self._history_restored.add(seed)
        for row in self.store.rows():
            if row.get("method") == self.method and int(row["seed"]) == seed and row["status"] in (
                    STATUS_OK, STATUS_STOPPED):
                self.scheduler.observe(InnerResult(expression=row["expression"], canonical=row["canonical"],
                                                   score=float(row["score"]), status=row["status"], seed=seed,
                                                   curve=row["curve"], env_steps=int(row["env_steps"]),
                                                   extra=row["extra"]))
        for checkpoint in self.store.checkpoints(self.method):
            for canonical in checkpoint.get("canonicals", []):
                found = self.store.get(canonical, spec_hash, seed, base_hash=lookup_base)
                if found is None:
                    found = next((r for r in (self._stopped_lookup(canonical, spec_hash, seed, lookup_base, s)
                                              for s in self.scheduler.rung_steps) if r is not None), None)
                if found is not None:
                    self.scheduler.observe(found)

    def _stopped_lookup(self, canonical: str, spec_hash: str, seed: int, lookup_base: str | None,
                        rung_step: int) -> InnerResult | None:
        """Return the stored run of ``canonical`` stopped at ``rung_step``, or None."""
        base = stopped_spec_hash(lookup_base, rung_step) if lookup_base else None
        found = self.store.get(canonical, stopped_spec_hash(spec_hash, rung_step), seed, reuse_failures=True,
                               base_hash=base)
        return found if found is not None and found.status == STATUS_STOPPED else None

    @staticmethod
    def _rung_step(result: InnerResult) -> int:
        """Return the rung step at which a stopped ``result`` stopped (its store key)."""
        decisions = ((result.extra or {}).get("multi_fidelity") or {}).get("decisions") or []
        stops = [d for d in decisions if d.get("stop")]
        return int(stops[-1]["rung_step"]) if stops else int(result.env_steps)

    def _has_needed_model(self, result: InnerResult) -> bool:
        """False when this evaluator saves agents (DERL-pop) but ``result`` is a success whose saved
        agent is missing (e.g. it was trained by a method that saves none), so it must be retrained."""
        if self.model_dir is None or not result.ok:
            return True
        return bool(result.model_path) and Path(result.model_path).exists()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, expressions: Sequence[str], seed: int = 0, init_model: str | None = None,
                 iteration: int | None = None) -> list[tuple[InnerResult, bool]]:
        """Return ``(result, from_cache)`` for each formula, in input order (see the module doc).

        ``from_cache`` is True when no job was run for that entry (store hit, an equivalent formula
        earlier in the batch, or an invalid formula). Results carry the input formula text as
        ``expression``. With ``seeds_per_formula > 1`` each formula runs on :func:`inner_seeds`
        ``(seed, N)`` (all seeds' jobs are submitted at once) and the result is their aggregate
        (:func:`aggregate_seeds`); ``from_cache`` is then True when no seed needed a job.
        """
        if isinstance(expressions, str):
            raise TypeError("evaluate expects a list of formulas, got one string; wrap it in a list")
        expressions = list(expressions)
        if self.seeds_per_formula == 1:
            return self._evaluate_seed(expressions, int(seed), init_model, iteration, notify=True)
        from concurrent.futures import ThreadPoolExecutor

        seeds = inner_seeds(int(seed), self.seeds_per_formula)
        with ThreadPoolExecutor(max_workers=len(seeds)) as pool:  # all seeds' jobs reach the runner at once
            per_seed = list(pool.map(lambda s: self._evaluate_seed(expressions, s, init_model, iteration,
                                                                   notify=False), seeds))
        out = []
        for i, text in enumerate(expressions):
            pairs = [per_seed[k][i] for k in range(len(seeds))]
            result = aggregate_seeds([r for r, _ in pairs], seeds, text)
            entry = (result, all(c for _, c in pairs))
            out.append(entry)
            self._notify(result, entry[1])
        return out

    def _evaluate_seed(self, expressions: list[str], seed: int, init_model: str | None, iteration: int | None, *,
                       notify: bool) -> list[tuple[InnerResult, bool]]:
        """Evaluate ``expressions`` on one inner seed (the module doc's steps 1-5); returns
        ``(result, from_cache)`` per formula; ``notify`` calls ``on_result`` per result."""
        notify_fn = self._notify if notify else (lambda result, cached: None)
        spec_hash = effective_spec_hash(self.spec, init_model, self.eval_splits)
        base_hash = effective_spec_hash(self.spec, init_model, self.eval_splits, include_versions=False)
        lookup_base = base_hash if self.reuse_across_versions else None
        out: list[tuple[InnerResult, bool] | None] = [None] * len(expressions)
        scheduler = self.scheduler
        if scheduler is not None:
            self._restore_history(seed, spec_hash, lookup_base)
        to_train: dict[str, list[int]] = {}   # canonical -> input positions
        first_text: dict[str, str] = {}
        for i, text in enumerate(expressions):
            try:
                canonical = self.canonical(text)
            except (ValueError, TypeError, KeyError, ZeroDivisionError, OverflowError, RecursionError) as exc:
                result = InnerResult.failure(str(text), str(text), f"invalid expression: {exc}", seed=seed)
                result.extra["invalid"] = True
                out[i] = (result, True)
                notify_fn(result, True)
                continue
            if canonical in to_train:
                to_train[canonical].append(i)
                continue
            cached = self.store.get(canonical, spec_hash, seed, base_hash=lookup_base)
            if cached is not None and not self._has_needed_model(cached):
                cached = None  # a warm-starting method needs the trained agent, not only its score
            if cached is None and scheduler is not None:
                for rung_step in scheduler.rung_steps:
                    stopped = self._stopped_lookup(canonical, spec_hash, seed, lookup_base, rung_step)
                    if stopped is not None:
                        # answer while the current thresholds stop it again; else retrain it (promotion)
                        cached = stopped if scheduler.would_stop(stopped) else None
                        break
            if cached is None:
                cached = self._session_failures.get((canonical, spec_hash, seed))
            if cached is not None:
                with self._count_lock:
                    self.cache_hits += 1
                if scheduler is not None:
                    scheduler.observe(cached)
                out[i] = (self._as(cached, text), True)
                notify_fn(out[i][0], True)
                continue
            to_train[canonical] = [i]
            first_text[canonical] = text
        if to_train:
            canonicals = list(to_train)
            texts = [first_text[c] for c in canonicals]
            save_models = None
            if self.model_dir is not None:
                self.model_dir.mkdir(parents=True, exist_ok=True)
                save_models = [str(self.model_dir / model_filename(c, spec_hash, seed)) for c in canonicals]
            kwargs: dict[str, Any] = {}
            if save_models is not None:
                kwargs["save_models"] = save_models
            if self.eval_splits:
                kwargs["eval_splits"] = self.eval_splits
            if scheduler is not None:
                scheduler.write_board()
                kwargs["job_kwargs"] = {"stop_rule": scheduler.rule().to_dict()}
            futures = self.runner.submit(self.spec, texts, seed=seed, init_model=init_model, **kwargs)
            index = {id(f): k for k, f in enumerate(futures)}
            for future in as_completed(futures):
                k = index[id(future)]
                canonical = canonicals[k]
                result = future.result()
                if result.canonical != canonical:  # keep our key, whatever the job computed
                    result.extra = dict(result.extra or {})
                    result.extra.setdefault("job_canonical", result.canonical)
                    result.canonical = canonical
                result.seed = seed
                if init_model:
                    result.extra = dict(result.extra or {})
                    result.extra.setdefault("init_model", init_model)
                with self._count_lock:
                    self.trained += 1
                    self.env_steps += int(result.env_steps or 0)
                    self.stopped += int(result.status == STATUS_STOPPED)
                if result.status == STATUS_STOPPED:  # its own key: never answers a full-budget look-up
                    rung_step = self._rung_step(result)
                    self.store.put(result, stopped_spec_hash(spec_hash, rung_step), method=self.method,
                                   iteration=iteration, seed=seed, base_hash=stopped_spec_hash(base_hash, rung_step))
                else:
                    self.store.put(result, spec_hash, method=self.method, iteration=iteration, seed=seed,
                                   base_hash=base_hash)
                if scheduler is not None:
                    scheduler.observe(result)
                if not result.ok and result.status != STATUS_STOPPED:
                    self._session_failures[(canonical, spec_hash, seed)] = result
                    logger.warning("inner run %s for %r: %s", result.status, texts[k],
                                   (result.error or "").strip().splitlines()[-1:] or "")
                for n, i in enumerate(to_train[canonical]):
                    entry = (self._as(result, expressions[i]), n > 0)
                    out[i] = entry
                    if n > 0:
                        with self._count_lock:
                            self.cache_hits += 1
                    notify_fn(entry[0], entry[1])
        return [entry for entry in out if entry is not None]

    def _notify(self, result: InnerResult, from_cache: bool) -> None:
        if self.on_result is not None:
            try:
                self.on_result(result, from_cache)
            except Exception:  # noqa: BLE001 - a progress callback never breaks evaluation
                logger.exception("on_result callback failed")

    def _as(self, result: InnerResult, text: str) -> InnerResult:
        """Return a copy of ``result`` carrying the input formula text and the search score."""
        copy = dataclasses.replace(result, expression=str(text), curve=list(result.curve),
                                   extra=dict(result.extra or {}))
        return rescore(copy, self.selection_score)
