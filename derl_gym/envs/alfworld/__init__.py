"""ALFWorld on TextWorld's PDDL engine: the Gymnasium env, the offline game generator, splits, primitives.

Imports are lazy: ``from derl_gym.envs.alfworld import ALFWorldEnv`` loads the env module (and
TextWorld) only when the name is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALFWorldEnv", "alfworld_primitives"]


def __getattr__(name: str) -> Any:
    if name == "ALFWorldEnv":
        from derl_gym.envs.alfworld.env import ALFWorldEnv

        return ALFWorldEnv
    if name == "alfworld_primitives":
        from derl_gym.envs.alfworld.primitives import alfworld_primitives

        return alfworld_primitives
    raise AttributeError(f"module 'derl_gym.envs.alfworld' has no attribute {name!r}")
