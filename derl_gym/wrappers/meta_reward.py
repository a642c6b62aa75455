"""Replace an env's reward with a Meta-Reward over reward primitives.

:class:`MetaRewardWrapper` records the episode as a :class:`~derl_gym.rewards.primitives.Trajectory`,
computes the primitives ``g1..gK`` on it and returns the Meta-Reward ``F`` as the reward. The env's
own reward (the *task reward*) is kept in ``info["task_reward"]``.

Two modes:

- ``mode="episode"`` (the paper's setting): the reward is ``F(trajectory)`` at the terminal step
  (``terminated`` or ``truncated``) and ``0.0`` before. ``info["primitive_values"]`` and
  ``info["meta_reward"]`` are added at the terminal step only.
- ``mode="step"``: a telescoping potential difference
  ``r_t = F(traj[:t+1]) - F(traj[:t])`` with ``F(traj[:0]) := 0``, where ``traj[:t+1]`` is the
  trajectory up to and including step ``t`` (primitives recomputed on that prefix). The rewards of
  an episode therefore sum exactly to the episode-mode value ``F(full trajectory)`` (up to float
  rounding), while the agent gets feedback as soon as a primitive moves.
  ``info["primitive_values"]`` (the primitives on the prefix) and ``info["meta_reward"]``
  (``F`` of the prefix, i.e. the potential) are added at every step.

Put this wrapper *outside* any ``TimeLimit`` so that it sees truncation (``gymnasium.make`` already
applies ``TimeLimit`` inside). It works inside Gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv`` and
Stable-Baselines3's ``DummyVecEnv``/``SubprocVecEnv`` (reset on autoreset clears the trajectory).

Specs. The wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``),
so ``env.spec`` describes the whole stack and ``gymnasium.make(env.spec)`` rebuilds it; it can also
be applied by ``gymnasium.make(id, additional_wrappers=(MetaRewardWrapper.wrapper_spec(...),))``.
What is recorded is a serialisable form of each argument where one exists:

- ``expression``: always the formula *text* (a :class:`~derl_gym.rewards.expression.MetaReward`
  is recorded as its text, rewritten to ``g1..gK`` where its aliases differ from the primitive
  set's names, so that the text means the same formula over this primitive set);
- ``primitives``: ``None`` (the env's default set ``env.unwrapped.primitives``) when none was given
  or when the given set matches the env's default (same set name and the same primitive names,
  descriptions, kinds and bounds); a factory reference (``"package.module:function"``, or
  ``{"factory": ..., "kwargs": {...}}``, the form of :class:`~derl_gym.runtime.spec.PrimitiveSpec`)
  as given. A :class:`~derl_gym.rewards.primitives.PrimitiveSet` or a list of
  :class:`~derl_gym.rewards.primitives.Primitive` that is not the env's default is recorded as the
  object itself: ``gymnasium.make(env.spec)`` in the same process rebuilds it, but
  ``env.spec.to_json()`` cannot serialise it (primitives hold Python functions). Pass a factory
  reference instead when the spec must leave the process;
- ``mode``: as given.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
from typing import Any, Iterable, Mapping, Sequence, SupportsFloat, Union

import gymnasium as gym
import numpy as np
from gymnasium.core import ActType, ObsType

from derl_gym.rewards.expression import MetaReward
from derl_gym.rewards.primitives import Primitive, PrimitiveSet, Step, Trajectory, as_primitive_set

logger = logging.getLogger(__name__)

__all__ = ["MetaRewardWrapper", "MODES", "PrimitivesArg", "build_primitive_factory"]

#: Accepted values of ``mode``.
MODES = ("episode", "step")

#: What ``MetaRewardWrapper(primitives=...)`` accepts: a PrimitiveSet, a sequence of Primitive, a
#: factory reference (``"module:function"``, ``{"factory": ..., "kwargs": ...}`` or an object with
#: ``factory`` and ``kwargs`` attributes such as ``PrimitiveSpec``), or ``None`` (the env's default).
PrimitivesArg = Union[PrimitiveSet, Sequence[Primitive], str, Mapping[str, Any], Any, None]

# an identifier not preceded by a word character or a dot (so the "e5" of "1e5" is not one)
_IDENTIFIER_RE = re.compile(r"(?<![\w.])[A-Za-z_][A-Za-z0-9_]*")


def build_primitive_factory(factory: str, kwargs: Mapping[str, Any] | None = None) -> PrimitiveSet:
    """Import a primitive-set factory and return the :class:`PrimitiveSet` it makes.

    Args:
        factory: ``"package.module:function"``; the function returns a PrimitiveSet or a sequence of
            Primitive.
        kwargs: keyword arguments for the function.

    Returns:
        The PrimitiveSet (a plain sequence is wrapped with
        :func:`~derl_gym.rewards.primitives.as_primitive_set`).

    Raises:
        ValueError: when ``factory`` does not look like ``module:function`` or does not resolve.
        TypeError: when the function returns something else than primitives.

    Example:
        >>> from derl_gym.wrappers.meta_reward import build_primitive_factory
        >>> build_primitive_factory("derl_gym.rewards.primitives:agent_primitives", {"scorer": "valid"})
        PrimitiveSet('agent:valid', ['success', 'valid_first', 'valid_middle', 'valid_last'])
    """
    module_name, _, attr = str(factory).partition(":")
    if not module_name or not attr:
        raise ValueError(f"primitive factory {factory!r} must look like 'package.module:function', "
                         "e.g. 'derl_gym.envs.alfworld:alfworld_primitives'")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"primitive factory {factory!r} does not resolve ({exc}); give an importable "
                         "'package.module:function'") from exc
    made = function(**dict(kwargs or {}))
    items = made if isinstance(made, PrimitiveSet) else (
        tuple(made) if isinstance(made, Iterable) and not isinstance(made, (str, bytes)) else None)
    if items is None or not all(isinstance(p, Primitive) for p in items):
        raise TypeError(f"primitive factory {factory!r} returned {type(made).__name__}, not a PrimitiveSet "
                        "or a sequence of Primitive")
    return as_primitive_set(items)


def _factory_reference(primitives: Any) -> tuple[str, dict[str, Any]] | None:
    """Return ``(factory, kwargs)`` when ``primitives`` is a factory reference, else ``None``."""
    if isinstance(primitives, str):
        return primitives, {}
    if isinstance(primitives, Mapping):
        if set(primitives) - {"factory", "kwargs"} or not isinstance(primitives.get("factory"), str):
            raise TypeError(f"a primitives mapping must be {{'factory': 'module:function', 'kwargs': {{...}}}}, "
                            f"got {dict(primitives)!r:.120}")
        return primitives["factory"], dict(primitives.get("kwargs") or {})
    factory = getattr(primitives, "factory", None)
    if isinstance(factory, str) and isinstance(getattr(primitives, "kwargs", None), Mapping):
        return factory, dict(primitives.kwargs)  # a PrimitiveSpec (duck-typed: wrappers import no runtime)
    return None


def _as_set(primitives: Any, source: str) -> PrimitiveSet:
    """Return a PrimitiveSet or a sequence of Primitive as a PrimitiveSet; ``TypeError`` naming ``source``."""
    if isinstance(primitives, PrimitiveSet):
        return primitives
    items = None if isinstance(primitives, (str, bytes)) or not isinstance(primitives, Iterable) \
        else tuple(primitives)
    if items is None or not all(isinstance(p, Primitive) for p in items):
        raise TypeError(f"{source} must be a PrimitiveSet or a sequence of Primitive (or a factory reference "
                        f"'package.module:function'), got {type(primitives).__name__}: {primitives!r:.80}")
    return as_primitive_set(items)


def _default_set(env: gym.Env) -> PrimitiveSet | None:
    """Return the env's default primitive set (``env.unwrapped.primitives``), ``None`` when it has no usable one."""
    try:
        return _as_set(getattr(env.unwrapped, "primitives", None), "default")
    except Exception:  # no default, or one that cannot be built: nothing to compare with
        return None


def _same_set(a: PrimitiveSet, b: PrimitiveSet | None) -> bool:
    """True when two sets have the same name and the same primitives (name, description, kind, bounds)."""
    if b is None or a.name != b.name or len(a) != len(b):
        return False
    return all((p.name, p.description, p.kind, tuple(p.bounds)) == (q.name, q.description, q.kind, tuple(q.bounds))
               for p, q in zip(a, b))


def _resolve_primitives(env: gym.Env, primitives: Any) -> tuple[PrimitiveSet, Any]:
    """Return ``(primitive set, recorded form)`` for ``primitives`` (``None``: the env's default).

    Raises ``TypeError`` naming the env when neither is given, and naming the bad value when it is
    not a PrimitiveSet, a sequence of Primitive or a factory reference.
    """
    if primitives is None:
        unwrapped = env.unwrapped
        env_name = type(unwrapped).__name__
        default = getattr(unwrapped, "primitives", None)
        if default is None:
            raise TypeError(f"MetaRewardWrapper needs primitives=...: {env_name} has no default primitive set "
                            "(env.unwrapped.primitives); pass a PrimitiveSet, a list of Primitive or a factory "
                            "reference 'package.module:function'")
        return _as_set(default, f"{env_name}.primitives (the default of primitives=None)"), None
    if isinstance(primitives, str) and ":" not in primitives:
        _as_set(primitives, "primitives")  # raises the TypeError naming the value
    reference = _factory_reference(primitives)
    if reference is not None:
        recorded = primitives if isinstance(primitives, str) else \
            {"factory": reference[0], "kwargs": copy.deepcopy(reference[1])}
        return build_primitive_factory(*reference), recorded
    resolved = _as_set(primitives, "primitives")
    recorded = None if _same_set(resolved, _default_set(env)) else primitives
    return resolved, recorded


def _expression_text(expression: MetaReward, primitives: PrimitiveSet) -> str:
    """Return text that parses over ``primitives`` to the same formula as ``expression``.

    The text itself when every alias of ``expression`` is the primitive set's name at that position
    (or none), else the text with each alias replaced by its positional variable ``g{i+1}``.
    """
    names = primitives.names
    if all(alias in ("", names[i]) for i, alias in enumerate(expression.aliases)):
        return expression.text
    table = {alias: f"g{i + 1}" for i, alias in enumerate(expression.aliases) if alias}
    return _IDENTIFIER_RE.sub(lambda m: table.get(m.group(0), m.group(0)), expression.text)


class MetaRewardWrapper(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """A Gymnasium wrapper whose reward is a Meta-Reward over reward primitives.

    The episode is recorded as a :class:`~derl_gym.rewards.primitives.Trajectory`; the reward is the
    formula's value on it (see the module docstring for the exact reward and ``info`` keys of each
    mode). Observations and actions pass through unchanged. ``env.spec`` records the arguments in a
    serialisable form where one exists (module docstring, "Specs"), so ``gymnasium.make(env.spec)``
    rebuilds the stack.

    Args:
        env: the env to wrap (put it outside ``TimeLimit`` so that it sees truncation).
        expression: a :class:`~derl_gym.rewards.expression.MetaReward` or its text, parsed with the
            primitive set's variables ``g1..gK`` and its names as aliases. A ``MetaReward`` built for
            ``K' <= K`` variables reads the first ``K'`` primitives.
        primitives: a :class:`~derl_gym.rewards.primitives.PrimitiveSet`, a sequence of
            :class:`~derl_gym.rewards.primitives.Primitive`, a factory reference
            (``"package.module:function"``, ``{"factory": ..., "kwargs": {...}}`` or a
            ``PrimitiveSpec``), or ``None`` (default) for the env's own default set
            ``env.unwrapped.primitives`` (every derl-gym task env has one).
        mode: ``"episode"`` (reward at the terminal step) or ``"step"`` (telescoping differences).

    Attributes:
        expression: the :class:`~derl_gym.rewards.expression.MetaReward`.
        primitives: the :class:`~derl_gym.rewards.primitives.PrimitiveSet`.
        mode: ``"episode"`` or ``"step"``.
        trajectory: the current episode (cleared by ``reset``).

    Raises:
        ValueError: for an unknown ``mode``, or a ``MetaReward`` with more variables than primitives.
        TypeError: when no primitives are given and the env has no default, or for a bad ``primitives``.
        InvalidExpression: for formula text that does not parse.

    Example:
        >>> import gymnasium as gym
        >>> from derl_gym.rewards import Primitive
        >>> from derl_gym.wrappers import MetaRewardWrapper
        >>> length = Primitive("length", "episode length / 500", lambda traj: len(traj) / 500)
        >>> env = MetaRewardWrapper(gym.make("CartPole-v1"), "2*g1", [length])
        >>> _ = env.reset(seed=0)
        >>> _, reward, terminated, truncated, info = env.step(0)
        >>> reward, info["task_reward"]              # 0 until the episode ends; the env's own reward kept
        (0.0, 1.0)
        >>> while not (terminated or truncated):
        ...     _, reward, terminated, truncated, info = env.step(0)
        >>> len(env.trajectory), info["primitive_values"], reward   # F = 2 * g1 at the terminal step
        (11, array([0.022]), 0.044)

        The spec records the wrapper, so ``gymnasium.make`` rebuilds the stack:

        >>> env.spec.additional_wrappers[-1].kwargs["expression"]
        '2*g1'
        >>> gym.make(env.spec)
        <MetaRewardWrapper<TimeLimit<OrderEnforcing<PassiveEnvChecker<CartPoleEnv<CartPole-v1>>>>> expression='2*g1' mode='episode'>
    """

    def __init__(self, env: gym.Env[ObsType, ActType], expression: MetaReward | str,
                 primitives: PrimitivesArg = None, mode: str = "episode") -> None:
        gym.Wrapper.__init__(self, env)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.primitives: PrimitiveSet
        self.primitives, recorded_primitives = _resolve_primitives(env, primitives)
        if isinstance(expression, MetaReward):
            if expression.num_variables > len(self.primitives):
                raise ValueError(
                    f"expression {expression.text!r} was built for {expression.num_variables} variables "
                    f"(g1..g{expression.num_variables}) but the primitive set {self.primitives.name!r} has "
                    f"only {len(self.primitives)} ({', '.join(self.primitives.names)}); build it with "
                    f"MetaReward(text, primitives) or pass the text")
            self.expression = expression
            recorded_expression = _expression_text(expression, self.primitives)
        elif isinstance(expression, str):
            self.expression = MetaReward(expression, self.primitives)
            recorded_expression = expression
        else:
            raise TypeError(f"expression must be a MetaReward or its text, got {type(expression).__name__}")
        self.mode = mode
        # recorded after resolving, in the serialisable forms above; kept by reference (no deepcopy:
        # a PrimitiveSet given as an object is recorded as that object)
        gym.utils.RecordConstructorArgs.__init__(self, _disable_deepcopy=True, expression=recorded_expression,
                                                 primitives=recorded_primitives, mode=mode)
        self.trajectory = Trajectory()
        self._prev_info: dict[str, Any] = {}
        self._potential = 0.0

    # ------------------------------------------------------------------ helpers
    def compute(self, trajectory: Trajectory | None = None) -> tuple[np.ndarray, float]:
        """Compute the primitives and the Meta-Reward on a trajectory.

        Args:
            trajectory: the trajectory to score; ``None`` (default) scores the current one.

        Returns:
            ``(primitive_values, meta_reward)``: a float64 array ``[K]`` and the formula's value.
        """
        trajectory = self.trajectory if trajectory is None else trajectory
        values = self.primitives.compute(trajectory)
        meta = self.expression(values[: self.expression.num_variables])
        return values, float(meta)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        """Reset the env and clear the trajectory.

        Returns:
            The env's ``(observation, info)``.
        """
        observation, info = self.env.reset(seed=seed, options=options)
        self.trajectory = Trajectory(initial_observation=observation, initial_info=dict(info))
        self._prev_info = self.trajectory.initial_info
        self._potential = 0.0
        return observation, info

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env and replace its reward with the Meta-Reward signal.

        Returns:
            ``(observation, reward, terminated, truncated, info)``: ``reward`` is the Meta-Reward
            signal of the mode; ``info`` is a copy of the env's ``info`` plus ``task_reward``
            (always) and ``primitive_values``/``meta_reward`` (every step in step mode, the
            terminal step in episode mode).
        """
        observation, task_reward, terminated, truncated, info = self.env.step(action)
        task_reward = float(task_reward)
        recorded = dict(info)  # a copy: envs may reuse and mutate their info dict
        self.trajectory.append(Step(action=action, observation=observation, reward=task_reward,
                                    terminated=bool(terminated), truncated=bool(truncated),
                                    info=recorded, prev_info=self._prev_info))
        self._prev_info = recorded
        out_info = dict(info)
        out_info["task_reward"] = task_reward
        done = bool(terminated) or bool(truncated)
        reward: SupportsFloat = 0.0
        if self.mode == "step":
            values, meta = self.compute()
            reward = meta - self._potential
            self._potential = meta
            out_info["primitive_values"] = values
            out_info["meta_reward"] = meta
        elif done:
            values, meta = self.compute()
            reward = meta
            out_info["primitive_values"] = values
            out_info["meta_reward"] = meta
        return observation, float(reward), terminated, truncated, out_info

    def __repr__(self) -> str:
        return f"<MetaRewardWrapper{self.env} expression={self.expression.text!r} mode={self.mode!r}>"
