"""The inner loop: train an agent under one Meta-Reward, score it on validation with the task reward.

:func:`run_inner` is the only function the runners execute. It dispatches on ``spec.agent.algorithm``
to a registered :class:`~derl_gym.agents.inner.registry.InnerTrainer` (SB3's ``maskable_ppo``,
``ppo``, ``a2c``; TRL's ``grpo``). It is picklable (module level), seeds
everything, limits torch to one thread (runners run one job per core) and never raises: any error
(invalid expression, env crash, out of memory) comes back as a failed
:class:`~derl_gym.runtime.spec.InnerResult` carrying the traceback text.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from typing import Any, Sequence

import numpy as np

from derl_gym.runtime.spec import STATUS_OK, STATUS_STOPPED, EnvSpec, InnerLoopSpec, InnerResult

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
    """Return ``TextActionWrapper(MetaRewardWrapper(train env, expression, primitives))`` (the SB3 trainer's env)."""
    from derl_gym.agents.inner.sb3_trainer import make_train_env as _make

    return _make(spec, expression, primitives)


def make_eval_env(spec: InnerLoopSpec, env_spec: EnvSpec):
    """Return ``TextActionWrapper(env)`` for SB3 evaluation: the env's own task reward, no Meta-Reward."""
    from derl_gym.agents.inner.sb3_trainer import make_eval_env as _make

    return _make(spec, env_spec)


def run_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None, init_model: str | None = None,
              save_model: str | None = None, eval_splits: Sequence[str] = (),
              stop_rule: dict[str, Any] | None = None) -> InnerResult:
    """Train ``spec.agent`` on the train env rewarded by ``expression``; return an :class:`InnerResult`.

    ``score`` = validation success rate (deterministic masked policy, task reward, ``spec.eval_episodes``
    episodes); ``curve`` = ``(env_steps, mean training success)`` per rollout; ``extra`` holds
    ``validation`` details, ``test`` = ``{label: success rate}`` for each label of ``eval_splits``
    (keys of ``spec.test_envs``), ``train_episodes``, ``train_success`` and ``steps_per_second``.
    ``seed`` defaults to ``spec.seed``; ``init_model`` warm-starts from a saved model (DERL-pop);
    ``save_model`` saves the trained model there (``model_path``). Never raises: failures give a
    result with ``status="failed"`` and the traceback in ``error``.

    ``stop_rule`` (a :class:`~derl_gym.runtime.multi_fidelity.StopRule` dict, from the multi-fidelity
    scheduler) may stop training at a rung; the run is then still evaluated and comes back with status
    ``"stopped"``, ``env_steps`` < the budget and ``extra["multi_fidelity"]`` (``stopped_at``, the rung
    decisions); it skips ``eval_splits`` (a stopped run never becomes the best formula). A trainer without a ``callbacks`` argument (TRL's ``grpo``) ignores it and trains the
    full budget (logged).
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

    trainer = agent = None
    try:
        unknown = [label for label in eval_splits if label not in spec.test_envs]
        if unknown:
            raise KeyError(f"eval_splits {unknown} not in spec.test_envs {sorted(spec.test_envs)}; "
                           "pass labels the spec defines")
        import torch

        from derl_gym.agents.inner.registry import get_trainer

        trainer = get_trainer(spec.agent.algorithm)
        torch.set_num_threads(1)
        seed_everything(seed)
        train_kwargs: dict[str, Any] = {}
        stop = None
        if stop_rule:
            import inspect

            from derl_gym.runtime.multi_fidelity import StopCallbackFactory

            if "callbacks" in inspect.signature(trainer.train).parameters:
                stop = StopCallbackFactory(stop_rule)
                train_kwargs["callbacks"] = [stop]
            else:
                logger.warning("trainer %r takes no callbacks: multi-fidelity stop rule ignored, full budget",
                               spec.agent.algorithm)
        trained = trainer.train(spec, meta, primitives, seed, init_model=init_model, **train_kwargs)
        agent = trained.agent

        stopped = stop is not None and stop.tracker.stopped_at is not None
        if stopped:  # a stopped run never becomes the best formula: its test scores would only cost time
            eval_splits = ()
        validation = trainer.evaluate(agent, spec, spec.validation_env, spec.eval_episodes, seed + 100_003)
        test = {label: trainer.evaluate(agent, spec, spec.test_envs[label], spec.eval_episodes, seed + 200_003 + i)
                for i, label in enumerate(eval_splits)}
        model_path = trainer.save(agent, save_model) if save_model else None
        extra: dict[str, Any] = {
            "validation": validation,
            **trained.extra,
            "spec_hash": spec.spec_hash(),
        }
        if eval_splits:
            extra["test"] = {label: value["score"] for label, value in test.items()}
            extra["test_details"] = test
        if stop is not None:
            extra["multi_fidelity"] = stop.tracker.summary()
        return InnerResult(expression=str(expression), canonical=canonical, score=float(validation["score"]),
                           status=STATUS_STOPPED if stopped else STATUS_OK, seed=seed, curve=list(trained.curve),
                           wall_seconds=time.perf_counter() - start, env_steps=int(trained.env_steps),
                           model_path=model_path, extra=extra)
    except BaseException as exc:  # noqa: BLE001 - a job never raises
        if isinstance(exc, KeyboardInterrupt):
            raise
        logger.warning("inner loop failed for %r (seed %d): %s", expression, seed, exc)
        return InnerResult.failure(str(expression), canonical, _error_text(exc, "inner loop failed"),
                                   seed=seed, wall_seconds=time.perf_counter() - start)
    finally:
        if trainer is not None and agent is not None:
            try:
                trainer.close(agent)
            except Exception:  # noqa: BLE001
                logger.debug("closing the trained agent failed", exc_info=True)


def _error_text(exc: BaseException, context: str) -> str:
    if isinstance(exc, MemoryError):
        context = f"{context}: out of memory (MemoryError); lower n_envs, max_actions or the network size"
    return f"{context}: {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
