"""Multi-fidelity meta search: asynchronous successive halving (ASHA) of inner runs, without checkpoints.

Every inner run of a search starts towards the full budget (``spec.agent.total_timesteps``). At each
*rung* (default one, at 1/3 of the budget) the run compares its learning curve with the runs of the
same search that reached that rung before it; when it is clearly behind (below the top ``1/eta`` of
them), it stops training there, is still evaluated on the validation split (a real, lower-fidelity
score), and comes back with status :data:`~derl_gym.runtime.spec.STATUS_STOPPED` and
``extra["multi_fidelity"]`` saying where and why it stopped. The other runs continue to the full
budget; nothing is resumed, so no SB3 checkpoint is written or read back (SB3's zip loader can
unpickle).

**The rung metric** (:func:`rung_metric`) is the mean of the training-success curve
(``InnerResult.curve``: ``(env_steps, mean task success of the rollout's episodes)``) over the points
in ``[rung * (1 - window), rung)``: the last half of the steps before the rung by default. The inner
run computes it from its live curve, the scheduler from the stored curves of finished runs; both see
the same points (a run checks at the first step at or past the rung, before that step's rollout is
recorded, so only points strictly before the rung count).

**Thresholds** (:func:`rung_threshold`): once ``min_runs`` distinct formulas of the search have
reached a rung, a run continues past it when its metric is at least the ``ceil(n / eta)``-th largest
of theirs minus ``margin``; with fewer there is no threshold, so the first runs always go to the full
budget. The :class:`MultiFidelityScheduler` (inside the
:class:`~derl_gym.runtime.evaluator.Evaluator`) keeps those metrics and writes the thresholds to a
small JSON *board* file next to the store after every finished run; a job reads the board when it
reaches a rung (runs that start later in the same group see the runs that finished before them:
asynchronous), falling back to the thresholds of its submission when the board cannot be read. With
one worker the order of jobs, and so every decision, is deterministic; with several it depends on
which runs finish first.

**Cache.** A stopped run is stored under its own key (:func:`stopped_spec_hash`: the spec hash plus
the step it stopped at), so it never answers a full-budget look-up; a full-budget result is stored
and found as usual. A later look-up of a formula with a stopped result answers from it when the
current thresholds would stop it again (its curve up to the rung is what a retraining would produce),
and otherwise retrains it from scratch (promotion without checkpoints).

**Meta-optimizer feedback** (:func:`update_scores`, ``feedback``): best-formula selection uses only
full-budget runs (status ``"ok"``). The update receives, by default (``"censored"``), every
full-budget score plus, for each stopped run, ``min(own score, lowest full-budget score of its
group)`` (its own score when the group has no full-budget run): the scheduler learned that its curve
was behind, so it is ranked at or below every full-budget formula of the group and GRPO's
group-relative advantage pushes it down; between stopped runs their own lower-fidelity scores keep
the order. Leaving them out (``"exclude"``) would leave GRPO with only the ``1/eta`` survivors of a
group and no signal against the formulas that were stopped, which are most of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from derl_gym.runtime.spec import STATUS_OK, STATUS_STOPPED, InnerResult

logger = logging.getLogger(__name__)

__all__ = ["MultiFidelity", "StopRule", "MultiFidelityScheduler", "rung_metric", "rung_threshold",
           "stopped_spec_hash", "update_scores", "make_stop_callback", "resolve_multi_fidelity", "STATUS_STOPPED"]

#: The feedback rules for stopped runs (see the module doc).
FEEDBACK = ("censored", "exclude")


@dataclass(frozen=True)
class MultiFidelity:
    """Settings of the multi-fidelity scheduler (off unless passed; see the module doc).

    ``rungs``: fractions of ``total_timesteps`` (increasing, in (0, 1)) where a run may stop;
    ``eta``: a run continues past a rung when in the top ``1/eta`` of the runs that reached it;
    ``min_runs``: runs that must have reached a rung before it has a threshold (the first runs of a
    search always go to the full budget); ``window``: the rung metric averages the curve over the last
    ``window`` fraction of the steps before the rung; ``margin``: how far below the threshold a run must
    be to stop ("clearly behind"); ``feedback``: ``"censored"`` or ``"exclude"`` (stopped runs in the
    meta-optimizer's update).

    Example:
        >>> config = MultiFidelity()
        >>> config.rung_steps(30_000), config.eta, config.feedback
        ([10000], 3.0, 'censored')
        >>> MultiFidelity(rungs=(0.25, 0.5)).rung_steps(1000)
        [250, 500]
    """

    rungs: tuple[float, ...] = (1.0 / 3.0,)
    eta: float = 3.0
    min_runs: int = 4
    window: float = 0.5
    margin: float = 0.0
    feedback: str = "censored"

    def __post_init__(self) -> None:
        rungs = tuple(float(r) for r in self.rungs)
        object.__setattr__(self, "rungs", rungs)
        for name, kind in (("eta", float), ("min_runs", int), ("window", float), ("margin", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        if not rungs or any(not 0.0 < r < 1.0 for r in rungs) or list(rungs) != sorted(set(rungs)):
            raise ValueError(f"rungs must be increasing fractions of the budget in (0, 1), got {self.rungs!r}; "
                             "e.g. (1/3,) or (0.25, 0.5)")
        if not float(self.eta) > 1.0:
            raise ValueError(f"eta must be > 1 (keep the top 1/eta at a rung), got {self.eta!r}")
        if int(self.min_runs) < 1:
            raise ValueError(f"min_runs must be >= 1, got {self.min_runs!r}")
        if not 0.0 < float(self.window) <= 1.0:
            raise ValueError(f"window must be in (0, 1], got {self.window!r}")
        if float(self.margin) < 0.0:
            raise ValueError(f"margin must be >= 0, got {self.margin!r}")
        if self.feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {FEEDBACK}, got {self.feedback!r}")

    def rung_steps(self, total_timesteps: int) -> list[int]:
        """Return the rungs in env steps for a budget of ``total_timesteps`` (each at least 1)."""
        return [max(1, int(round(r * int(total_timesteps)))) for r in self.rungs]

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-safe dict."""
        data = asdict(self)
        data["rungs"] = list(self.rungs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MultiFidelity":
        """Rebuild settings from :meth:`to_dict` output (unknown keys raise ``TypeError``)."""
        data = dict(data)
        if "rungs" in data:
            data["rungs"] = tuple(data["rungs"])
        return cls(**data)


def resolve_multi_fidelity(value: Any) -> MultiFidelity | None:
    """Return the settings meant by ``value``: None/False -> None (off), True -> defaults, a dict ->
    :meth:`MultiFidelity.from_dict`, a :class:`MultiFidelity` as is; anything else raises ``TypeError``.

    Example:
        >>> resolve_multi_fidelity(None) is None, resolve_multi_fidelity(True) == MultiFidelity()
        (True, True)
        >>> resolve_multi_fidelity({"eta": 2}).eta
        2.0
    """
    if value is None or value is False:
        return None
    if value is True:
        return MultiFidelity()
    if isinstance(value, MultiFidelity):
        return value
    if isinstance(value, Mapping):
        return MultiFidelity.from_dict(value)
    raise TypeError(f"multi_fidelity must be None, True, a dict or a MultiFidelity, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------- metrics

def rung_metric(curve: Sequence[Sequence[float]], step: int, window: float = 0.5) -> float:
    """Return the rung metric of a learning curve at ``step``: the mean of the curve values at steps in
    ``[step * (1 - window), step)``; the last value before ``step`` when none falls in the window; 0.0
    when the curve has no point before ``step`` (no training episode finished).

    Example:
        >>> curve = [(100, 0.0), (200, 0.2), (300, 0.4), (400, 0.9)]
        >>> round(rung_metric(curve, 400), 6)      # points in [200, 400)
        0.3
        >>> rung_metric([], 100)
        0.0
    """
    lo = step * (1.0 - float(window))
    before = [(float(s), float(v)) for s, v in curve if float(s) < step]
    inside = [v for s, v in before if s >= lo]
    if inside:
        return float(statistics.fmean(inside))
    return before[-1][1] if before else 0.0


def rung_threshold(metrics: Sequence[float], eta: float, min_runs: int) -> float | None:
    """Return the value a run's rung metric must reach to continue: the ``ceil(n / eta)``-th largest of
    ``metrics`` (n of them), or None (no threshold: everyone continues) when ``n < min_runs``.

    Example:
        >>> rung_threshold([0.1, 0.5, 0.3, 0.2], eta=3, min_runs=4)   # the top ceil(4/3) = 2 continue
        0.3
        >>> rung_threshold([0.1, 0.5], eta=3, min_runs=4) is None
        True
    """
    values = sorted((float(m) for m in metrics), reverse=True)
    if len(values) < int(min_runs) or not values:
        return None
    keep = max(1, math.ceil(len(values) / float(eta)))
    return values[keep - 1]


def stopped_spec_hash(spec_hash: str, stop_step: int) -> str:
    """Return the store key's spec part for a run stopped at env step ``stop_step`` under the
    full-budget key ``spec_hash`` (distinct from it, so a stopped run never answers a full-budget look-up).

    Example:
        >>> key = stopped_spec_hash("0123456789abcdef", 10_000)
        >>> len(key), key != "0123456789abcdef", key == stopped_spec_hash("0123456789abcdef", 5_000)
        (16, True, False)
    """
    return hashlib.sha256(f"{spec_hash}|stopped@{int(stop_step)}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- stop rule

@dataclass
class StopRule:
    """What one inner job needs to stop early (plain data, travels to workers as a dict).

    ``rung_steps``: env steps of the rungs; ``thresholds``: the threshold per rung at submission (None:
    no threshold); ``board``: a JSON file with the scheduler's current thresholds, read at each rung
    (None: use ``thresholds``); ``window`` and ``margin`` as in :class:`MultiFidelity`.

    Example:
        >>> rule = StopRule(rung_steps=[400], thresholds=[0.5])
        >>> rule.decide([(200, 0.2), (300, 0.4)], 0)["stop"]
        True
        >>> StopRule.from_value(rule.to_dict()) == rule
        True
    """

    rung_steps: list[int]
    thresholds: list[float | None]
    window: float = 0.5
    margin: float = 0.0
    board: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-safe dict (what ``run_inner(stop_rule=...)`` receives)."""
        return asdict(self)

    @classmethod
    def from_value(cls, value: "StopRule | Mapping[str, Any]") -> "StopRule":
        """Return a rule from a :class:`StopRule` or its :meth:`to_dict` output."""
        if isinstance(value, StopRule):
            return value
        data = dict(value)
        return cls(rung_steps=[int(s) for s in data["rung_steps"]],
                   thresholds=[None if t is None else float(t) for t in data["thresholds"]],
                   window=float(data.get("window", 0.5)), margin=float(data.get("margin", 0.0)),
                   board=data.get("board"))

    def threshold(self, rung: int) -> float | None:
        """Return the current threshold of rung index ``rung``: the board's when it can be read and is for
        these rungs, else the one given at submission."""
        if self.board:
            try:
                data = json.loads(Path(self.board).read_text(encoding="utf-8"))
                if [int(s) for s in data.get("rung_steps", [])] == list(self.rung_steps):
                    value = data["thresholds"][rung]
                    return None if value is None else float(value)
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                logger.debug("multi-fidelity board %s unreadable; using the submission thresholds", self.board)
        return self.thresholds[rung]

    def decide(self, curve: Sequence[Sequence[float]], rung: int) -> dict[str, Any]:
        """Return the decision at rung index ``rung`` for a run whose curve so far is ``curve``:
        ``{"rung", "rung_step", "metric", "threshold", "stop"}``."""
        step = self.rung_steps[rung]
        metric = rung_metric(curve, step, self.window)
        threshold = self.threshold(rung)
        stop = threshold is not None and metric < threshold - self.margin
        return {"rung": int(rung), "rung_step": int(step), "metric": float(metric),
                "threshold": threshold, "stop": bool(stop)}


class StopTracker:
    """Checks a :class:`StopRule` as a run's env steps grow; used by the SB3 callback and the stand-in.

    :meth:`check` returns True when the run must stop now; afterwards ``stopped_at`` (env steps, or
    None) and ``decisions`` (one dict per rung passed, see :meth:`StopRule.decide`) say what happened.

    Example:
        >>> tracker = StopTracker({"rung_steps": [400], "thresholds": [0.5]})
        >>> tracker.check(300, [(200, 0.2)]), tracker.check(400, [(200, 0.2), (300, 0.4)])
        (False, True)
        >>> tracker.stopped_at
        400
    """

    def __init__(self, rule: StopRule | Mapping[str, Any]) -> None:
        self.rule = StopRule.from_value(rule)
        self.decisions: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self._next = 0

    def check(self, num_timesteps: int, curve: Sequence[Sequence[float]]) -> bool:
        """Decide every rung reached by ``num_timesteps`` not decided yet; returns True to stop."""
        while self._next < len(self.rule.rung_steps) and num_timesteps >= self.rule.rung_steps[self._next]:
            decision = self.rule.decide(curve, self._next)
            self._next += 1
            self.decisions.append(decision)
            if decision["stop"]:
                self.stopped_at = int(num_timesteps)
                return True
        return False

    def summary(self) -> dict[str, Any]:
        """Return ``extra["multi_fidelity"]`` of the run: ``stopped_at``, ``decisions``, ``rung_steps``."""
        return {"stopped_at": self.stopped_at, "decisions": list(self.decisions),
                "rung_steps": list(self.rule.rung_steps)}


_CALLBACK_CLASS = None


def make_stop_callback(tracker: StopTracker, curve_source: Any):
    """Return an SB3 callback that stops training when ``tracker`` says so; ``curve_source.curve`` is the
    training-success curve (the :class:`~derl_gym.agents.inner.trainer.SuccessCurveCallback`, which must
    run before it in the callback list).

    Example:
        >>> from types import SimpleNamespace
        >>> tracker = StopTracker(StopRule(rung_steps=[10], thresholds=[2.0]))
        >>> callback = make_stop_callback(tracker, SimpleNamespace(curve=[(5, 0.0)]))
        >>> type(callback).__name__
        'StopAtRungCallback'
    """
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from stable_baselines3.common.callbacks import BaseCallback

        class StopAtRungCallback(BaseCallback):
            """Return False from ``_on_step`` (SB3 ends ``learn``) when the stop rule says so."""

            def __init__(self, tracker: StopTracker, curve_source: Any) -> None:
                super().__init__(verbose=0)
                self.tracker = tracker
                self.curve_source = curve_source

            def _on_step(self) -> bool:
                return not self.tracker.check(int(self.num_timesteps), self.curve_source.curve)

        _CALLBACK_CLASS = StopAtRungCallback
    return _CALLBACK_CLASS(tracker, curve_source)


class StopCallbackFactory:
    """A callback factory for trainers' ``callbacks=`` argument: called with the success-curve callback,
    returns the stop callback; ``tracker`` keeps the outcome.

    Example:
        >>> from types import SimpleNamespace
        >>> factory = StopCallbackFactory({"rung_steps": [10], "thresholds": [None]})
        >>> callback = factory(SimpleNamespace(curve=[]))
        >>> factory.tracker.stopped_at is None
        True
    """

    def __init__(self, rule: StopRule | Mapping[str, Any]) -> None:
        self.tracker = StopTracker(rule)

    def __call__(self, curve_source: Any):
        return make_stop_callback(self.tracker, curve_source)


# ---------------------------------------------------------------------------------------- scheduler

def is_stopped(result: InnerResult) -> bool:
    """True when ``result`` is a run the scheduler stopped early.

    Example:
        >>> is_stopped(InnerResult("g1", "g1", 0.3, status="stopped")), is_stopped(InnerResult("g1", "g1", 0.3))
        (True, False)
    """
    return result.status == STATUS_STOPPED


def stop_step(result: InnerResult) -> int | None:
    """Return the env step at which ``result`` stopped, or None for a run that was not stopped.

    Example:
        >>> stop_step(InnerResult("g1", "g1", 0.3, status="stopped", env_steps=512))
        512
        >>> stop_step(InnerResult("g1", "g1", 0.3, env_steps=1000)) is None
        True
    """
    info = (result.extra or {}).get("multi_fidelity") or {}
    value = info.get("stopped_at")
    return int(value) if value is not None else (int(result.env_steps) if is_stopped(result) else None)


@dataclass
class MultiFidelityScheduler:
    """The rung metrics of one search's runs and the thresholds they give (see the module doc).

    ``total_timesteps`` is the full budget; ``board`` (optional) is the JSON file jobs read their current
    thresholds from, rewritten by :meth:`observe`. Thread-safe.

    Example:
        >>> scheduler = MultiFidelityScheduler(MultiFidelity(min_runs=2), total_timesteps=900)
        >>> for name, value in [("g1", 0.6), ("g2", 0.1)]:
        ...     scheduler.observe(InnerResult(name, name, value, curve=[(200, value)], env_steps=900))
        >>> scheduler.rung_steps, scheduler.thresholds()
        ([300], [0.6])
        >>> scheduler.rule().thresholds
        [0.6]
    """

    config: MultiFidelity
    total_timesteps: int
    board: str | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)   # canonical -> metric per rung reached

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.rung_steps = self.config.rung_steps(self.total_timesteps)

    def observe(self, result: InnerResult) -> None:
        """Record the rung metrics of a finished full-budget or stopped run (others are ignored) and
        rewrite the board; a formula already recorded is not counted twice."""
        if result.status not in (STATUS_OK, STATUS_STOPPED) or not result.canonical:
            return
        reached = int(result.env_steps) if result.env_steps else self.total_timesteps
        if is_stopped(result):
            reached = stop_step(result) or reached
        values = [rung_metric(result.curve, s, self.config.window) for s in self.rung_steps if reached >= s]
        with self._lock:
            if len(values) <= len(self.metrics.get(result.canonical, [])):
                return
            self.metrics[result.canonical] = values
        self.write_board()

    def thresholds(self) -> list[float | None]:
        """Return the current threshold of every rung (None: no threshold yet)."""
        with self._lock:
            per_rung = [[m[j] for m in self.metrics.values() if len(m) > j] for j in range(len(self.rung_steps))]
        return [rung_threshold(values, self.config.eta, self.config.min_runs) for values in per_rung]

    def rule(self) -> StopRule:
        """Return the stop rule for jobs submitted now."""
        return StopRule(rung_steps=list(self.rung_steps), thresholds=self.thresholds(), window=self.config.window,
                        margin=self.config.margin, board=self.board)

    def would_stop(self, result: InnerResult) -> bool:
        """True when the current thresholds stop ``result`` (a stored stopped run) at or before the rung it
        stopped at: a look-up may then answer with it instead of retraining."""
        rule = self.rule()
        rule.board = None
        reached = stop_step(result) or 0
        for j, step in enumerate(self.rung_steps):
            if step > reached:
                break
            if rule.decide(result.curve, j)["stop"]:
                return True
        return False

    def write_board(self) -> None:
        """Write the thresholds to the board file (atomically; nothing when there is no board)."""
        if not self.board:
            return
        payload = {"rung_steps": self.rung_steps, "thresholds": self.thresholds(),
                   "runs": {str(j): sum(1 for m in self.metrics.values() if len(m) > j)
                            for j in range(len(self.rung_steps))}}
        path = Path(self.board)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- feedback

def update_scores(results: Sequence[InnerResult], feedback: str | None = None) -> list[tuple[int, float]]:
    """Return ``(index, score)`` for the results that enter the meta-optimizer's update, in order.

    Full-budget runs (status ``"ok"``, finite score) always enter with their score; failed runs never.
    Stopped runs: with ``feedback=None`` (scheduler off) or ``"exclude"`` they are left out; with
    ``"censored"`` they enter with ``min(own score, lowest full-budget score of the group)`` (their own
    score when the group has no full-budget run).

    Example:
        >>> group = [InnerResult("a", "a", 0.4), InnerResult("b", "b", 0.9, status="stopped"),
        ...          InnerResult("c", "c", 0.6)]
        >>> update_scores(group, "censored")
        [(0, 0.4), (1, 0.4), (2, 0.6)]
        >>> update_scores(group, "exclude")
        [(0, 0.4), (2, 0.6)]
    """
    if feedback is not None and feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {FEEDBACK} or None, got {feedback!r}")
    full = [(i, float(r.score)) for i, r in enumerate(results) if r.ok and math.isfinite(r.score)]
    if feedback != "censored":
        return full
    floor = min((s for _, s in full), default=None)
    out = dict(full)
    for i, r in enumerate(results):
        if is_stopped(r) and math.isfinite(r.score):
            out[i] = float(r.score) if floor is None else min(float(r.score), floor)
    return sorted(out.items())
