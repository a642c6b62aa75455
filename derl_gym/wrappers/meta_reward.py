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
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence, SupportsFloat

import gymnasium as gym
import numpy as np

from derl_gym.rewards.expression import MetaReward
from derl_gym.rewards.primitives import Primitive, PrimitiveSet, Step, Trajectory, as_primitive_set

logger = logging.getLogger(__name__)

__all__ = ["MetaRewardWrapper", "MODES"]

#: Accepted values of ``mode``.
MODES = ("episode", "step")


def _resolve_primitives(env: gym.Env, primitives: Any) -> PrimitiveSet:
    """Return ``primitives`` (or the env's default ``env.unwrapped.primitives``) as a PrimitiveSet.

    Raises ``TypeError`` naming the env when neither is given, and naming the bad value when it is
    not a PrimitiveSet or a sequence of Primitive.
    """
    source = "primitives"
    if primitives is None:
        unwrapped = env.unwrapped
        env_name = type(unwrapped).__name__
        primitives = getattr(unwrapped, "primitives", None)
        if primitives is None:
            raise TypeError(f"MetaRewardWrapper needs primitives=...: {env_name} has no default primitive set "
                            "(env.unwrapped.primitives); pass a PrimitiveSet or a list of Primitive")
        source = f"{env_name}.primitives (the default of primitives=None)"
    if isinstance(primitives, PrimitiveSet):
        return primitives
    items = None if isinstance(primitives, (str, bytes)) or not isinstance(primitives, Iterable) \
        else tuple(primitives)
    if items is None or not all(isinstance(p, Primitive) for p in items):
        raise TypeError(f"{source} must be a PrimitiveSet or a sequence of Primitive, got "
                        f"{type(primitives).__name__}: {primitives!r:.80}")
    return as_primitive_set(items)


class MetaRewardWrapper(gym.Wrapper):
    """A Gymnasium wrapper whose reward is a Meta-Reward over ``primitives``.

    ``expression`` is a :class:`~derl_gym.rewards.expression.MetaReward` or its text (parsed with the
    primitive set's variables ``g1..gK`` and its names as aliases). A ``MetaReward`` built for
    ``K' <= K`` variables reads the first ``K'`` primitives; ``K' > K`` raises ``ValueError``.
    ``primitives`` is a :class:`~derl_gym.rewards.primitives.PrimitiveSet` or a sequence of
    :class:`~derl_gym.rewards.primitives.Primitive`; ``None`` (default) takes the env's own default
    set, ``env.unwrapped.primitives`` (every derl-gym task env has one: ALFWorld's and
    ScienceWorld's agent primitives, the math primitives of GSM8K/MATH). An env without one raises
    ``TypeError`` asking for ``primitives=``. ``mode`` is ``"episode"`` or ``"step"`` (see the
    module docstring for the exact reward and ``info`` keys of each mode).

    Attributes: ``expression`` (the MetaReward), ``primitives`` (the PrimitiveSet), ``mode``,
    ``trajectory`` (the current episode; cleared by ``reset``).
    """

    def __init__(self, env: gym.Env, expression: MetaReward | str,
                 primitives: PrimitiveSet | Sequence[Primitive] | None = None, mode: str = "episode") -> None:
        super().__init__(env)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.primitives: PrimitiveSet = _resolve_primitives(env, primitives)
        if isinstance(expression, MetaReward):
            if expression.num_variables > len(self.primitives):
                raise ValueError(
                    f"expression {expression.text!r} was built for {expression.num_variables} variables "
                    f"(g1..g{expression.num_variables}) but the primitive set {self.primitives.name!r} has "
                    f"only {len(self.primitives)} ({', '.join(self.primitives.names)}); build it with "
                    f"MetaReward(text, primitives) or pass the text")
            self.expression = expression
        elif isinstance(expression, str):
            self.expression = MetaReward(expression, self.primitives)
        else:
            raise TypeError(f"expression must be a MetaReward or its text, got {type(expression).__name__}")
        self.mode = mode
        self.trajectory = Trajectory()
        self._prev_info: dict[str, Any] = {}
        self._potential = 0.0

    # ------------------------------------------------------------------ helpers
    def compute(self, trajectory: Trajectory | None = None) -> tuple[np.ndarray, float]:
        """Return ``(primitive_values[K], meta_reward)`` on ``trajectory`` (default: the current one)."""
        trajectory = self.trajectory if trajectory is None else trajectory
        values = self.primitives.compute(trajectory)
        meta = self.expression(values[: self.expression.num_variables])
        return values, float(meta)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the env and clear the trajectory; returns the env's ``(observation, info)``."""
        observation, info = self.env.reset(seed=seed, options=options)
        self.trajectory = Trajectory(initial_observation=observation, initial_info=dict(info))
        self._prev_info = self.trajectory.initial_info
        self._potential = 0.0
        return observation, info

    def step(self, action: Any):
        """Step the env; returns ``(obs, meta_reward_signal, terminated, truncated, info)``.

        ``info`` is a copy of the env's ``info`` plus ``task_reward`` (always) and
        ``primitive_values``/``meta_reward`` (every step in step mode, the terminal step in episode mode).
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
