"""The interface every meta-optimizer implements, and helpers they share.

A meta-optimizer searches the space of Meta-Rewards (formulas over the primitives ``g1..gK``).
The outer loop is::

    formulas = optimizer.propose(G)            # G formula texts
    scores = [inner loop validation success of f for f in formulas]
    stats = optimizer.update(formulas, scores)  # learn from the scores
    checkpoint = optimizer.state_dict()        # resume: load_state_dict(checkpoint)

State dicts hold only JSON-serialisable values (numbers, strings, lists, dicts); torch weights are
safetensors buffers in base64 (:mod:`derl_gym.agents.meta.safe_state`) and CMA-ES keeps its
ask/tell history as numbers, so no state dict holds a pickle and loading one runs no code. After
``opt.load_state_dict(other.state_dict())`` the next ``opt.propose(n)`` returns exactly what
``other.propose(n)`` would: the random generator's state is part of the state.

Only scored formulas enter an update: :meth:`MetaOptimizer.update` drops every formula whose score
is ``None`` or not a finite number (an inner run that failed or timed out says nothing about its
formula), and the evolve loop passes only the formulas whose inner run finished.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Arbitrary but fixed: ``seed`` -> numpy generator and (for DERL) torch initialisation.
DEFAULT_MAX_TOKENS = 24


def make_grammar(num_variables: int, max_tokens: int = DEFAULT_MAX_TOKENS, constants: Sequence[str] | None = None):
    """Return a :class:`derl_gym.rewards.grammar.Grammar` for ``num_variables`` primitives.

    ``constants=None`` keeps the grammar's default constant tokens.

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> grammar = make_grammar(3, max_tokens=12)
        >>> grammar.num_variables, grammar.max_tokens
        (3, 12)
    """
    from derl_gym.rewards.grammar import Grammar

    if constants is None:
        return Grammar(num_variables=num_variables, max_tokens=max_tokens)
    return Grammar(num_variables=num_variables, constants=constants, max_tokens=max_tokens)


def scored_only(expressions: Sequence[str], scores: Sequence[float | None]) -> tuple[list[str], np.ndarray, list[str]]:
    """Return ``(kept expressions, their scores as float64, dropped expressions)``: a pair is dropped
    when its score is ``None``, not a number or not finite (a failed inner run, not a score).

    Example:
        >>> from derl_gym.agents.meta.base import scored_only
        >>> kept, scores, dropped = scored_only(["g1", "g2", "g3"], [0.5, None, float("nan")])
        >>> kept, scores.tolist(), dropped
        (['g1'], [0.5], ['g2', 'g3'])
    """
    expressions = list(expressions)
    scores = list(scores)
    if len(expressions) != len(scores):
        raise ValueError(f"update got {len(expressions)} expressions but {len(scores)} scores; "
                         "pass one score per expression")
    kept, values, dropped = [], [], []
    for text, score in zip(expressions, scores):
        try:
            value = float(score) if score is not None else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            kept.append(text)
            values.append(value)
        else:
            dropped.append(text)
    return kept, np.asarray(values, dtype=np.float64), dropped


def avg_formula(num_variables: int) -> str:
    """Return the mean of all primitives, ``"(g1 + g2 + ... + gK)/K"`` (``"g1"`` when K = 1).

    Example:
        >>> from derl_gym.agents.meta import avg_formula
        >>> avg_formula(3), avg_formula(1)
        ('(g1 + g2 + g3)/3', 'g1')
    """
    if num_variables <= 1:
        return "g1"
    terms = " + ".join(f"g{i + 1}" for i in range(num_variables))
    return f"({terms})/{num_variables}"


def default_seed_formulas(num_variables: int) -> list[str]:
    """Return paper-style seed formulas for a cold start: outcome, outcome plus half of each
    process primitive, and the average of all primitives.

    Example:
        >>> from derl_gym.agents.meta import default_seed_formulas
        >>> default_seed_formulas(3)
        ['g1', 'g1 + 0.5*g2', 'g1 + 0.5*g3', '(g1 + g2 + g3)/3']
    """
    seeds = ["g1"]
    seeds += [f"g1 + 0.5*g{k}" for k in range(2, num_variables + 1)]
    if num_variables > 1:
        seeds.append(avg_formula(num_variables))
    return seeds


class MetaOptimizer(abc.ABC):
    """Base class of all meta-optimizers.

    Subclasses implement :meth:`propose` and may extend :meth:`update`, :meth:`_extra_state` and
    :meth:`_load_extra_state`. The base class keeps the random generator (``self.rng``, a
    :class:`numpy.random.Generator` seeded with ``seed``), the iteration counter and the best
    formula seen so far.

    ``warm_start_inner`` tells the evolve loop whether each inner run should start from the best
    inner agent of the previous iteration (True only for DERL-pop).

    Example:
        >>> from derl_gym.agents.meta import MetaOptimizer
        >>> class Alternate(MetaOptimizer):  # the smallest optimizer: propose() is all it needs
        ...     name = "alternate"
        ...     def propose(self, n):
        ...         return [f"g{1 + (self.iteration + i) % self.num_variables}" for i in range(n)]
        >>> optimizer = Alternate(2, seed=0)
        >>> formulas = optimizer.propose(2)
        >>> stats = optimizer.update(formulas, [0.25, None])  # a failed inner run (None) is dropped
        >>> formulas, stats["n"], stats["dropped"], optimizer.best_expression, optimizer.state_dict()["iteration"]
        (['g1', 'g2'], 1, 1, 'g1', 1)
    """

    #: Registry name (``make_optimizer(name, ...)``).
    name: str = "base"
    #: Start inner runs from the previous iteration's best inner agent (DERL-pop only).
    warm_start_inner: bool = False

    def __init__(self, num_variables: int, seed: int = 0) -> None:
        if int(num_variables) < 1:
            raise ValueError(f"num_variables must be >= 1 (the number of primitives g1..gK), got {num_variables!r}")
        self.num_variables = int(num_variables)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.iteration = 0
        self.best_expression: str | None = None
        self.best_score = -math.inf

    # ------------------------------------------------------------------ the interface
    @abc.abstractmethod
    def propose(self, n: int) -> list[str]:
        """Return ``n`` formula texts to evaluate next."""

    def update(self, expressions: Sequence[str], scores: Sequence[float | None]) -> dict[str, Any]:
        """Record the scores of evaluated formulas; returns stats (iteration, ``n`` scored formulas,
        ``dropped`` unscored ones, mean/best score).

        Subclasses learn here and add their own stats (loss, kl, ...). Only scored formulas enter
        the update: a formula whose score is ``None`` or not finite (a failed inner run) is dropped
        together with its score, so the subclass never sees it.
        """
        kept, values, dropped = scored_only(expressions, scores)
        if dropped:
            logger.info("%s update: %d formula(s) without a score left out: %s", self.name, len(dropped), dropped)
        stats = self._record(kept, values)
        stats["dropped"] = len(dropped)
        stats.update(self._learn(kept, values))
        return stats

    def _learn(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        """Subclass hook: learn from one batch; returns extra stats. The default learns nothing."""
        return {}

    def _record(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        """Advance the iteration counter and the best-so-far; returns the common stats."""
        self.iteration += 1
        stats: dict[str, Any] = {"iteration": self.iteration, "n": len(expressions)}
        if len(scores):
            i = int(np.argmax(scores))
            if scores[i] > self.best_score:
                self.best_score = float(scores[i])
                self.best_expression = expressions[i]
            stats.update(mean_score=float(np.mean(scores)), max_score=float(scores[i]),
                         std_score=float(np.std(scores)), best_expression=expressions[i])
        stats["best_score_so_far"] = float(self.best_score) if self.best_expression is not None else None
        stats["best_expression_so_far"] = self.best_expression
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict with everything needed to resume exactly."""
        return {
            "name": self.name,
            "num_variables": self.num_variables,
            "seed": self.seed,
            "iteration": self.iteration,
            "rng": self.rng.bit_generator.state,
            "best_expression": self.best_expression,
            "best_score": None if self.best_expression is None else float(self.best_score),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict` (same optimizer class and K)."""
        if state.get("name") != self.name:
            raise ValueError(f"state dict is for optimizer {state.get('name')!r}, not {self.name!r}; "
                             f"build it with make_optimizer({state.get('name')!r}, ...)")
        if int(state["num_variables"]) != self.num_variables:
            raise ValueError(f"state dict has num_variables={state['num_variables']}, this optimizer has "
                             f"{self.num_variables}; build it with the same number of primitives")
        self.seed = int(state["seed"])
        self.iteration = int(state["iteration"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.best_expression = state.get("best_expression")
        best = state.get("best_score")
        self.best_score = -math.inf if best is None else float(best)
        self._load_extra_state(state.get("extra", {}))

    def _extra_state(self) -> dict[str, Any]:
        """Subclass hook: return the subclass's own JSON-serialisable state."""
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Subclass hook: restore what :meth:`_extra_state` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_variables={self.num_variables}, seed={self.seed})"


class GrammarOptimizer(MetaOptimizer):
    """A meta-optimizer that writes formulas with the token grammar.

    ``grammar`` may be passed directly (any object with the Grammar interface); otherwise one is
    built from ``num_variables``, ``max_tokens`` and ``constants``.

    Example:
        >>> from derl_gym.agents.meta import GrammarOptimizer
        >>> from derl_gym.rewards import MetaReward
        >>> class Sampler(GrammarOptimizer):
        ...     name = "sampler"
        ...     def propose(self, n):
        ...         return [self.grammar.sample_text(self.rng) for _ in range(n)]
        >>> formulas = Sampler(3, seed=0, max_tokens=10).propose(4)
        >>> all(MetaReward(text, 3) is not None for text in formulas)  # grammar samples always parse
        True
    """

    def __init__(self, num_variables: int, seed: int = 0, *, grammar: Any = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, constants: Sequence[str] | None = None) -> None:
        super().__init__(num_variables, seed)
        self.grammar = grammar if grammar is not None else make_grammar(self.num_variables, max_tokens, constants)
