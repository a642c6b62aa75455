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
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and, when present, CUDA).

    Args:
        seed: the seed (NumPy gets ``seed % 2**32``).

    Returns:
        None.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> def draw():
        ...     return random.random(), float(np.random.rand()), float(torch.rand(1))
        >>> seed_everything(3); first = draw()
        >>> seed_everything(3); first == draw()
        True
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_train_env(spec: InnerLoopSpec, expression: Any, primitives: Any):
    """Build the env the SB3 trainer trains on: :func:`derl_gym.agents.inner.sb3_trainer.make_train_env` (same
    arguments), imported only when called.

    Returns:
        ``TextActionWrapper(MetaRewardWrapper(train env, expression, primitives))``: a Dict observation
        with an action mask over at most ``max_actions`` candidate commands and a ``Discrete`` action.

    Example:
        >>> from derl_gym.runtime.presets import get_preset
        >>> games = {"generator": "tiny", "max_episode_steps": 20}  # the small cached games of ALFWorldEnv's example
        >>> spec = get_preset("alfworld-tiny").replace(
        ...     train_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "train", **games}))
        >>> env = make_train_env(spec, "g1 + 0.5*g4", spec.primitives.build())
        >>> obs, info = env.reset(seed=0)
        >>> type(env).__name__, type(env.env).__name__, env.action_space, obs["action_mask"].shape
        ('TextActionWrapper', 'MetaRewardWrapper', Discrete(24), (24,))
        >>> obs, reward, terminated, truncated, info = env.step(int(obs["action_mask"].argmax()))
        >>> reward, "task_reward" in info   # the Meta-Reward pays at the episode's end (reward_mode "episode")
        (0.0, True)
        >>> env.close()
    """
    from derl_gym.agents.inner.sb3_trainer import make_train_env as _make

    return _make(spec, expression, primitives)


def make_eval_env(spec: InnerLoopSpec, env_spec: EnvSpec):
    """Build an env the SB3 trainer evaluates on, with the env's own task reward and no Meta-Reward:
    :func:`derl_gym.agents.inner.sb3_trainer.make_eval_env` (same arguments), imported only when called.

    Returns:
        ``TextActionWrapper(env)``.

    Example:
        >>> from derl_gym.runtime.presets import get_preset
        >>> games = {"generator": "tiny", "max_episode_steps": 20}  # the small cached games of ALFWorldEnv's example
        >>> spec = get_preset("alfworld-tiny")
        >>> env = make_eval_env(spec, EnvSpec("derl_gym/ALFWorld-v0", {"split": "validation", **games}))
        >>> obs, info = env.reset(seed=0)
        >>> type(env).__name__, type(env.unwrapped).__name__, "MetaRewardWrapper" in str(env)
        ('TextActionWrapper', 'ALFWorldEnv', False)
        >>> env.close()
    """
    from derl_gym.agents.inner.sb3_trainer import make_eval_env as _make

    return _make(spec, env_spec)


#: validation episodes of an inner run are seeded with ``seed + VALIDATION_SEED_OFFSET``
VALIDATION_SEED_OFFSET = 100_003


def run_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None, init_model: str | None = None,
              save_model: str | None = None, eval_splits: Sequence[str] = (),
              stop_rule: dict[str, Any] | None = None) -> InnerResult:
    """Train ``spec.agent`` on the train env rewarded by ``expression``; score it on validation.

    The function every runner executes. It is picklable (module level), seeds everything, limits torch
    to one thread (runners run one job per core) and dispatches on ``spec.agent.algorithm`` to a
    registered :class:`~derl_gym.agents.inner.registry.InnerTrainer`.

    Args:
        spec: the inner-loop spec (envs, primitives, agent, evaluation episodes).
        expression: the Meta-Reward formula.
        seed: the inner seed (default ``spec.seed``).
        init_model: a saved model to warm-start from (DERL-pop).
        save_model: where to save the trained model (the result's ``model_path``).
        eval_splits: labels of ``spec.test_envs`` to score after training (``extra["test"]``).
        stop_rule: a :class:`~derl_gym.runtime.multi_fidelity.StopRule` dict (from the multi-fidelity
            scheduler) that may stop training at a rung; the run is then still evaluated and comes back
            with status ``"stopped"``, ``env_steps`` < the budget and ``extra["multi_fidelity"]``
            (``stopped_at``, the rung decisions); it skips ``eval_splits`` (a stopped run never becomes the
            best formula). A trainer without a ``callbacks`` argument (TRL's ``grpo``) ignores it and
            trains the full budget (logged).

    Returns:
        An :class:`InnerResult`: ``score`` = validation success rate (deterministic masked policy, task
        reward, ``spec.eval_episodes`` episodes); ``curve`` = ``(env_steps, mean training success)`` per
        rollout; ``extra`` holds ``validation`` details, ``test`` = ``{label: success rate}`` for each
        label of ``eval_splits``, ``train_episodes``, ``train_success`` and ``steps_per_second``. Never
        raises: a failure (invalid formula, unknown split, env crash, out of memory) gives a result with
        ``status="failed"``, score 0 and the traceback in ``error``.

    Example:
        Failures come back as results (a real training run takes seconds to minutes; for a
        millisecond stand-in with the same signature see :func:`~derl_gym.runtime.standin.standin_inner`):

        >>> from derl_gym.runtime.presets import get_preset
        >>> spec = get_preset("alfworld-tiny")
        >>> bad = run_inner(spec, "g1 +* g2", seed=0)
        >>> bad.status, bad.score, bad.error.split(":")[:2]
        ('failed', 0.0, ['invalid expression or primitives', ' InvalidExpression'])
        >>> unknown = run_inner(spec, "g4 + g1", eval_splits=["L9"])
        >>> unknown.status, unknown.canonical, "pass labels the spec defines" in unknown.error
        ('failed', 'g1 + g4', True)
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
        validation = trainer.evaluate(agent, spec, spec.validation_env, spec.eval_episodes,
                                      seed + VALIDATION_SEED_OFFSET)
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
