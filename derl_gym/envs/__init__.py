"""Task environments and their registration under the ``derl_gym`` Gymnasium namespace."""

from __future__ import annotations

import gymnasium as gym

#: env id -> entry point. Entry points are strings so that registering imports nothing heavy.
ENV_ENTRY_POINTS: dict[str, str] = {
    "derl_gym/GSM8K-v0": "derl_gym.envs.math:GSM8KEnv",
    "derl_gym/MATH-v0": "derl_gym.envs.math:MATHEnv",
    "derl_gym/ALFWorld-v0": "derl_gym.envs.alfworld.env:ALFWorldEnv",
    "derl_gym/ScienceWorld-v0": "derl_gym.envs.scienceworld:ScienceWorldEnv",
    "derl_gym/MetaReward-v0": "derl_gym.envs.meta:MetaRewardEnv",
    "derl_gym/MetaRewardText-v0": "derl_gym.envs.meta:MetaRewardTextEnv",
}


def register_envs() -> list[str]:
    """Register every derl_gym env with Gymnasium (idempotent; ``import derl_gym`` already calls it).

    Returns:
        The registered env ids (the keys of :data:`ENV_ENTRY_POINTS`).

    Example:
        >>> import gymnasium as gym
        >>> from derl_gym.envs import register_envs
        >>> ids = register_envs()
        >>> "derl_gym/GSM8K-v0" in ids, all(env_id in gym.registry for env_id in ids)
        (True, True)
    """
    for env_id, entry_point in ENV_ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=False)
    return list(ENV_ENTRY_POINTS)
