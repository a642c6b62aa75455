"""The inner loop: train an agent under one Meta-Reward, score it on validation with the task reward.

:func:`run_inner` is the only function the runners execute. It is picklable (module level), seeds
everything, limits torch to one thread (runners run one job per core) and never raises: any error
(invalid expression, env crash, out of memory) comes back as a failed
:class:`~derl_gym.runtime.spec.InnerResult` carrying the traceback text.
"""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from typing import Any, Sequence

import numpy as np

from derl_gym.runtime.spec import STATUS_OK, EnvSpec, InnerLoopSpec, InnerResult

logger = logging.getLogger(__name__)

__all__ = ["run_inner", "make_train_env", "make_eval_env", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_train_env(spec: InnerLoopSpec, expression: Any, primitives: Any):
    """Return ``TextActionWrapper(MetaRewardWrapper(train env, expression, primitives))``."""
    from derl_gym.wrappers.meta_reward import MetaRewardWrapper
    from derl_gym.wrappers.text_actions import TextActionWrapper

    env = spec.train_env.make()
    env = MetaRewardWrapper(env, expression, primitives, mode=spec.reward_mode)
    return TextActionWrapper(env, **spec.wrapper_kwargs)


def make_eval_env(spec: InnerLoopSpec, env_spec: EnvSpec):
    """Return ``TextActionWrapper(env)`` for evaluation: the env's own task reward, no Meta-Reward."""
    from derl_gym.wrappers.text_actions import TextActionWrapper

    return TextActionWrapper(env_spec.make(), **spec.wrapper_kwargs)


def _evaluate_split(spec: InnerLoopSpec, model: Any, env_spec: EnvSpec, seed: int) -> dict[str, Any]:
    from derl_gym.agents.inner.trainer import evaluate_policy

    env = make_eval_env(spec, env_spec)
    try:
        result = evaluate_policy(model, env, spec.eval_episodes, seed=seed, deterministic=True)
    finally:
        env.close()
    return {"score": result.success_rate, "episodes": len(result.successes),
            "mean_length": float(np.mean(result.lengths)) if result.lengths else 0.0,
            "env_steps": result.env_steps}


def run_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None, init_model: str | None = None,
              save_model: str | None = None, eval_splits: Sequence[str] = ()) -> InnerResult:
    """Train ``spec.agent`` on the train env rewarded by ``expression``; return an :class:`InnerResult`.

    ``score`` = validation success rate (deterministic masked policy, task reward, ``spec.eval_episodes``
    episodes); ``curve`` = ``(env_steps, mean training success)`` per rollout; ``extra`` holds
    ``validation`` details, ``test`` = ``{label: success rate}`` for each label of ``eval_splits``
    (keys of ``spec.test_envs``), ``train_episodes``, ``train_success`` and ``steps_per_second``.
    ``seed`` defaults to ``spec.seed``; ``init_model`` warm-starts from a saved model (DERL-pop);
    ``save_model`` saves the trained model there (``model_path``). Never raises: failures give a
    result with ``status="failed"`` and the traceback in ``error``.
    """
    start = time.perf_counter()
    seed = int(spec.seed if seed is None else seed)
    canonical = str(expression)
    try:
        from derl_gym.rewards.expression import MetaReward

        primitives = spec.primitives.build()
        meta = MetaReward(expression, primitives)
        canonical = meta.canonical
    except BaseException as exc:  # noqa: BLE001 - a job never raises
        if isinstance(exc, KeyboardInterrupt):
            raise
        return InnerResult.failure(str(expression), canonical, _error_text(exc, "invalid expression or primitives"),
                                   seed=seed, wall_seconds=time.perf_counter() - start)

    vec_env = None
    try:
        unknown = [label for label in eval_splits if label not in spec.test_envs]
        if unknown:
            raise KeyError(f"eval_splits {unknown} not in spec.test_envs {sorted(spec.test_envs)}; "
                           "pass labels the spec defines")
        import torch

        from stable_baselines3.common.callbacks import CallbackList

        from derl_gym.agents.inner.trainer import ReseedCallback, SuccessCurveCallback, build_model, make_vec_env

        torch.set_num_threads(1)
        seed_everything(seed)
        agent = spec.agent
        vec_kind = str(agent.algo_kwargs.get("vec_env", "dummy"))
        env_fns = [_TrainEnvFactory(spec, meta.text) for _ in range(max(1, agent.n_envs))]
        vec_env = make_vec_env(env_fns, kind=vec_kind)
        model = build_model(agent, vec_env, seed=seed)
        if init_model:
            if not os.path.exists(init_model):
                raise FileNotFoundError(f"init_model {init_model!r} does not exist; pass a path written by "
                                        "run_inner(save_model=...) or model.save")
            model.set_parameters(init_model, exact_match=True, device=model.device)
        callback = SuccessCurveCallback()
        train_start = time.perf_counter()
        model.learn(total_timesteps=int(agent.total_timesteps), callback=CallbackList([callback, ReseedCallback(seed)]))
        train_seconds = time.perf_counter() - train_start
        env_steps = int(model.num_timesteps)
        vec_env.close()
        vec_env = None

        validation = _evaluate_split(spec, model, spec.validation_env, seed + 100_003)
        test = {label: _evaluate_split(spec, model, spec.test_envs[label], seed + 200_003 + i)
                for i, label in enumerate(eval_splits)}
        model_path = None
        if save_model:
            os.makedirs(os.path.dirname(os.path.abspath(save_model)), exist_ok=True)
            model.save(save_model)
            model_path = save_model if os.path.exists(save_model) else f"{save_model}.zip"
        extra: dict[str, Any] = {
            "validation": validation,
            "train_episodes": len(callback.successes),
            "train_success": float(np.mean(callback.successes)) if callback.successes else 0.0,
            "train_seconds": train_seconds,
            "steps_per_second": env_steps / train_seconds if train_seconds > 0 else 0.0,
            "spec_hash": spec.spec_hash(),
        }
        if eval_splits:
            extra["test"] = {label: value["score"] for label, value in test.items()}
            extra["test_details"] = test
        return InnerResult(expression=str(expression), canonical=canonical, score=float(validation["score"]),
                           status=STATUS_OK, seed=seed, curve=list(callback.curve),
                           wall_seconds=time.perf_counter() - start, env_steps=env_steps,
                           model_path=model_path, extra=extra)
    except BaseException as exc:  # noqa: BLE001 - a job never raises
        if isinstance(exc, KeyboardInterrupt):
            raise
        logger.warning("inner loop failed for %r (seed %d): %s", expression, seed, exc)
        return InnerResult.failure(str(expression), canonical, _error_text(exc, "inner loop failed"),
                                   seed=seed, wall_seconds=time.perf_counter() - start)
    finally:
        if vec_env is not None:
            try:
                vec_env.close()
            except Exception:  # noqa: BLE001
                logger.debug("closing the training envs failed", exc_info=True)


class _TrainEnvFactory:
    """Picklable env factory (SubprocVecEnv ships it to a spawned process)."""

    def __init__(self, spec: InnerLoopSpec, expression: str) -> None:
        self.spec = spec
        self.expression = expression

    def __call__(self):
        return make_train_env(self.spec, self.expression, self.spec.primitives.build())


def _error_text(exc: BaseException, context: str) -> str:
    if isinstance(exc, MemoryError):
        context = f"{context}: out of memory (MemoryError); lower n_envs, max_actions or the network size"
    return f"{context}: {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
