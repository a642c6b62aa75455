"""Apply derl-gym wrappers through Gymnasium specs.

Gymnasium 1.x applies recorded wrappers from an :class:`~gymnasium.envs.registration.EnvSpec`'s
``additional_wrappers`` (set by ``gymnasium.register(..., additional_wrappers=...)`` or by a wrapped
env's ``env.spec``); ``gymnasium.make(id, ...)`` has no ``additional_wrappers`` argument of its own
(extra keywords go to the env). :func:`spec_with_wrappers` makes such a spec for an id that is
already registered, so that ``gymnasium.make(spec)`` builds the env inside the wrappers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, WrapperSpec

__all__ = ["spec_with_wrappers"]


def spec_with_wrappers(env_id: str | EnvSpec, *wrappers: WrapperSpec, **kwargs: Any) -> EnvSpec:
    """Return a registered env's spec with wrappers appended and env keyword arguments merged.

    Args:
        env_id: a registered env id (``"derl_gym/GSM8K-v0"``) or an EnvSpec.
        *wrappers: WrapperSpecs, innermost first, e.g. ``MetaRewardWrapper.wrapper_spec(expression="g1")``
            (Gymnasium's ``Wrapper.wrapper_spec`` classmethod).
        **kwargs: keyword arguments for the env (they update the spec's ``kwargs``).

    Returns:
        A new EnvSpec (the registry is not changed); ``gymnasium.make(spec)`` builds the env, applies
        Gymnasium's own wrappers (checker, order enforcing, ``TimeLimit``), then ``wrappers``.

    Raises:
        TypeError: when a wrapper is not a WrapperSpec.

    Example:
        >>> import gymnasium as gym
        >>> from derl_gym.rewards import Primitive
        >>> from derl_gym.wrappers import MetaRewardWrapper, spec_with_wrappers
        >>> alive = Primitive("alive", "1 while the pole is up", lambda traj: float(not traj.steps[-1].terminated))
        >>> spec = spec_with_wrappers("CartPole-v1",
        ...                           MetaRewardWrapper.wrapper_spec(expression="g1", primitives=[alive]),
        ...                           max_episode_steps=5)
        >>> env = gym.make(spec)
        >>> env
        <MetaRewardWrapper<TimeLimit<OrderEnforcing<PassiveEnvChecker<CartPoleEnv<CartPole-v1>>>>> expression='g1' mode='episode'>
        >>> _ = env.reset(seed=0)
        >>> [env.step(0)[1] for _ in range(5)]        # truncated at step 5 with the pole still up
        [0.0, 0.0, 0.0, 0.0, 1.0]
    """
    spec = gym.spec(env_id) if isinstance(env_id, str) else env_id
    for wrapper in wrappers:
        if not isinstance(wrapper, WrapperSpec):
            raise TypeError(f"wrappers must be WrapperSpec objects, got {type(wrapper).__name__}: {wrapper!r:.80}; "
                            "make one with e.g. MetaRewardWrapper.wrapper_spec(expression='g1')")
    merged = {**(spec.kwargs or {}), **kwargs}
    max_steps = merged.pop("max_episode_steps", spec.max_episode_steps)
    return dataclasses.replace(spec, kwargs=merged, max_episode_steps=max_steps,
                               additional_wrappers=(*spec.additional_wrappers, *wrappers))
