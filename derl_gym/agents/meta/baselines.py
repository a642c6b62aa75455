"""Baseline meta-optimizers that DERL is compared against on the same inner-training budget.

* :class:`RandomSearch` (``random``): uniform masked sampling from the token grammar.
* :class:`Evolution` (``evolution``): a genetic algorithm on formula trees (tournament selection,
  the grammar's subtree crossover and mutation, elitism) -- the derivative-free method of the paper.
* :class:`CMAES` (``cmaes``): CMA-ES (the ``cma`` package) over the weights of a linear formula
  ``w1*g1 + ... + wK*gK`` (weights bounded, rounded to 2 decimals). Its state dict stores the
  CMA-ES construction arguments and its ask/tell history as numbers; loading rebuilds the
  strategy and replays the history (no pickle).
* :class:`FixedFormula` (``outcome`` = ``g1``, ``avg`` = ``(g1 + ... + gK)/K``): always the same formula.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from derl_gym.agents.meta.base import (
    DEFAULT_MAX_TOKENS,
    GrammarOptimizer,
    MetaOptimizer,
    avg_formula,
)

logger = logging.getLogger(__name__)


class RandomSearch(GrammarOptimizer):
    """Random search: every proposal is an independent uniform masked sample from the grammar.

    Example:
        >>> from derl_gym.rewards import MetaReward
        >>> optimizer = RandomSearch(3, seed=0)
        >>> formulas = optimizer.propose(4)
        >>> len(formulas), all(MetaReward(text, 3) is not None for text in formulas)
        (4, True)
        >>> RandomSearch(3, seed=0).propose(4) == formulas  # same seed, same proposals
        True
    """

    name = "random"

    def propose(self, n: int) -> list[str]:
        """Return ``n`` formulas from ``grammar.sample_text`` with this optimizer's generator."""
        return [self.grammar.sample_text(self.rng) for _ in range(int(n))]


class Evolution(GrammarOptimizer):
    """Genetic algorithm on formula trees.

    The first generation is random grammar samples (plus ``initial`` formulas, if given). Each
    later generation is bred from the current population: parents by tournament selection
    (``tournament_size``), a child is the grammar's crossover of two parents with probability
    ``crossover_rate`` (else a copy of one), then mutated with probability ``mutation_rate``;
    children already evaluated are re-bred up to ``max_retries`` times. :meth:`update` assigns
    fitness; the new population is the evaluated generation plus the ``elitism`` best members of
    the previous population (elites are carried, not re-proposed, so every proposal is new work).

    Example:
        >>> optimizer = Evolution(3, seed=0, initial=["g1", "g1 + 0.5*g2"])
        >>> first = optimizer.propose(6)
        >>> first[:2]
        ['g1', 'g1 + 0.5*g2']
        >>> stats = optimizer.update(first, [0.6, 0.8, 0.1, 0.2, 0.3, 0.0])
        >>> children = optimizer.propose(4)  # bred from the scored generation
        >>> stats["max_score"], optimizer.best_expression, len(children), set(children).isdisjoint(first)
        (0.8, 'g1 + 0.5*g2', 4, True)
    """

    name = "evolution"

    def __init__(self, num_variables: int, seed: int = 0, *, grammar: Any = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, constants: Sequence[str] | None = None,
                 tournament_size: int = 3, crossover_rate: float = 0.5, mutation_rate: float = 0.8,
                 elitism: int = 2, initial: Sequence[str] = (), max_retries: int = 10) -> None:
        super().__init__(num_variables, seed, grammar=grammar, max_tokens=max_tokens, constants=constants)
        if tournament_size < 1:
            raise ValueError(f"tournament_size must be >= 1, got {tournament_size!r}")
        self.tournament_size = int(tournament_size)
        self.crossover_rate = float(crossover_rate)
        self.mutation_rate = float(mutation_rate)
        self.elitism = max(0, int(elitism))
        self.initial = list(initial)
        self.max_retries = int(max_retries)
        #: current population: list of (formula, fitness)
        self.population: list[tuple[str, float]] = []
        #: every formula evaluated so far -> fitness
        self.evaluated: dict[str, float] = {}
        self.generation = 0

    def _tournament(self) -> str:
        picks = self.rng.integers(0, len(self.population), size=self.tournament_size)
        best = max(picks, key=lambda i: (self.population[i][1], -i))
        return self.population[int(best)][0]

    def _child(self) -> str:
        parent = self._tournament()
        if self.rng.random() < self.crossover_rate:
            other = self._tournament()
            try:
                parent = self.grammar.crossover(parent, other, self.rng)
            except Exception as exc:  # noqa: BLE001  (keep the parent when the operator fails)
                logger.debug("crossover(%r, %r) failed: %s", parent, other, exc)
        if self.rng.random() < self.mutation_rate:
            try:
                parent = self.grammar.mutate(parent, self.rng)
            except Exception as exc:  # noqa: BLE001
                logger.debug("mutate(%r) failed: %s", parent, exc)
        return parent

    def propose(self, n: int) -> list[str]:
        """Return the next generation's ``n`` new members (random ones for the first generation)."""
        n = int(n)
        if not self.population:
            first = [f for f in self.initial if f not in self.evaluated][:n]
            return first + [self.grammar.sample_text(self.rng) for _ in range(n - len(first))]
        children: list[str] = []
        for _ in range(n):
            child = self._child()
            for _ in range(self.max_retries):
                if child not in self.evaluated and child not in children:
                    break
                child = self._child()
            children.append(child)
        return children

    def _learn(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        for text, score in zip(expressions, scores):
            self.evaluated[text] = float(score)
        ranked = sorted(self.population, key=lambda item: -item[1])
        elites = ranked[:self.elitism]
        generation = [(text, float(score)) for text, score in zip(expressions, scores)]
        names = {text for text, _ in generation}
        self.population = generation + [e for e in elites if e[0] not in names]
        self.generation += 1
        fitness = [f for _, f in self.population]
        return {"generation": self.generation, "population_size": len(self.population),
                "population_best": float(max(fitness)) if fitness else None,
                "population_mean": float(np.mean(fitness)) if fitness else None}

    def _extra_state(self) -> dict[str, Any]:
        return {"population": [[t, f] for t, f in self.population],
                "evaluated": dict(self.evaluated), "generation": self.generation}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.population = [(str(t), float(f)) for t, f in extra.get("population", [])]
        self.evaluated = {str(k): float(v) for k, v in extra.get("evaluated", {}).items()}
        self.generation = int(extra.get("generation", 0))


def linear_formula(weights: Sequence[float]) -> str:
    """Return ``"w1*g1 + w2*g2 - ..."`` with 2-decimal weights, zero terms dropped (``"0*g1"`` if all are 0).

    Example:
        >>> linear_formula([1.0, 0.5, -0.25]), linear_formula([0.0, 0.0])
        ('g1 + 0.5*g2 - 0.25*g3', '0*g1')
    """
    parts: list[str] = []
    for k, w in enumerate(weights):
        w = round(float(w), 2)
        if w == 0:
            continue
        magnitude = f"{abs(w):g}"
        term = f"g{k + 1}" if magnitude == "1" else f"{magnitude}*g{k + 1}"
        if not parts:
            parts.append(term if w > 0 else f"-{term}")
        else:
            parts.append(f"+ {term}" if w > 0 else f"- {term}")
    return " ".join(parts) if parts else "0*g1"


class CMAES(MetaOptimizer):
    """CMA-ES over the weights ``w`` of the linear formula ``sum_k w_k * g_k``.

    Weights live in ``[-bound, bound]`` and are rounded to 2 decimals in the formula. The search
    starts at ``x0`` (default ``[1, 0, ..., 0]`` = the outcome reward) with step ``sigma0``.
    ``popsize`` defaults to the first ``propose(n)``; proposals are served from ask() batches
    and results are told to CMA-ES once a whole batch has been scored. CMA-ES minimises, so it
    is told ``-score``.

    The strategy draws its normal samples from its own ``numpy.random.RandomState`` (seeded from
    this optimizer's generator), not from NumPy's global generator, so runs are reproducible when
    other code uses ``np.random`` too. Exact resume without a pickle: the state dict holds the
    construction arguments and the ordered ask/tell history (told solutions and values as JSON
    numbers); :meth:`load_state_dict` rebuilds the strategy and replays the history, which gives
    back the same mean, covariance, step size and random stream.

    Example:
        >>> optimizer = CMAES(3, seed=0)
        >>> batch = optimizer.propose(4)  # linear formulas w1*g1 + w2*g2 + w3*g3
        >>> stats = optimizer.update(batch, [0.1, 0.2, 0.3, 0.4])  # a whole batch scored: told to CMA-ES
        >>> len(batch), stats["told"], "mean_formula" in stats
        (4, 4, True)
        >>> resumed = CMAES(3, seed=0)
        >>> resumed.load_state_dict(optimizer.state_dict())  # exact resume: the ask/tell history is replayed
        >>> resumed.propose(4) == optimizer.propose(4)
        True
    """

    name = "cmaes"

    def __init__(self, num_variables: int, seed: int = 0, *, bound: float = 2.0, sigma0: float = 0.5,
                 x0: Sequence[float] | None = None, popsize: int | None = None,
                 grammar: Any = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                 constants: Sequence[str] | None = None) -> None:
        # grammar / max_tokens / constants are accepted for a uniform make_optimizer call and unused:
        # CMA-ES writes linear formulas directly.
        super().__init__(num_variables, seed)
        if bound <= 0:
            raise ValueError(f"bound must be > 0, got {bound!r}")
        self.bound = float(bound)
        self.sigma0 = float(sigma0)
        self.x0 = list(map(float, x0)) if x0 is not None else [1.0] + [0.0] * (self.num_variables - 1)
        if len(self.x0) != self.num_variables:
            raise ValueError(f"x0 has {len(self.x0)} weights, need num_variables={self.num_variables}")
        self.popsize = popsize
        self.es = None
        self._es_seed: int | None = None
        self._es_popsize: int | None = None
        #: ask/tell history of ``self.es``: ``["ask"]`` or ``["tell", solutions, values]``, in order
        self._events: list[list[Any]] = []
        self._queue: list[list[float]] = []       # asked, not yet proposed
        self._proposed: dict[str, list[list[float]]] = {}  # formula -> weight vectors proposed as it
        self._told_x: list[list[float]] = []      # scored, waiting for a full batch
        self._told_f: list[float] = []

    def _make_es(self, popsize: int):
        """Draw the strategy's seed from ``self.rng`` and build it; returns the strategy."""
        self._es_seed = int(self.rng.integers(1, 2**31 - 1))
        self._es_popsize = max(2, int(popsize))
        self._events = []
        return self._build_es(self._es_seed, self._es_popsize)

    def _build_es(self, seed: int, popsize: int):
        import cma

        # CMA-ES needs >= 2 dimensions; with K = 1 a dummy second coordinate is searched and ignored.
        x0 = self.x0 if self.num_variables > 1 else self.x0 + [0.0]
        # its own generator (same stream as np.random.seed(seed) would give); seed=nan: cma seeds nothing
        randn = np.random.RandomState(seed).randn
        options = {"bounds": [-self.bound, self.bound], "popsize": popsize, "randn": randn,
                   "seed": float("nan"), "verbose": -9}
        return cma.CMAEvolutionStrategy(x0, self.sigma0, options)

    def _ask(self) -> list[list[float]]:
        self._events.append(["ask"])
        return [list(map(float, x)) for x in self.es.ask()]

    def _tell(self, solutions: list[list[float]], values: list[float]) -> None:
        self._events.append(["tell", [list(map(float, x)) for x in solutions], [float(f) for f in values]])
        self.es.tell([np.asarray(x) for x in solutions], list(values))

    def propose(self, n: int) -> list[str]:
        """Return ``n`` linear formulas from CMA-ES ask() batches."""
        n = int(n)
        if self.es is None:
            self.es = self._make_es(self.popsize or n)
        texts = []
        for _ in range(n):
            if not self._queue:
                self._queue = self._ask()
            x = self._queue.pop(0)
            text = linear_formula(x[:self.num_variables])
            self._proposed.setdefault(text, []).append(x)
            texts.append(text)
        return texts

    def _learn(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        for text, score in zip(expressions, scores):
            xs = self._proposed.get(text)
            if not xs:
                logger.warning("CMA-ES update: %r was not proposed by this optimizer; ignored", text)
                continue
            self._told_x.append(xs.pop(0))
            self._told_f.append(-float(score))
            if not xs:
                del self._proposed[text]
        stats: dict[str, Any] = {"told": 0}
        popsize = self.es.popsize if self.es is not None else 0
        while self.es is not None and len(self._told_x) >= popsize:
            self._tell(self._told_x[:popsize], self._told_f[:popsize])
            self._told_x, self._told_f = self._told_x[popsize:], self._told_f[popsize:]
            stats["told"] += popsize
        if self.es is not None:
            stats.update(sigma=float(self.es.sigma),
                         mean_formula=linear_formula(list(self.es.mean)[:self.num_variables]))
        return stats

    def _extra_state(self) -> dict[str, Any]:
        es = None
        if self.es is not None:
            es = {"seed": self._es_seed, "popsize": self._es_popsize, "x0": self.x0, "sigma0": self.sigma0,
                  "bound": self.bound, "events": self._events,
                  "mean": [float(v) for v in self.es.mean], "sigma": float(self.es.sigma)}
        return {"es": es, "queue": self._queue, "proposed": self._proposed,
                "told_x": self._told_x, "told_f": self._told_f, "popsize": self.popsize}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        es = extra.get("es")
        if es is not None and not isinstance(es, dict):
            raise ValueError(f"state['extra']['es'] is not in the safe format (a {type(es).__name__}, as the old "
                             "pickled CMA-ES state was); it was not loaded: a CMA-ES checkpoint holds its "
                             "ask/tell history as numbers. Start a new run directory")
        self.x0 = [float(v) for v in (es or {}).get("x0", self.x0)]
        self.sigma0 = float((es or {}).get("sigma0", self.sigma0))
        self.bound = float((es or {}).get("bound", self.bound))
        self.es, self._es_seed, self._es_popsize, self._events = None, None, None, []
        if es is not None:
            self._replay(es)
        self._queue = [list(map(float, x)) for x in extra.get("queue", [])]
        self._proposed = {k: [list(map(float, x)) for x in v] for k, v in extra.get("proposed", {}).items()}
        self._told_x = [list(map(float, x)) for x in extra.get("told_x", [])]
        self._told_f = [float(f) for f in extra.get("told_f", [])]
        self.popsize = extra.get("popsize", self.popsize)

    def _replay(self, es: dict[str, Any]) -> None:
        """Rebuild the strategy from its seed and replay its ask/tell history."""
        self._es_seed, self._es_popsize = int(es["seed"]), int(es["popsize"])
        self.es = self._build_es(self._es_seed, self._es_popsize)
        for event in es.get("events", []):
            if event[0] == "ask":
                self._ask()
            elif event[0] == "tell" and len(event) == 3:
                self._tell([list(map(float, x)) for x in event[1]], [float(f) for f in event[2]])
            else:
                raise ValueError(f"CMA-ES state: unknown history event {event[:1]!r}; expected 'ask' or 'tell'")
        mean = es.get("mean")
        if mean is not None and not np.allclose(self.es.mean, mean, rtol=1e-9, atol=1e-12):
            logger.warning("CMA-ES resume: replaying the ask/tell history gave mean %s, the checkpoint says %s "
                           "(another cma version?); continuing from the replayed state",
                           list(self.es.mean), mean)


class FixedFormula(MetaOptimizer):
    """Always proposes the same formula (``n`` copies); the ``outcome`` and ``avg`` baselines.

    Example:
        >>> FixedFormula(3, formula="g1 + 0.5*g3", name="mine").propose(2)
        ['g1 + 0.5*g3', 'g1 + 0.5*g3']
    """

    def __init__(self, num_variables: int, seed: int = 0, *, formula: str | None = None,
                 name: str = "fixed", grammar: Any = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                 constants: Sequence[str] | None = None) -> None:
        # grammar / max_tokens / constants are accepted for a uniform make_optimizer call and unused.
        super().__init__(num_variables, seed)
        self.name = name
        self.formula = formula if formula is not None else "g1"

    def propose(self, n: int) -> list[str]:
        """Return ``[formula] * n``."""
        return [self.formula] * int(n)

    def _extra_state(self) -> dict[str, Any]:
        return {"formula": self.formula}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.formula = extra.get("formula", self.formula)


def outcome_optimizer(num_variables: int, seed: int = 0, **kwargs: Any) -> FixedFormula:
    """Return the ``outcome`` baseline: always ``"g1"`` (task success only).

    Example:
        >>> optimizer = outcome_optimizer(4)
        >>> optimizer.name, optimizer.propose(1)
        ('outcome', ['g1'])
    """
    return FixedFormula(num_variables, seed, formula="g1", name="outcome", **kwargs)


def avg_optimizer(num_variables: int, seed: int = 0, **kwargs: Any) -> FixedFormula:
    """Return the ``avg`` baseline: always ``"(g1 + ... + gK)/K"``.

    Example:
        >>> optimizer = avg_optimizer(4)
        >>> optimizer.name, optimizer.propose(1)
        ('avg', ['(g1 + g2 + g3 + g4)/4'])
    """
    return FixedFormula(num_variables, seed, formula=avg_formula(num_variables), name="avg", **kwargs)
