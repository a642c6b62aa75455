"""The shipped seed formulas for DERL's cold start (``data/seed_formulas.txt``, about 200).

They are written over ``g1..g4`` (the paper's agent primitives: g1 success, g2..g4 progress over
the thirds of a trajectory). :func:`seed_formulas` adapts them to ``K`` primitives: for ``K < 4``
it keeps the formulas that only read ``g1..gK``, then adds the others with every ``gj`` (``j > K``)
renamed to ``gK`` (the last, latest-progress primitive); for ``K > 4`` it adds a copy of each formula
that reads ``g4`` with ``g4`` renamed to ``gK`` (the last primitive), so the extra variables are
covered too. A grammar, when given, filters to the formulas it can write.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any

_VAR = re.compile(r"g(\d+)")


@lru_cache(maxsize=1)
def _shipped() -> tuple[str, ...]:
    text = resources.files("derl_gym.agents.meta").joinpath("data/seed_formulas.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def shipped_seed_formulas() -> list[str]:
    """Return the shipped seed formulas as written (over g1..g4).

    Example:
        >>> from derl_gym.agents.meta.seed_formulas import shipped_seed_formulas
        >>> formulas = shipped_seed_formulas()
        >>> formulas[:3], all("g5" not in formula for formula in formulas)
        (['g1', 'g1 + 0.1*g2', 'g1 + 0.25*g2'], True)
    """
    return list(_shipped())


def seed_formulas(num_variables: int, grammar: Any = None) -> list[str]:
    """Return the seed formulas adapted to ``g1..g{num_variables}`` (see the module docstring).

    Duplicates are dropped; with a ``grammar``, only the formulas it can write are kept.

    Raises:
        ValueError: ``num_variables < 1``.

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.seed_formulas import seed_formulas
        >>> two = seed_formulas(2)  # g3/g4 folded onto g2
        >>> two[:4], any("g3" in formula for formula in two)
        (['g1', 'g1 + 0.1*g2', 'g1 + 0.25*g2', 'g1 + 0.5*g2'], False)
        >>> grammar = make_grammar(4, max_tokens=8)
        >>> all(grammar.fits(formula) for formula in seed_formulas(4, grammar=grammar))
        True
    """
    k = int(num_variables)
    if k < 1:
        raise ValueError(f"num_variables must be >= 1, got {num_variables!r}")
    out: list[str] = []
    for formula in _shipped():
        used = {int(m) for m in _VAR.findall(formula)}
        if max(used) <= k:
            out.append(formula)
        elif k < 4:
            out.append(_VAR.sub(lambda m: f"g{min(int(m.group(1)), k)}", formula))
        if k > 4 and 4 in used:
            out.append(_VAR.sub(lambda m: f"g{k}" if m.group(1) == "4" else m.group(0), formula))
    seen: set[str] = set()
    unique = [f for f in out if not (f in seen or seen.add(f))]
    if grammar is not None:
        unique = [f for f in unique if grammar.fits(f)]
    return unique
