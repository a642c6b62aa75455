"""The Stable-Baselines3 inner trainer (``maskable_ppo``, ``ppo``, ``a2c``).

Text worlds become SB3 spaces through :class:`~derl_gym.wrappers.text_actions.TextActionWrapper`
(configured by ``InnerLoopSpec.wrapper_kwargs``): training runs on
``TextActionWrapper(MetaRewardWrapper(train env))``, evaluation on ``TextActionWrapper(env)`` with
the env's own task reward. The model, callbacks and evaluation are those of
:mod:`derl_gym.agents.inner.trainer`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from derl_gym.agents.inner.registry import InnerTrainer, TrainOutput

logger = logging.getLogger(__name__)

__all__ = ["SB3Trainer", "make_train_env", "make_eval_env", "fast_distributions", "inference_rollouts"]


def make_train_env(spec: Any, expression: Any, primitives: Any):
    """Build the env SB3 trains on: the train env, rewarded by the Meta-Reward, as SB3 spaces.

    Args:
        spec: the inner-loop spec (its ``train_env``, ``reward_mode`` and ``wrapper_kwargs`` are used).
        expression: the Meta-Reward formula (text or a :class:`~derl_gym.rewards.expression.MetaReward`).
        primitives: the primitive set the formula's variables refer to.

    Returns:
        ``TextActionWrapper(MetaRewardWrapper(train env, expression, primitives))``.

    Example:
        On the small cached ALFWorld games of :class:`~derl_gym.envs.alfworld.env.ALFWorldEnv`'s example:

        >>> from derl_gym.agents.inner.sb3_trainer import make_train_env
        >>> from derl_gym.runtime.presets import get_preset
        >>> from derl_gym.runtime.spec import EnvSpec
        >>> spec = get_preset("alfworld-tiny").replace(train_env=EnvSpec(
        ...     "derl_gym/ALFWorld-v0", {"split": "train", "generator": "tiny", "max_episode_steps": 20}))
        >>> env = make_train_env(spec, "g1 + 0.5*g4", spec.primitives.build())
        >>> obs, info = env.reset(seed=0)
        >>> type(env).__name__, type(env.env).__name__, env.action_space, int(obs["action_mask"].sum()) > 0
        ('TextActionWrapper', 'MetaRewardWrapper', Discrete(24), True)
        >>> env.close()
    """
    from derl_gym.wrappers.meta_reward import MetaRewardWrapper
    from derl_gym.wrappers.text_actions import TextActionWrapper

    env = spec.train_env.make()
    env = MetaRewardWrapper(env, expression, primitives, mode=spec.reward_mode)
    return TextActionWrapper(env, **spec.wrapper_kwargs)


def make_eval_env(spec: Any, env_spec: Any):
    """Build an env to evaluate on: the env's own task reward, no Meta-Reward.

    Args:
        spec: the inner-loop spec (its ``wrapper_kwargs`` are used).
        env_spec: the env to build (``spec.validation_env`` or one of ``spec.test_envs``).

    Returns:
        ``TextActionWrapper(env_spec.make())``.

    Example:
        >>> from derl_gym.agents.inner.sb3_trainer import make_eval_env
        >>> from derl_gym.runtime.presets import get_preset
        >>> from derl_gym.runtime.spec import EnvSpec
        >>> spec = get_preset("alfworld-tiny")
        >>> env = make_eval_env(spec, EnvSpec(
        ...     "derl_gym/ALFWorld-v0", {"split": "validation", "generator": "tiny", "max_episode_steps": 20}))
        >>> obs, info = env.reset(seed=0)
        >>> type(env).__name__, type(env.unwrapped).__name__, "MetaRewardWrapper" in str(env)
        ('TextActionWrapper', 'ALFWorldEnv', False)
        >>> obs["actions"].shape          # max_actions x dim of the preset's wrapper_kwargs
        (24, 128)
        >>> env.close()
    """
    from derl_gym.wrappers.text_actions import TextActionWrapper

    return TextActionWrapper(env_spec.make(), **spec.wrapper_kwargs)


@contextlib.contextmanager
def fast_distributions() -> Iterator[None]:
    """Within the block, torch distributions skip their argument checks (restored after); yields nothing.

    The checks (``validate_args``) only raise on malformed logits; they never change a value, and on
    the rollout path they cost several tensor operations per step. Off only on the fast path
    (``$DERL_GYM_INNER_FAST``, default on).

    Example:
        A malformed distribution raises outside the block, not inside it (fast path on):

        >>> import os
        >>> import torch
        >>> from torch.distributions import Categorical
        >>> from derl_gym.agents.inner.sb3_trainer import fast_distributions
        >>> from derl_gym.utils.fastpath import FAST_PATH_ENV
        >>> previous = os.environ.get(FAST_PATH_ENV)
        >>> os.environ[FAST_PATH_ENV] = "1"
        >>> with fast_distributions():
        ...     unchecked = Categorical(probs=torch.tensor([-1.0, 2.0]))
        >>> Categorical(probs=torch.tensor([-1.0, 2.0]))
        Traceback (most recent call last):
            ...
        ValueError: Expected parameter probs ...
        >>> _ = os.environ.pop(FAST_PATH_ENV) if previous is None else os.environ.update({FAST_PATH_ENV: previous})
    """
    from torch.distributions import Distribution

    from derl_gym.utils.fastpath import fast_path_enabled

    if not fast_path_enabled():
        yield
        return
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


@contextlib.contextmanager
def inference_rollouts(model: Any) -> Iterator[None]:
    """Within the block, ``model.collect_rollouts`` runs under ``torch.inference_mode``; yields nothing.

    SB3 collects experience under ``no_grad``; ``inference_mode`` also skips autograd's version
    counters and view tracking, which on one core is a measurable part of a small policy's forward.
    The values are the same (the rollout buffer keeps NumPy copies; no tensor made there reaches
    the PPO update). Only on the fast path (``$DERL_GYM_INNER_FAST``); the instance attribute is
    removed after the block, so ``model.save`` sees the class method.

    Example:
        >>> import os
        >>> from derl_gym.agents.inner.sb3_trainer import inference_rollouts
        >>> from derl_gym.agents.inner.trainer import _example_env, build_model, make_vec_env
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> from derl_gym.utils.fastpath import FAST_PATH_ENV
        >>> previous = os.environ.get(FAST_PATH_ENV)
        >>> os.environ[FAST_PATH_ENV] = "1"
        >>> agent = AgentSpec(algo_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        ...                   policy_kwargs={"hidden_dim": 16})
        >>> model = build_model(agent, make_vec_env([_example_env]), seed=0)
        >>> with inference_rollouts(model):
        ...     patched = "collect_rollouts" in vars(model)
        ...     _ = model.learn(64)       # two rollouts collected under inference_mode, two PPO updates
        >>> patched, "collect_rollouts" in vars(model), model.num_timesteps
        (True, False, 64)
        >>> _ = os.environ.pop(FAST_PATH_ENV) if previous is None else os.environ.update({FAST_PATH_ENV: previous})
    """
    import torch

    from derl_gym.utils.fastpath import fast_path_enabled

    if not fast_path_enabled():
        yield
        return
    original = model.collect_rollouts

    def collect_rollouts(*args: Any, **kwargs: Any) -> bool:
        with torch.inference_mode():
            return original(*args, **kwargs)

    model.collect_rollouts = collect_rollouts
    try:
        yield
    finally:
        del model.collect_rollouts


@contextlib.contextmanager
def _inference_mode() -> Iterator[None]:
    """``torch.inference_mode`` on the fast path, nothing otherwise; yields nothing."""
    import torch

    from derl_gym.utils.fastpath import fast_path_enabled

    if not fast_path_enabled():
        yield
        return
    with torch.inference_mode():
        yield


class _ShallowCopiedInfos(list):
    """``DummyVecEnv.buf_infos`` whose ``copy.deepcopy`` copies each info dict one level deep.

    ``DummyVecEnv.step_wait`` returns ``deepcopy(self.buf_infos)`` so that an env that reuses its
    info dict cannot change infos already handed out. The envs of this trainer build a fresh info
    dict on every step and never mutate values they returned, so a copy of each dict (and of the
    ``terminal_observation`` dict) gives the callbacks the same values for a fraction of the cost
    (a deep copy walks every command string and observation array of every step).
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> list[dict[str, Any]]:
        out = []
        for info in self:
            info = dict(info)
            terminal = info.get("terminal_observation")
            if isinstance(terminal, dict):
                info["terminal_observation"] = dict(terminal)
            out.append(info)
        return out


class _ArrayCopiedObs(OrderedDict):
    """``DummyVecEnv.buf_obs`` whose ``copy.deepcopy`` is an ``OrderedDict`` of ``ndarray.copy()`` per key.

    ``DummyVecEnv`` hands out ``deepcopy(self.buf_obs)`` on every step; for a dict of NumPy arrays
    that is the same arrays copied, without the generic ``__reduce_ex__`` reconstruction.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> "OrderedDict[Any, np.ndarray]":
        return OrderedDict((key, value.copy()) for key, value in self.items())


def _cheap_vec_copies(vec_env: Any) -> None:
    """On the fast path, make a ``DummyVecEnv``'s per-step copies cheap; returns nothing.

    Infos are copied one level deep (:class:`_ShallowCopiedInfos`) and observation buffers array by
    array (:class:`_ArrayCopiedObs`): the values handed to SB3 are the same.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    from derl_gym.utils.fastpath import fast_path_enabled

    if not (fast_path_enabled() and isinstance(vec_env, DummyVecEnv)):
        return
    if isinstance(vec_env.buf_infos, list):
        vec_env.buf_infos = _ShallowCopiedInfos(vec_env.buf_infos)
    if isinstance(vec_env.buf_obs, OrderedDict) and all(isinstance(v, np.ndarray) for v in vec_env.buf_obs.values()):
        vec_env.buf_obs = _ArrayCopiedObs(vec_env.buf_obs)


class _TrainEnvFactory:
    """Picklable env factory (SubprocVecEnv ships it to a spawned process)."""

    def __init__(self, spec: Any, expression: str) -> None:
        self.spec = spec
        self.expression = expression

    def __call__(self):
        return make_train_env(self.spec, self.expression, self.spec.primitives.build())


class SB3Trainer(InnerTrainer):
    """An :class:`InnerTrainer` for an SB3 / sb3-contrib ``algorithm`` on ``TextActionWrapper`` envs.

    ``train`` returns a :class:`~derl_gym.agents.inner.registry.TrainOutput` (the model, its success
    curve, env steps and counters), ``evaluate`` a dict with ``score`` (the deterministic policy's
    success rate), ``episodes``, ``mean_length`` and ``env_steps``; ``save`` / ``load`` write and read
    the parameters (``load`` builds a fresh model and unpickles nothing).

    Args:
        algorithm: ``"maskable_ppo"``, ``"ppo"`` or ``"a2c"`` (a key of
            :data:`~derl_gym.agents.inner.trainer.ALGORITHMS`).

    Example:
        A 64-step run on the small cached ALFWorld games (far too short to learn: it shows the API):

        >>> import dataclasses, os, tempfile
        >>> from derl_gym.agents.inner.sb3_trainer import SB3Trainer
        >>> from derl_gym.rewards.expression import MetaReward
        >>> from derl_gym.runtime.presets import get_preset
        >>> from derl_gym.runtime.spec import EnvSpec
        >>> games = {"generator": "tiny", "max_episode_steps": 20}
        >>> spec = get_preset("alfworld-tiny")
        >>> spec = spec.replace(
        ...     train_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "train", **games}),
        ...     validation_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "validation", **games}),
        ...     agent=dataclasses.replace(spec.agent, total_timesteps=64, n_envs=1,   # the preset has 4
        ...                               algo_kwargs={**spec.agent.algo_kwargs, "n_steps": 32, "batch_size": 32,
        ...                                            "n_epochs": 1}))
        >>> trainer, primitives = SB3Trainer(), spec.primitives.build()
        >>> out = trainer.train(spec, MetaReward("g1 + 0.5*g4"), primitives, seed=0)
        >>> out.env_steps, [steps for steps, _ in out.curve], sorted(out.extra)[:3]
        (64, [32, 64], ['primitive_means', 'steps_per_second', 'train_episodes'])
        >>> result = trainer.evaluate(out.agent, spec, spec.validation_env, episodes=2, seed=0)
        >>> sorted(result), result["episodes"], 0.0 <= result["score"] <= 1.0
        (['env_steps', 'episodes', 'mean_length', 'score'], 2, True)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = trainer.save(out.agent, os.path.join(folder, "agent"))
        ...     loaded = trainer.load(spec, path)
        >>> os.path.basename(path), type(loaded).__name__
        ('agent.zip', 'MaskablePPO')
        >>> all((a == b).all() for a, b in zip(loaded.policy.parameters(), out.agent.policy.parameters()))
        True
    """

    def __init__(self, algorithm: str = "maskable_ppo") -> None:
        self.algorithm = algorithm

    def train(self, spec: Any, meta_reward: Any, primitives: Any, seed: int,
              init_model: str | None = None, callbacks: Any = ()) -> TrainOutput:
        """Train ``spec.agent`` for ``total_timesteps``; returns the model, its success curve and counters.

        ``callbacks``: factories, each called with the success-curve callback (its ``curve``) and returning
        an SB3 callback that runs after it (one returning False from ``_on_step`` ends training early:
        the multi-fidelity stop rule)."""
        from derl_gym.agents.inner.trainer import SuccessCurveCallback, build_model, make_vec_env

        agent = spec.agent
        vec_kind = str(agent.algo_kwargs.get("vec_env", "dummy"))
        env_fns = [_TrainEnvFactory(spec, meta_reward.text) for _ in range(max(1, agent.n_envs))]
        vec_env = make_vec_env(env_fns, kind=vec_kind)
        _cheap_vec_copies(vec_env)
        try:
            model = build_model(agent, vec_env, seed=seed)
            if init_model:
                if not os.path.exists(init_model):
                    raise FileNotFoundError(f"init_model {init_model!r} does not exist; pass a path written by "
                                            "run_inner(save_model=...) or model.save")
                model.set_parameters(init_model, exact_match=True, device=model.device)
            callback = SuccessCurveCallback()
            train_start = time.perf_counter()
            # SB3 seeded NumPy's global RNG in build_model (it shuffles minibatches with it) and
            # nothing in the envs draws from it (ALFWorld imports TextWorld through
            # envs/alfworld/textworld_import.py), so the run depends only on seed and the rollouts.
            with fast_distributions(), inference_rollouts(model):
                model.learn(total_timesteps=int(agent.total_timesteps),
                            callback=[callback, *(make(callback) for make in callbacks)] if callbacks else callback)
            train_seconds = time.perf_counter() - train_start
        finally:
            try:
                vec_env.close()
            except Exception:  # noqa: BLE001
                logger.debug("closing the training envs failed", exc_info=True)
        env_steps = int(model.num_timesteps)
        extra = {
            "train_episodes": len(callback.successes),
            "train_success": float(np.mean(callback.successes)) if callback.successes else 0.0,
            "train_seconds": train_seconds,
            "steps_per_second": env_steps / train_seconds if train_seconds > 0 else 0.0,
        }
        if callback.primitive_means:  # mean primitive values of the training episodes, by primitive name
            extra["primitive_means"] = dict(zip([p.name for p in primitives], callback.primitive_means))
        return TrainOutput(agent=model, curve=list(callback.curve), env_steps=env_steps, extra=extra)

    def evaluate(self, agent: Any, spec: Any, env_spec: Any, episodes: int, seed: int) -> dict[str, Any]:
        """Deterministic (masked) policy on ``TextActionWrapper(env)``; returns score, episodes, mean_length, env_steps."""
        from derl_gym.agents.inner.trainer import evaluate_policy

        env = make_eval_env(spec, env_spec)
        try:
            with fast_distributions(), _inference_mode():
                result = evaluate_policy(agent, env, episodes, seed=seed, deterministic=True)
        finally:
            env.close()
        return {"score": result.success_rate, "episodes": len(result.successes),
                "mean_length": float(np.mean(result.lengths)) if result.lengths else 0.0,
                "env_steps": result.env_steps}

    def save(self, agent: Any, path: str) -> str:
        """``model.save(path)``; returns ``path`` or ``path + ".zip"`` (SB3 adds the suffix)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        agent.save(path)
        return path if os.path.exists(path) else f"{path}.zip"

    def load(self, spec: Any, path: str) -> Any:
        """Return a model for ``spec.agent`` with the parameters saved at ``path``.

        The model is built fresh on the validation env and only its parameters are read
        (``set_parameters``), so nothing pickled in the zip is unpickled.
        """
        from derl_gym.agents.inner.trainer import build_model, make_vec_env

        if not os.path.exists(path):
            raise FileNotFoundError(f"no saved SB3 agent at {path!r}; pass a path returned by save()")
        vec_env = make_vec_env([lambda: make_eval_env(spec, spec.validation_env)])
        model = build_model(spec.agent, vec_env, seed=spec.seed)
        model.set_parameters(path, exact_match=True, device=model.device)
        return model
