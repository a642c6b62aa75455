"""Picklable descriptions of one inner-loop job and of its result.

These dataclasses are the contract between the inner loop (:func:`derl_gym.runtime.inner.run_inner`),
the runners that execute it in other processes or on a Ray cluster, the SQLite store that caches
results, and the meta-optimizers. They hold only plain data (strings, numbers, dicts, lists) so that
they pickle across ``spawn`` processes and serialise to JSON for the store and for hashing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from derl_gym.runtime import versions as _versions

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_TIMEOUT = "timeout"
#: A run the multi-fidelity scheduler stopped early (:mod:`derl_gym.runtime.multi_fidelity`): it has a real,
#: lower-fidelity validation score, but is neither a full-budget result nor a failure.
STATUS_STOPPED = "stopped"


@dataclass(frozen=True)
class EnvSpec:
    """A registered env id and the keyword arguments for ``gymnasium.make``.

    Example:
        >>> from derl_gym.runtime.spec import EnvSpec
        >>> spec = EnvSpec("CartPole-v1", {"max_episode_steps": 50})
        >>> env = spec.make()
        >>> env.spec.id, env.spec.max_episode_steps
        ('CartPole-v1', 50)
        >>> env.close()
    """

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def make(self, **overrides: Any):
        """Return ``gymnasium.make(env_id, **kwargs, **overrides)``."""
        import gymnasium as gym

        import derl_gym  # noqa: F401  (registers the derl_gym namespace)

        return gym.make(self.env_id, **{**self.kwargs, **overrides})


@dataclass(frozen=True)
class PrimitiveSpec:
    """A reference to a primitive-set factory, ``"module:function"``, and its keyword arguments.

    A :class:`~derl_gym.rewards.primitives.PrimitiveSet` holds functions and so does not pickle
    reliably; jobs carry this reference and build the set where they run.

    Example:
        >>> from derl_gym.runtime.spec import PrimitiveSpec
        >>> PrimitiveSpec("derl_gym.envs.math:math_primitives").build().names
        ['strict_match', 'boxed_format', 'explicit_steps', 'loose_match']
    """

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """Import the factory and return the :class:`PrimitiveSet` it makes."""
        module_name, _, attr = self.factory.partition(":")
        if not module_name or not attr:
            raise ValueError(f"primitive factory {self.factory!r} must look like 'package.module:function'")
        return getattr(importlib.import_module(module_name), attr)(**self.kwargs)


@dataclass(frozen=True)
class AgentSpec:
    """How the inner agent is trained.

    ``algorithm`` names an SB3 / sb3-contrib algorithm (``"maskable_ppo"`` by default);
    ``algo_kwargs`` go to its constructor (``n_steps``, ``batch_size``, ``learning_rate`` ...);
    ``policy_kwargs`` go to the policy; ``total_timesteps`` is the training budget in env steps
    summed over the ``n_envs`` parallel envs.

    Example:
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> agent = AgentSpec(total_timesteps=2048, n_envs=4, algo_kwargs={"n_steps": 128})
        >>> agent.algorithm, agent.total_timesteps // agent.n_envs
        ('maskable_ppo', 512)
    """

    algorithm: str = "maskable_ppo"
    total_timesteps: int = 10_000
    n_envs: int = 1
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"


@dataclass(frozen=True)
class InnerLoopSpec:
    """Everything one inner-loop training needs except the Meta-Reward and the seed override.

    ``train_env`` is wrapped in :class:`~derl_gym.wrappers.MetaRewardWrapper`;
    ``validation_env`` is scored with the *task* reward only (the meta-optimizer's reward);
    ``test_envs`` maps a split label (``"L0"``, ``"L1"``, ``"L2"``) to the env used for final
    reporting, never during search. ``wrapper_kwargs`` configure the text-action wrapper
    (``max_actions``, ``encoder`` ...).

    Example:
        >>> from derl_gym.runtime.spec import EnvSpec, InnerLoopSpec, PrimitiveSpec
        >>> spec = InnerLoopSpec(name="demo", train_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "train"}),
        ...                      validation_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "validation"}),
        ...                      primitives=PrimitiveSpec("derl_gym.envs.alfworld:alfworld_primitives"))
        >>> InnerLoopSpec.from_dict(spec.to_dict()) == spec
        True
        >>> spec.replace(name="renamed", seed=3).spec_hash() == spec.spec_hash()  # labels and seed do not count
        True
        >>> spec.replace(eval_episodes=50).spec_hash() == spec.spec_hash()
        False
    """

    name: str
    train_env: EnvSpec
    validation_env: EnvSpec
    primitives: PrimitiveSpec
    agent: AgentSpec = field(default_factory=AgentSpec)
    test_envs: dict[str, EnvSpec] = field(default_factory=dict)
    reward_mode: str = "episode"
    eval_episodes: int = 20
    seed: int = 0
    wrapper_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as nested plain dicts (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InnerLoopSpec":
        """Rebuild a spec from :meth:`to_dict` output."""
        data = dict(data)
        data["train_env"] = EnvSpec(**data["train_env"])
        data["validation_env"] = EnvSpec(**data["validation_env"])
        data["primitives"] = PrimitiveSpec(**data["primitives"])
        data["agent"] = AgentSpec(**data["agent"])
        data["test_envs"] = {k: EnvSpec(**v) for k, v in data.get("test_envs", {}).items()}
        return cls(**data)

    def spec_hash(self, include_versions: bool = True) -> str:
        """Return a short stable hash (16 hex digits) of everything that changes a result except the seed.

        ``name`` and ``description`` are labels and ``test_envs`` is not used during search,
        so none of them enter the hash. With ``include_versions`` (the default, the store's cache
        key) the hash also covers :meth:`versions`: the derl-gym version and the installed versions
        of the packages that train and score, so a result trained before an upgrade is not reused.
        ``include_versions=False`` gives the pure-spec hash (the experiment's identity; it is what
        ``spec_hash()`` returned before versions were part of the key).
        """
        payload = self.to_dict()
        for key in ("name", "description", "test_envs", "seed"):
            payload.pop(key, None)
        if include_versions:
            payload["versions"] = self.versions()
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def versions(self) -> dict[str, str]:
        """Return the versions that key this spec's results: ``derl_gym`` and each package of
        :data:`derl_gym.runtime.versions.TRAINING_PACKAGES` (plus transformers, trl, peft and
        accelerate when ``agent.algorithm`` is ``"grpo"``); ``"absent"`` for a missing package."""
        return _versions.code_versions(self.agent.algorithm)

    def env_specs(self) -> list[EnvSpec]:
        """Return the train, validation and test env specs, in that order."""
        return [self.train_env, self.validation_env, *self.test_envs.values()]

    def prepare(self) -> None:
        """Make and close every env once, so one-time work (e.g. generating and caching ALFWorld games)
        happens here rather than in parallel workers racing for it; returns nothing."""
        for env_spec in self.env_specs():
            env_spec.make().close()

    def replace(self, **changes: Any) -> "InnerLoopSpec":
        """Return a copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass
class InnerResult:
    """The outcome of one inner-loop job.

    ``score`` is the validation success rate in [0, 1] measured with the task reward (0.0 when
    the job failed). ``curve`` is a list of ``(env_steps, mean_task_success)`` points taken
    during training. ``status`` is ``"ok"``, ``"failed"`` or ``"timeout"`` (or ``"stopped"``: stopped early by the
    multi-fidelity scheduler, scored at lower fidelity); ``error`` holds the error text when it failed. ``model_path`` is where the trained agent was saved, if it was
    (DERL-pop starts the next iteration from it).

    Example:
        >>> from derl_gym.runtime.spec import InnerResult
        >>> result = InnerResult("g1 + g2", "g1 + g2", score=0.6, curve=[(1000, 0.2), (2000, 0.6)])
        >>> result.ok, InnerResult.from_dict(result.to_dict()) == result
        (True, True)
        >>> failed = InnerResult.failure("g1 / 0", "g1 / 0", "ZeroDivisionError")
        >>> failed.ok, failed.score, failed.status
        (False, 0.0, 'failed')
    """

    expression: str
    canonical: str
    score: float
    status: str = STATUS_OK
    seed: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    env_steps: int = 0
    error: str | None = None
    model_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the job finished without error."""
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InnerResult":
        """Rebuild a result from :meth:`to_dict` output."""
        data = dict(data)
        data["curve"] = [tuple(point) for point in data.get("curve", [])]
        return cls(**data)

    @classmethod
    def failure(cls, expression: str, canonical: str, error: str, *, seed: int = 0,
                status: str = STATUS_FAILED, wall_seconds: float = 0.0) -> "InnerResult":
        """Return a failed result (score 0.0) carrying ``error``."""
        return cls(expression=expression, canonical=canonical, score=0.0, status=status,
                   seed=seed, error=error, wall_seconds=wall_seconds)
