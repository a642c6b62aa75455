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
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any, Callable, Sequence

from derl_gym.runtime.spec import InnerLoopSpec, InnerResult
from derl_gym.runtime.store import ResultStore

logger = logging.getLogger(__name__)

ResultCallback = Callable[[InnerResult, bool], None]


def effective_spec_hash(spec: InnerLoopSpec, init_model: str | None = None, eval_splits: Sequence[str] = (), *,
                        include_versions: bool = True) -> str:
    """Return the cache key's spec part: ``spec.spec_hash(include_versions)``, extended by the
    warm-start model and the test splits when given (a warm-started or test-scored run is a
    different experiment). ``include_versions=False`` gives the version-free key."""
    base = spec.spec_hash(include_versions=include_versions)
    if not init_model and not eval_splits:
        return base
    extra = f"{base}|init={init_model or ''}|test={','.join(eval_splits)}"
    if eval_splits:
        extra += "|" + repr(sorted((k, repr(v)) for k, v in spec.test_envs.items()))
    return hashlib.sha256(extra.encode()).hexdigest()[:16]


def model_filename(canonical: str, spec_hash: str, seed: int) -> str:
    """Return a file-name stem for a trained inner agent of one evaluation."""
    digest = hashlib.sha256(f"{canonical}|{spec_hash}|{seed}".encode()).hexdigest()[:16]
    return f"model_{digest}"


class Evaluator:
    """Evaluate formulas with ``runner`` and cache them in ``store``.

    ``method`` labels stored rows; ``model_dir`` (when set) asks each job to save its trained agent
    there (DERL-pop warm starts from it); ``eval_splits`` asks each job to score those test splits
    (final testing); ``canonicalize`` overrides how a formula is canonicalised (default:
    ``MetaReward(text, primitive_set).canonical``; it must raise ``ValueError`` for an invalid
    formula); ``on_result(result, from_cache)`` is called for every result as it arrives;
    ``reuse_across_versions=True`` lets a result trained under other code/library versions of the
    same spec answer a look-up (the key normally includes the versions, so an upgrade retrains).
    Counters ``trained`` and ``cache_hits`` count jobs run and formulas answered without training.
    """

    def __init__(self, spec: InnerLoopSpec, runner: Any, store: ResultStore, method: str | None = None, *,
                 model_dir: str | Path | None = None, eval_splits: Sequence[str] = (),
                 canonicalize: Callable[[str], str] | None = None, on_result: ResultCallback | None = None,
                 reuse_across_versions: bool = False) -> None:
        self.spec = spec
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
        ``expression``.
        """
        if isinstance(expressions, str):
            raise TypeError("evaluate expects a list of formulas, got one string; wrap it in a list")
        expressions = list(expressions)
        seed = int(seed)
        spec_hash = effective_spec_hash(self.spec, init_model, self.eval_splits)
        base_hash = effective_spec_hash(self.spec, init_model, self.eval_splits, include_versions=False)
        lookup_base = base_hash if self.reuse_across_versions else None
        out: list[tuple[InnerResult, bool] | None] = [None] * len(expressions)
        to_train: dict[str, list[int]] = {}   # canonical -> input positions
        first_text: dict[str, str] = {}
        for i, text in enumerate(expressions):
            try:
                canonical = self.canonical(text)
            except (ValueError, TypeError, KeyError, ZeroDivisionError, OverflowError, RecursionError) as exc:
                result = InnerResult.failure(str(text), str(text), f"invalid expression: {exc}", seed=seed)
                result.extra["invalid"] = True
                out[i] = (result, True)
                self._notify(result, True)
                continue
            if canonical in to_train:
                to_train[canonical].append(i)
                continue
            cached = self.store.get(canonical, spec_hash, seed, base_hash=lookup_base)
            if cached is not None and not self._has_needed_model(cached):
                cached = None  # a warm-starting method needs the trained agent, not only its score
            if cached is None:
                cached = self._session_failures.get((canonical, spec_hash, seed))
            if cached is not None:
                self.cache_hits += 1
                out[i] = (self._as(cached, text), True)
                self._notify(out[i][0], True)
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
                self.trained += 1
                self.store.put(result, spec_hash, method=self.method, iteration=iteration, seed=seed,
                               base_hash=base_hash)
                if not result.ok:
                    self._session_failures[(canonical, spec_hash, seed)] = result
                    logger.warning("inner run %s for %r: %s", result.status, texts[k],
                                   (result.error or "").strip().splitlines()[-1:] or "")
                for n, i in enumerate(to_train[canonical]):
                    entry = (self._as(result, expressions[i]), n > 0)
                    out[i] = entry
                    if n > 0:
                        self.cache_hits += 1
                    self._notify(entry[0], entry[1])
        return [entry for entry in out if entry is not None]

    def _notify(self, result: InnerResult, from_cache: bool) -> None:
        if self.on_result is not None:
            try:
                self.on_result(result, from_cache)
            except Exception:  # noqa: BLE001 - a progress callback never breaks evaluation
                logger.exception("on_result callback failed")

    @staticmethod
    def _as(result: InnerResult, text: str) -> InnerResult:
        """Return a copy of ``result`` carrying the input formula text."""
        copy = dataclasses.replace(result, expression=str(text), curve=list(result.curve),
                                   extra=dict(result.extra or {}))
        return copy
