"""Atomic reward primitives g1..gK and the generic segment primitives of the DERL paper.

A :class:`Primitive` is a named, bounded function of a finished (or partial) :class:`Trajectory`.
A :class:`PrimitiveSet` is ordered: position ``i`` is variable ``g{i+1}`` of a Meta-Reward and
each primitive's name works as an alias for its variable.

Step scorers map one :class:`Step` to a score in [0, 1]; :func:`segment_primitives` turns a step
scorer into the paper's three segment primitives (mean step score over the first, middle and last
third of the trajectory). Envs publish what the scorers read in ``info``:

- ``info["progress"]``: float in [0, 1], how much this step advanced the task (planner plan got
  shorter, simulator score rose ...);
- ``info["valid_action"]``: the action was admissible / understood;
- ``info["state_changed"]``: the action changed the world state;
- ``info["won"]``: the task is solved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

PrimitiveFunction = Callable[["Trajectory"], float]
StepScorer = Callable[["Step"], float]


@dataclass
class Step:
    """One transition: the action taken, what came back, and the ``info`` before and after.

    Attributes:
        action: the action sent to the env.
        observation: the observation that came back.
        reward: the env's own (task) reward.
        terminated, truncated: the env's end flags.
        info: the ``info`` after the step; ``prev_info``: the one before it.

    Example:
        >>> from derl_gym.rewards import Step
        >>> Step("go to desk 1", "You arrive at desk 1.", 0.0, False, False, {"progress": 0.5}).info["progress"]
        0.5
    """

    action: Any
    observation: Any
    reward: float
    terminated: bool
    truncated: bool
    info: Mapping[str, Any]
    prev_info: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Trajectory:
    """An episode so far: the reset observation/info and the list of steps taken since.

    Attributes:
        initial_observation, initial_info: what ``reset`` returned.
        steps: the :class:`Step` objects taken since.

    Example:
        >>> from derl_gym.rewards import Step, Trajectory
        >>> trajectory = Trajectory("start", {})
        >>> trajectory.append(Step("a", "o1", 0.0, False, False, {}))
        >>> trajectory.append(Step("b", "o2", 1.0, True, False, {"won": True}))
        >>> len(trajectory), trajectory.done, trajectory.task_return, trajectory.success
        (2, True, 1.0, True)
    """

    initial_observation: Any = None
    initial_info: Mapping[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def done(self) -> bool:
        """True when the last step terminated or truncated the episode."""
        return bool(self.steps) and (self.steps[-1].terminated or self.steps[-1].truncated)

    @property
    def task_return(self) -> float:
        """Sum of the env's own (task) rewards."""
        return float(sum(step.reward for step in self.steps))

    @property
    def success(self) -> bool:
        """True when the last step reports ``won`` or the task reward reached 1."""
        if not self.steps:
            return False
        last = self.steps[-1]
        return bool(last.info.get("won", False)) or float(last.reward) >= 1.0

    def append(self, step: Step) -> None:
        """Add a step at the end."""
        self.steps.append(step)


def play_episode(env: Any, policy: Callable[[Any, Mapping[str, Any], int], Any], *, max_steps: int | None = None,
                 **reset_kwargs: Any) -> Trajectory:
    """Play one episode of ``env`` with ``policy`` and return it as a :class:`Trajectory`: the one
    episode loop of the package (:func:`rollout` and the inner trainers' evaluation use it).

    Args:
        env: a Gymnasium env.
        policy: ``policy(observation, info, t)`` gets the latest observation and ``info`` and the
            step index and returns the action, or ``None`` to stop early.
        max_steps: the episode also ends after this many steps (it ends anyway when the env
            terminates or truncates).
        **reset_kwargs: ``seed=``, ``options=`` for ``env.reset``.

    Returns:
        The episode as a :class:`Trajectory`.

    Example:
        >>> import gymnasium as gym
        >>> from derl_gym.rewards import play_episode
        >>> trajectory = play_episode(gym.make("CartPole-v1"), lambda obs, info, t: int(obs[2] > 0), seed=0)
        >>> len(trajectory) > 20, trajectory.done
        (True, True)
    """
    observation, info = env.reset(**reset_kwargs)
    trajectory = Trajectory(initial_observation=observation, initial_info=info)
    t = 0
    while max_steps is None or t < max_steps:
        action = policy(observation, info, t)
        if action is None:
            break
        prev_info = info
        observation, reward, terminated, truncated, info = env.step(action)
        trajectory.append(Step(action, observation, float(reward), bool(terminated), bool(truncated), info,
                               prev_info))
        t += 1
        if terminated or truncated:
            break
    return trajectory


def rollout(env: Any, choose_action: Callable[[Mapping[str, Any], int], Any], *, max_steps: int | None = None,
            **reset_kwargs: Any) -> Trajectory:
    """Play one episode of ``env`` and return it as a :class:`Trajectory`: :func:`play_episode` for a
    policy that reads only ``info``, ``choose_action(info, t)`` (the action, or ``None`` to stop early);
    ``max_steps`` and ``reset_kwargs`` (``seed=``, ``options=``) as there.

    Useful for computing primitive values (``PrimitiveSet.compute``) on a policy's episodes without
    the reward wrapper.

    Example:
        >>> import gymnasium as gym
        >>> from derl_gym.rewards import Primitive, PrimitiveSet, rollout
        >>> trajectory = rollout(gym.make("CartPole-v1"), lambda info, t: t % 2, seed=0, max_steps=5)
        >>> length = Primitive("length", "steps / 10", lambda traj: len(traj) / 10)
        >>> len(trajectory), PrimitiveSet([length]).compute(trajectory)
        (5, array([0.5]))
    """
    return play_episode(env, lambda observation, info, t: choose_action(info, t), max_steps=max_steps,
                        **reset_kwargs)


@dataclass(frozen=True)
class Primitive:
    """A named atomic reward: a bounded function of a :class:`Trajectory`.

    Attributes:
        name: an identifier (it aliases the primitive's variable ``gK`` in formulas; not ``g<digits>``).
        description: what it measures (shown to meta-optimizers and in reports).
        function: ``function(trajectory) -> float``.
        kind: ``"episode"`` (a function of the whole trajectory, e.g. success) or ``"step"`` (an
            aggregate of per-step scores, e.g. a segment mean).
        bounds: ``(low, high)``; :meth:`__call__` clips into it and maps non-finite values to ``low``.

    Raises:
        ValueError: for a name that is not an identifier or clashes with ``g1..gK``, an unknown
            kind, or ``low >= high``.

    Example:
        >>> from derl_gym.rewards import Primitive, Trajectory
        >>> steps = Primitive("length", "episode length / 10", lambda traj: len(traj) / 10)
        >>> steps(Trajectory())
        0.0
        >>> Primitive("big", "always 5", lambda traj: 5.0)(Trajectory())   # clipped into (0, 1)
        1.0
    """

    name: str
    description: str
    function: PrimitiveFunction
    kind: str = "episode"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"primitive name {self.name!r} must be an identifier (letters, digits, _)")
        if re.fullmatch(r"g\d+", self.name):
            raise ValueError(f"primitive name {self.name!r} clashes with the positional variables g1..gK")
        if self.kind not in ("episode", "step"):
            raise ValueError(f"primitive kind must be 'episode' or 'step', got {self.kind!r}")
        low, high = self.bounds
        if not low < high:
            raise ValueError(f"primitive bounds must satisfy low < high, got {self.bounds!r}")

    def __call__(self, trajectory: Trajectory) -> float:
        """Return the primitive's value on ``trajectory``, clipped into ``bounds`` (non-finite: the lower bound)."""
        value = float(self.function(trajectory))
        low, high = self.bounds
        if not np.isfinite(value):
            return low
        return float(min(max(value, low), high))


class PrimitiveSet:
    """An ordered set of primitives; position ``i`` is Meta-Reward variable ``g{i+1}``.

    Args:
        primitives: the primitives, in variable order.
        name: the set's name (shown in reports; env defaults such as ``"agent:progress"``).

    Raises:
        ValueError: for an empty set or duplicate names.

    Example:
        >>> from derl_gym.rewards import Trajectory, agent_primitives
        >>> primitives = agent_primitives()
        >>> primitives
        PrimitiveSet('agent:progress', ['success', 'progress_first', 'progress_middle', 'progress_last'])
        >>> primitives.variables, primitives.index("progress_last"), primitives["g1"].name
        (['g1', 'g2', 'g3', 'g4'], 3, 'success')
        >>> primitives.compute(Trajectory())
        array([0., 0., 0., 0.])
        >>> print(primitives.describe().splitlines()[0])
        g1 (success, episode, [0, 1]): 1 if the task was solved (info['won'] or task reward 1), else 0
    """

    def __init__(self, primitives: Iterable[Primitive], name: str = "primitives") -> None:
        self._primitives = tuple(primitives)
        self.name = name
        if not self._primitives:
            raise ValueError("a PrimitiveSet needs at least one primitive")
        names = [p.name for p in self._primitives]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate primitive names: {duplicates}")
        self._index = {n: i for i, n in enumerate(names)}
        self._index.update({f"g{i + 1}": i for i in range(len(names))})

    def __len__(self) -> int:
        return len(self._primitives)

    def __iter__(self):
        return iter(self._primitives)

    def __getitem__(self, key: int | str) -> Primitive:
        """Return a primitive by position, ``"g3"`` or name."""
        if isinstance(key, (int, np.integer)):
            return self._primitives[int(key)]
        return self._primitives[self.index(key)]

    def index(self, key: str) -> int:
        """Return the 0-based position of ``"gK"`` or a primitive name; raises ``KeyError``."""
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"unknown primitive {key!r}; known: {', '.join(self.variables)} "
                           f"or {', '.join(self.names)}") from None

    @property
    def names(self) -> list[str]:
        """The primitives' names, in order."""
        return [p.name for p in self._primitives]

    @property
    def variables(self) -> list[str]:
        """The positional variable names ``["g1", ..., "gK"]``."""
        return [f"g{i + 1}" for i in range(len(self._primitives))]

    @property
    def aliases(self) -> dict[str, str]:
        """Map each primitive name to its positional variable (``{"success": "g1", ...}``)."""
        return {p.name: f"g{i + 1}" for i, p in enumerate(self._primitives)}

    @property
    def bounds(self) -> np.ndarray:
        """Array ``[K, 2]`` of each primitive's (low, high) bounds."""
        return np.array([p.bounds for p in self._primitives], dtype=float)

    def compute(self, trajectory: Trajectory) -> np.ndarray:
        """Compute every primitive on a trajectory.

        Returns:
            A float64 array ``[K]``: ``g1..gK`` on ``trajectory``.
        """
        return np.array([p(trajectory) for p in self._primitives], dtype=np.float64)

    def describe(self) -> str:
        """Return a text listing ``gK (name, kind, [low, high]): description`` one per line."""
        lines = []
        for i, p in enumerate(self._primitives):
            low, high = p.bounds
            lines.append(f"g{i + 1} ({p.name}, {p.kind}, [{low:g}, {high:g}]): {p.description}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PrimitiveSet({self.name!r}, {self.names})"


# --------------------------------------------------------------------------- step scorers

def progress_score(step: Step) -> float:
    """Return ``info["progress"]`` clipped to [0, 1] (0 when the env does not report it).

    Example:
        >>> from derl_gym.rewards.primitives import Step, progress_score
        >>> progress_score(Step("heat pot", "", 0.0, False, False, {"progress": 1.5})), progress_score(Step("x", "", 0.0, False, False, {}))
        (1.0, 0.0)
    """
    return float(np.clip(float(step.info.get("progress", 0.0) or 0.0), 0.0, 1.0))


def valid_score(step: Step) -> float:
    """Return 1.0 when the action was admissible and changed the state, else 0.0.

    Example:
        >>> from derl_gym.rewards.primitives import Step, valid_score
        >>> valid_score(Step("open fridge", "", 0.0, False, False, {"valid_action": True, "state_changed": True}))
        1.0
        >>> valid_score(Step("look", "", 0.0, False, False, {"valid_action": True, "state_changed": False}))
        0.0
    """
    return float(bool(step.info.get("valid_action", False)) and bool(step.info.get("state_changed", True)))


_TAG_RE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.S | re.I)
           for tag in ("planning", "explore", "reflection", "action")}
_EXPLORE_VERBS = ("go to", "open", "look", "examine", "inventory", "teleport", "focus")


def tags_score(step: Step) -> float:
    """RLVMR-style reasoning-tag score for a language-model agent's action text.

    The action must carry exactly one ``<action>...</action>``; the reasoning tag that precedes it
    must fit what the action did: ``<planning>`` on the first step or when progress was made,
    ``<explore>`` when the action gathered information (go to / open / look / examine) without
    progress, ``<reflection>`` right after an invalid action. Returns 1.0 when it fits, 0.5 when the
    action is well-formed but the reasoning tag does not fit or is missing, 0.0 when the text has no
    ``<action>`` tag or the action was invalid.

    Example:
        >>> from derl_gym.rewards.primitives import Step, tags_score
        >>> action = "<explore>Where is the mug?</explore><action>open cabinet 1</action>"
        >>> tags_score(Step(action, "", 0.0, False, False, {"valid_action": True, "progress": 0.0}, {"step": 3}))
        1.0
        >>> tags_score(Step("open cabinet 1", "", 0.0, False, False, {"valid_action": True}))  # no <action> tag
        0.0
    """
    text = step.action if isinstance(step.action, str) else ""
    actions = _TAG_RE["action"].findall(text)
    if len(actions) != 1 or not step.info.get("valid_action", False):
        return 0.0
    command = actions[0].strip().lower()
    first_step = not step.prev_info or "step" not in step.prev_info or step.prev_info.get("step", 0) == 0
    after_invalid = step.prev_info.get("valid_action", True) is False
    progressed = progress_score(step) > 0.0
    fits = {
        "planning": first_step or progressed,
        "explore": command.startswith(_EXPLORE_VERBS) and not progressed,
        "reflection": after_invalid,
    }
    present = [tag for tag in fits if _TAG_RE[tag].search(text)]
    if not present:
        return 0.5
    return 1.0 if any(fits[tag] for tag in present) else 0.5


STEP_SCORERS: dict[str, StepScorer] = {
    "progress": progress_score,
    "valid": valid_score,
    "tags": tags_score,
}

STEP_SCORER_DESCRIPTIONS: dict[str, str] = {
    "progress": "the step advanced the task (info['progress'])",
    "valid": "the action was admissible and changed the state",
    "tags": "RLVMR reasoning tag (<planning>/<explore>/<reflection>) fits what the <action> did",
}


def get_step_scorer(scorer: str | StepScorer) -> StepScorer:
    """Return a step scorer by name (``progress``, ``valid``, ``tags``) or pass a callable through.

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> from derl_gym.rewards.primitives import Step, get_step_scorer
        >>> get_step_scorer("progress")(Step("go", "", 0.0, False, False, {"progress": 0.25}))
        0.25
    """
    if callable(scorer):
        return scorer
    try:
        return STEP_SCORERS[scorer]
    except KeyError:
        raise ValueError(f"unknown step scorer {scorer!r}; choose one of {sorted(STEP_SCORERS)} "
                         "or pass a callable Step -> float") from None


# ------------------------------------------------------------------------ segment primitives

SEGMENTS = ("first", "middle", "last")


def segment_bounds(length: int, segment: str) -> tuple[int, int]:
    """Return ``[start, stop)`` step indices of the first, middle or last third of ``length`` steps.

    Thirds use ``round(length * k / 3)`` boundaries; a trajectory shorter than three steps gives
    every segment at least its nearest step so that no segment is silently empty when steps exist.

    Raises:
        ValueError: for a segment other than ``first``, ``middle``, ``last``.

    Example:
        >>> from derl_gym.rewards.primitives import segment_bounds
        >>> [segment_bounds(7, s) for s in ("first", "middle", "last")]
        [(0, 2), (2, 5), (5, 7)]
        >>> segment_bounds(1, "last")
        (0, 1)
    """
    if segment not in SEGMENTS:
        raise ValueError(f"segment must be one of {SEGMENTS}, got {segment!r}")
    if length <= 0:
        return 0, 0
    k = SEGMENTS.index(segment)
    start, stop = round(length * k / 3), round(length * (k + 1) / 3)
    if stop <= start:  # short trajectory: give the segment the step it falls on
        start = min(int(length * k / 3), length - 1)
        stop = start + 1
    return start, stop


def segment_mean(trajectory: Trajectory, scorer: StepScorer, segment: str) -> float:
    """Return the mean of ``scorer`` over one third of the trajectory (0.0 when it has no steps).

    Example:
        >>> from derl_gym.rewards.primitives import Step, Trajectory, progress_score, segment_mean
        >>> trajectory = Trajectory(steps=[Step(i, "", 0.0, False, False, {"progress": p}) for i, p in enumerate([1, 0, 0, 0, 1, 1])])
        >>> [segment_mean(trajectory, progress_score, segment) for segment in ("first", "middle", "last")]
        [0.5, 0.0, 1.0]
    """
    start, stop = segment_bounds(len(trajectory.steps), segment)
    if stop <= start:
        return 0.0
    return float(np.mean([scorer(step) for step in trajectory.steps[start:stop]]))


def segment_primitives(scorer: str | StepScorer = "progress", prefix: str | None = None,
                       description: str | None = None) -> list[Primitive]:
    """Return the paper's three segment primitives (mean step score over each third) for one step scorer.

    Args:
        scorer: a step scorer name (``progress``, ``valid``, ``tags``) or a callable ``Step -> float``.
        prefix: the names' prefix (default: the scorer's name).
        description: what the step score measures (default: the scorer's description).

    Returns:
        The primitives ``{prefix}_first``, ``{prefix}_middle``, ``{prefix}_last`` (kind ``"step"``).

    Example:
        >>> from derl_gym.rewards import Step, Trajectory, segment_primitives
        >>> first, middle, last = segment_primitives("progress")
        >>> trajectory = Trajectory(steps=[Step(i, "", 0.0, False, False, {"progress": p})
        ...                                for i, p in enumerate([1.0, 0.0, 0.0, 0.5, 0.5, 0.0])])
        >>> first.name, first(trajectory), middle(trajectory), last(trajectory)
        ('progress_first', 0.5, 0.25, 0.25)
    """
    fn = get_step_scorer(scorer)
    label = prefix or (scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "step"))
    what = description or (STEP_SCORER_DESCRIPTIONS.get(scorer, label) if isinstance(scorer, str) else label)
    return [
        Primitive(
            name=f"{label}_{segment}",
            description=f"mean step score over the {segment} third of the trajectory; step score: {what}",
            function=(lambda traj, _seg=segment: segment_mean(traj, fn, _seg)),
            kind="step",
        )
        for segment in SEGMENTS
    ]


def success_primitive(description: str = "1 if the task was solved (info['won'] or task reward 1), else 0") -> Primitive:
    """Return the outcome primitive ``success`` (g1 of the paper's agent primitive sets).

    Returns:
        A :class:`Primitive` worth 1.0 when :attr:`Trajectory.success`, else 0.0.

    Example:
        >>> from derl_gym.rewards.primitives import Step, Trajectory, success_primitive
        >>> success = success_primitive()
        >>> success.name, success(Trajectory(steps=[Step("put mug", "", 1.0, True, False, {"won": True})]))
        ('success', 1.0)
    """
    return Primitive(name="success", description=description,
                     function=lambda traj: float(traj.success), kind="episode")


def agent_primitives(scorer: str | StepScorer = "progress", name: str = "agent") -> PrimitiveSet:
    """Return the paper's agent primitive set: g1 success, g2..g4 segment means of ``scorer``.

    Args:
        scorer: the step scorer of g2..g4 (a name or a callable ``Step -> float``).
        name: the set's name prefix (the set is named ``"{name}:{scorer}"``).

    Returns:
        A :class:`PrimitiveSet` of four primitives.

    Example:
        >>> from derl_gym.rewards import agent_primitives
        >>> agent_primitives("valid").names
        ['success', 'valid_first', 'valid_middle', 'valid_last']
    """
    return PrimitiveSet([success_primitive(), *segment_primitives(scorer)], name=f"{name}:{scorer}")


def as_primitive_set(primitives: PrimitiveSet | Sequence[Primitive]) -> PrimitiveSet:
    """Return ``primitives`` as a :class:`PrimitiveSet` (a set as is; a plain sequence wrapped).

    Example:
        >>> from derl_gym.rewards.primitives import as_primitive_set, success_primitive
        >>> as_primitive_set([success_primitive()])
        PrimitiveSet('primitives', ['success'])
    """
    return primitives if isinstance(primitives, PrimitiveSet) else PrimitiveSet(primitives)
