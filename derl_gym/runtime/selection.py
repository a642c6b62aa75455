"""The search score: which number of a finished inner run the meta-optimizer learns from and selects by.

The paper scores a formula by the inner agent's validation success (``"validation"``, the default). On
``alfworld-l2-fast`` one run's validation on 48 episodes is mostly seed noise (benchmarks/results/
meta_noise.md: formula variance 0.000 against 0.016 within a formula; Spearman 0.19 with test L2 over
15 runs), while the mean training success over the last quarter of the learning curve separates
formulas better (signal-to-noise 0.71; Spearman 0.59 with test L2 on the same runs). It costs no extra
training: the curve is recorded anyway. ``"curve-tail"`` uses it alone, ``"validation+curve-tail"``
the mean of both. Both read only training and validation data, never a test split.

The store always keeps the validation score (``InnerResult.score`` as trained); the search score is
applied to the copies the :class:`~derl_gym.runtime.evaluator.Evaluator` returns, with the validation
score kept in ``extra["validation_score"]``, so one store serves searches under every choice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from derl_gym.runtime.spec import InnerResult

#: The accepted search scores, the paper's first.
SELECTION_SCORES = ("validation", "curve-tail", "validation+curve-tail")
#: Share of the learning curve's last points that ``curve-tail`` averages.
CURVE_TAIL_FRACTION = 0.25


def check_selection_score(name: str) -> str:
    """Return ``name`` when it is a known search score, else raise ``ValueError`` naming the choices.

    Example:
        >>> check_selection_score("curve-tail")
        'curve-tail'
        >>> check_selection_score("test")
        Traceback (most recent call last):
        ...
        ValueError: unknown selection score 'test'; choose from validation, curve-tail, validation+curve-tail
    """
    if name not in SELECTION_SCORES:
        raise ValueError(f"unknown selection score {name!r}; choose from {', '.join(SELECTION_SCORES)}")
    return name


def curve_tail(curve: Sequence[Sequence[float]], fraction: float = CURVE_TAIL_FRACTION) -> float | None:
    """Return the mean success of the last ``fraction`` of a learning curve's points (at least one), or
    None when the curve is empty or holds no finite value.

    Args:
        curve: ``(env_step, training_success)`` pairs in step order, as :class:`InnerResult` records them.
        fraction: share of the last points to average, in (0, 1].

    Example:
        >>> curve_tail([(100, 0.0), (200, 0.2), (300, 0.4), (400, 0.6)])
        0.6
        >>> curve_tail([(100, 0.0), (200, 0.5), (300, 1.0)], fraction=0.5)
        0.75
        >>> curve_tail([]) is None
        True
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    values = [float(point[1]) for point in curve if len(point) >= 2 and math.isfinite(float(point[1]))]
    if not values:
        return None
    tail = values[len(values) - max(1, int(round(len(values) * float(fraction)))):]
    return sum(tail) / len(tail)


def selection_score(result: InnerResult, how: str = "validation") -> float:
    """Return the search score of a finished run: its validation score, its curve tail, or their mean.

    A run without a learning curve (a trainer that records none) keeps its validation score; a failed
    run keeps its score (0). Per-seed curves of an aggregated result are not re-read: its ``curve`` is
    the first finished seed's, so with several seeds per formula apply this per seed (the evaluator
    does).

    Example:
        >>> from derl_gym.runtime.spec import InnerResult
        >>> run = InnerResult(expression="g1", canonical="g1", score=0.5, curve=[(1, 0.1), (2, 0.3)])
        >>> selection_score(run), selection_score(run, "curve-tail"), selection_score(run, "validation+curve-tail")
        (0.5, 0.3, 0.4)
    """
    check_selection_score(how)
    if how == "validation" or result.status not in ("ok", "stopped"):
        return float(result.score)
    tail = curve_tail(result.curve)
    if tail is None:
        return float(result.score)
    return tail if how == "curve-tail" else (float(result.score) + tail) / 2.0


def rescore(result: InnerResult, how: str = "validation") -> InnerResult:
    """Return ``result`` with ``score`` set to its search score (:func:`selection_score`); for anything but
    ``"validation"`` a copy whose ``extra`` keeps ``validation_score`` and names ``selection_score``.

    Example:
        >>> from derl_gym.runtime.spec import InnerResult
        >>> run = InnerResult(expression="g1", canonical="g1", score=0.5, curve=[(1, 0.2)])
        >>> scored = rescore(run, "curve-tail")
        >>> scored.score, scored.extra["validation_score"], run.score
        (0.2, 0.5, 0.5)
    """
    if check_selection_score(how) == "validation":
        return result
    extra = dict(result.extra or {})
    extra.setdefault("validation_score", float(result.score))
    extra["selection_score"] = how
    return dataclasses.replace(result, score=selection_score(result, how), extra=extra)
