"""Meta-optimizers: they write Meta-Reward formulas and learn from the inner loop's scores.

``make_optimizer(name, num_variables, seed=0, **kwargs)`` builds one by name:

==============  ==========================================================================
``derl``        DERL: GRPO on a small autoregressive token policy (grammar-masked decoding)
``derl-pop``    DERL whose evolve loop warm-starts inner runs (``warm_start_inner = True``)
``random``      uniform masked sampling from the grammar
``evolution``   genetic algorithm on formula trees (tournament, crossover, mutation, elitism)
``cmaes``       CMA-ES over the weights of ``w1*g1 + ... + wK*gK``
``outcome``     always ``g1``
``avg``         always ``(g1 + ... + gK)/K``
==============  ==========================================================================
"""

from __future__ import annotations

from typing import Any, Callable

from derl_gym.agents.meta.base import (
    GrammarOptimizer,
    MetaOptimizer,
    avg_formula,
    default_seed_formulas,
    make_grammar,
)
from derl_gym.agents.meta.baselines import (
    CMAES,
    Evolution,
    FixedFormula,
    RandomSearch,
    avg_optimizer,
    linear_formula,
    outcome_optimizer,
)


def _derl(num_variables: int, seed: int = 0, **kwargs: Any) -> MetaOptimizer:
    from derl_gym.agents.meta.derl import DERL

    return DERL(num_variables, seed, **kwargs)


def _derl_pop(num_variables: int, seed: int = 0, **kwargs: Any) -> MetaOptimizer:
    from derl_gym.agents.meta.derl import DERLPop

    return DERLPop(num_variables, seed, **kwargs)


#: name -> factory ``(num_variables, seed=0, **kwargs) -> MetaOptimizer``, in the paper's order. The one
#: list of method names: the CLI, ``compare`` and the benchmarks read :data:`ALL_METHODS` from it.
OPTIMIZERS: dict[str, Callable[..., MetaOptimizer]] = {
    "derl": _derl,
    "derl-pop": _derl_pop,
    "evolution": Evolution,
    "random": RandomSearch,
    "cmaes": CMAES,
    "outcome": outcome_optimizer,
    "avg": avg_optimizer,
}
#: Every method ``compare`` and the CLI know (the keys of :data:`OPTIMIZERS`).
ALL_METHODS: tuple[str, ...] = tuple(OPTIMIZERS)
#: Methods whose formula is fixed (one training per seed is all they need).
FIXED_METHODS: tuple[str, ...] = ("outcome", "avg")
#: Methods with a token policy (DERL's GRPO): they take ``cold_start`` and ``meta_model``.
COLD_START_METHODS: tuple[str, ...] = ("derl", "derl-pop")


def make_optimizer(name: str, num_variables: int, seed: int = 0, **kwargs: Any) -> MetaOptimizer:
    """Return a new meta-optimizer ``name`` for formulas over ``g1..g{num_variables}``.

    Args:
        name: one of :data:`ALL_METHODS` (case and ``_``/``-`` do not matter).
        num_variables: K, the number of primitives.
        seed: the optimizer's seed.
        **kwargs: go to the optimizer's constructor (e.g. ``lr``, ``kl_coef``, ``cold_start`` for
            DERL; ``tournament_size`` for evolution; ``sigma0`` for CMA-ES; ``grammar``/``max_tokens``/
            ``constants`` for every optimizer).

    Raises:
        ValueError: an unknown ``name`` (the message lists the known optimizers).

    Example:
        >>> from derl_gym.agents.meta import make_optimizer
        >>> optimizer = make_optimizer("random", 4, seed=1, max_tokens=12)
        >>> optimizer.name, len(optimizer.propose(3))
        ('random', 3)
        >>> make_optimizer("Outcome", 4).propose(1)  # case and _/- do not matter
        ['g1']
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown meta-optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](num_variables, seed, **kwargs)


def __getattr__(attr: str):  # lazy: importing DERL pulls in torch
    if attr in ("DERL", "DERLPop"):
        from derl_gym.agents.meta import derl

        return getattr(derl, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "ALL_METHODS", "CMAES", "COLD_START_METHODS", "DERL", "DERLPop", "Evolution", "FIXED_METHODS", "FixedFormula",
    "GrammarOptimizer", "MetaOptimizer", "OPTIMIZERS", "RandomSearch", "avg_formula", "avg_optimizer", "default_seed_formulas",
    "linear_formula", "make_grammar", "make_optimizer", "outcome_optimizer",
]
