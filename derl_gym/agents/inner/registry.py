"""Inner trainers: what ``AgentSpec.algorithm`` names, and the one interface ``run_inner`` dispatches to.

An :class:`InnerTrainer` trains an agent on the train env wrapped in
:class:`~derl_gym.wrappers.MetaRewardWrapper`, evaluates an agent on an env with the *task* reward
only, and saves / loads agents. Built in:

- ``maskable_ppo``, ``ppo``, ``a2c``: Stable-Baselines3 / sb3-contrib on
  :class:`~derl_gym.wrappers.text_actions.TextActionWrapper` (:mod:`derl_gym.agents.inner.sb3_trainer`);
- ``grpo``: a Hugging Face causal LM trained with TRL's ``GRPOTrainer``
  (:mod:`derl_gym.agents.inner.trl_trainer`).

Add one with ``register_trainer("name", factory)``, where ``factory()`` returns an
:class:`InnerTrainer`; factories are called lazily so that importing this module imports neither
SB3 nor TRL. In a multi-process runner, register it in a module the workers import.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["InnerTrainer", "TrainOutput", "register_trainer", "get_trainer", "registered_trainers"]


@dataclass
class TrainOutput:
    """What :meth:`InnerTrainer.train` returns.

    ``agent`` is the trained agent (trainer-specific); ``curve`` the ``(env_steps, mean training
    task success)`` points; ``env_steps`` the env steps taken; ``extra`` goes into
    ``InnerResult.extra`` (``train_episodes``, ``train_success``, ``train_seconds``,
    ``steps_per_second`` and anything trainer-specific).

    Example:
        >>> from derl_gym.agents.inner.registry import TrainOutput
        >>> out = TrainOutput(agent="my-agent", curve=[(500, 0.1), (1000, 0.4)], env_steps=1000)
        >>> out.curve[-1], out.extra
        ((1000, 0.4), {})
    """

    agent: Any
    curve: list[tuple[int, float]] = field(default_factory=list)
    env_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class InnerTrainer(abc.ABC):
    """Train under a Meta-Reward, evaluate with the task reward, save and load agents.

    Example:
        >>> from derl_gym.agents.inner.registry import InnerTrainer, TrainOutput, get_trainer, register_trainer
        >>> class ConstantTrainer(InnerTrainer):  # the smallest trainer: an "agent" that always succeeds
        ...     def train(self, spec, meta_reward, primitives, seed, init_model=None):
        ...         return TrainOutput(agent="always-wins", env_steps=0)
        ...     def evaluate(self, agent, spec, env_spec, episodes, seed):
        ...         return {"score": 1.0, "episodes": episodes, "mean_length": 1.0, "env_steps": episodes}
        ...     def save(self, agent, path):
        ...         return path
        ...     def load(self, spec, path):
        ...         return "always-wins"
        >>> register_trainer("constant-example", ConstantTrainer, overwrite=True)
        >>> trainer = get_trainer("constant-example")
        >>> trainer.evaluate(trainer.train(None, None, None, seed=0).agent, None, None, episodes=5, seed=0)["score"]
        1.0
    """

    @abc.abstractmethod
    def train(self, spec: Any, meta_reward: Any, primitives: Any, seed: int,
              init_model: str | None = None) -> TrainOutput:
        """Train ``spec.agent`` on ``spec.train_env`` wrapped in ``MetaRewardWrapper(meta_reward, primitives)``.

        ``init_model`` is a path written by :meth:`save` to start from. Returns a :class:`TrainOutput`.
        """

    @abc.abstractmethod
    def evaluate(self, agent: Any, spec: Any, env_spec: Any, episodes: int, seed: int) -> dict[str, Any]:
        """Return ``{"score": success rate with the task reward, "episodes", "mean_length", "env_steps"}``
        for ``agent`` on ``env_spec`` (never wrapped in a Meta-Reward)."""

    @abc.abstractmethod
    def save(self, agent: Any, path: str) -> str:
        """Save ``agent`` at ``path``; returns the path actually written (e.g. with a suffix added)."""

    @abc.abstractmethod
    def load(self, spec: Any, path: str) -> Any:
        """Return the agent saved at ``path`` by :meth:`save`, for ``spec``."""

    def close(self, agent: Any) -> None:
        """Release what ``agent`` holds (envs, GPU memory); the default does nothing."""


_FACTORIES: dict[str, Callable[[], InnerTrainer]] = {}


def register_trainer(name: str, factory: Callable[[], InnerTrainer], *, overwrite: bool = False) -> None:
    """Register ``factory`` (zero arguments -> :class:`InnerTrainer`) as ``AgentSpec.algorithm`` ``name``.

    Args:
        name: the algorithm name specs use.
        factory: called with no arguments each time a trainer is needed (lazily: import SB3/TRL inside).
        overwrite: replace an existing registration.

    Raises:
        ValueError: ``name`` is empty, or taken and ``overwrite`` is False.

    Example:
        >>> from derl_gym.agents.inner.registry import get_trainer, register_trainer
        >>> from derl_gym.agents.inner.sb3_trainer import SB3Trainer
        >>> register_trainer("ppo-example", lambda: SB3Trainer("ppo"), overwrite=True)  # AgentSpec(algorithm="ppo-example")
        >>> type(get_trainer("ppo-example")).__name__
        'SB3Trainer'
        >>> register_trainer("ppo", lambda: SB3Trainer("ppo"))
        Traceback (most recent call last):
        ...
        ValueError: an inner trainer named 'ppo' is already registered; pass overwrite=True to replace it
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"trainer name must be a non-empty string, got {name!r}")
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"an inner trainer named {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory


def registered_trainers() -> list[str]:
    """Return the registered trainer names, sorted.

    Example:
        >>> from derl_gym.agents.inner.registry import registered_trainers
        >>> {"maskable_ppo", "ppo", "a2c", "grpo"} <= set(registered_trainers())
        True
    """
    return sorted(_FACTORIES)


def get_trainer(name: str) -> InnerTrainer:
    """Return a new :class:`InnerTrainer` for ``AgentSpec.algorithm`` ``name``.

    Raises:
        ValueError: ``name`` is unknown (the message lists the registered trainers).

    Example:
        >>> from derl_gym.agents.inner.registry import get_trainer
        >>> type(get_trainer("maskable_ppo")).__name__
        'SB3Trainer'
        >>> get_trainer("sac")
        Traceback (most recent call last):
        ...
        ValueError: unknown algorithm 'sac' (AgentSpec.algorithm names an inner trainer); registered: ...
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r} (AgentSpec.algorithm names an inner trainer); registered: "
                         f"{registered_trainers()}; add one with derl_gym.agents.inner.registry.register_trainer"
                         ) from None
    return factory()


def _sb3_trainer(algorithm: str) -> Callable[[], InnerTrainer]:
    def factory() -> InnerTrainer:
        from derl_gym.agents.inner.sb3_trainer import SB3Trainer

        return SB3Trainer(algorithm)

    return factory


def _grpo_trainer() -> InnerTrainer:
    from derl_gym.agents.inner.trl_trainer import GRPOInnerTrainer

    return GRPOInnerTrainer()


for _name in ("maskable_ppo", "ppo", "a2c"):
    register_trainer(_name, _sb3_trainer(_name))
register_trainer("grpo", _grpo_trainer)
