"""Cheap, picklable stand-ins for :func:`derl_gym.runtime.inner.run_inner`.

Training a real inner agent takes minutes; these job functions take milliseconds, so the meta layer
(runners, store, evaluator, evolve loop, CLI, :class:`~derl_gym.envs.meta.MetaRewardEnv`) can be
tested and demonstrated quickly. They have ``run_inner``'s signature and return an
:class:`~derl_gym.runtime.spec.InnerResult`.

:func:`standin_inner` scores a formula by a fixed, deterministic objective: the Pearson correlation
(clipped to [0, 1]) between the formula's values and a hidden target reward on synthetic primitive
data. The hidden target rewards success most and rewards progress late in the trajectory, so a
formula such as ``g1 + 0.5*g4`` scores higher than ``g1`` or a constant. A small noise term that
depends on ``(canonical formula, seed)`` makes seeds differ, as real inner runs do.

Environment variables (inherited by spawned workers) make the stand-in observable in tests:

- ``DERL_GYM_STANDIN_LOG``: a file to which every job execution appends one line
  ``<canonical>\\t<seed>\\t<pid>`` (a side channel to count trainings);
- ``DERL_GYM_STANDIN_SLEEP``: seconds every job sleeps before returning (simulates training time).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from derl_gym.runtime.spec import (STATUS_OK, STATUS_STOPPED, AgentSpec, EnvSpec, InnerLoopSpec, InnerResult,
                                   PrimitiveSpec)

#: Number of synthetic samples the objective is measured on.
NUM_SAMPLES = 256
#: Seed of the synthetic primitive data (fixed: the objective must not change between runs).
DATA_SEED = 1234


def standin_primitives(num_variables: int = 4):
    """Return the stand-in's primitive set: the paper's agent primitives, padded when asked for more.

    Used as the stand-in spec's primitive factory (``PrimitiveSpec("derl_gym.runtime.standin:standin_primitives")``).

    Args:
        num_variables: how many primitives (formula variables ``g1..gK``) the set has.

    Returns:
        For ``num_variables == 4`` the agent primitive set (``g1`` success, ``g2..g4`` progress over the
        first, middle and last third); otherwise its first ``num_variables`` primitives, padded with
        ``extra_<k>`` step primitives that always score 0.

    Example:
        >>> from derl_gym.runtime.standin import standin_primitives
        >>> [p.name for p in standin_primitives()]
        ['success', 'progress_first', 'progress_middle', 'progress_last']
        >>> [p.name for p in standin_primitives(2)], [p.name for p in standin_primitives(5)][-1]
        (['success', 'progress_first'], 'extra_5')
    """
    from derl_gym.rewards.primitives import PrimitiveSet, Primitive, agent_primitives

    base = agent_primitives("progress")
    if num_variables == len(base):
        return base
    prims = list(base)[:num_variables]
    while len(prims) < num_variables:
        k = len(prims) + 1
        prims.append(Primitive(name=f"extra_{k}", description=f"synthetic extra primitive {k}",
                               function=lambda traj: 0.0, kind="step"))
    return PrimitiveSet(prims, name=f"standin:{num_variables}")


def standin_spec(num_variables: int = 4, name: str = "standin") -> InnerLoopSpec:
    """Return an :class:`InnerLoopSpec` for the stand-in jobs (test splits ``L0``, ``L1``, ``L2``).

    The env ids are placeholders that the stand-in never builds; only the primitive factory
    (how many variables a formula may use) and the spec hash matter.

    Args:
        num_variables: the number of primitives (``g1..gK``) formulas may use.
        name: the spec's name (part of its hash).

    Returns:
        A spec with ``agent.algorithm == "standin"``, 1000 "training" steps and 256 evaluation samples.

    Example:
        >>> from derl_gym.runtime.standin import standin_spec
        >>> spec = standin_spec()
        >>> spec.agent.algorithm, sorted(spec.test_envs), len(spec.primitives.build())
        ('standin', ['L0', 'L1', 'L2'], 4)
        >>> standin_spec(num_variables=2).spec_hash() != spec.spec_hash()   # a different experiment
        True
    """
    env = EnvSpec("derl_gym/ALFWorld-v0", {"split": "train", "level": "L0"})
    return InnerLoopSpec(
        name=name,
        train_env=env,
        validation_env=EnvSpec("derl_gym/ALFWorld-v0", {"split": "validation", "level": "L0"}),
        primitives=PrimitiveSpec("derl_gym.runtime.standin:standin_primitives", {"num_variables": num_variables}),
        agent=AgentSpec(algorithm="standin", total_timesteps=1000),
        test_envs={label: EnvSpec("derl_gym/ALFWorld-v0", {"split": "test", "level": label})
                   for label in ("L0", "L1", "L2")},
        eval_episodes=NUM_SAMPLES,
        description="stand-in inner loop: correlation with a hidden target on synthetic data (no training)",
    )


def synthetic_data(num_variables: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed synthetic data the stand-in objective is measured on.

    Args:
        num_variables: the number of primitive columns.

    Returns:
        ``(values, target)``: ``values[N, K]`` primitive values in [0, 1] (column 0, ``g1``, is a binary
        success flag) and ``target[N]`` the hidden target reward, ``N`` = :data:`NUM_SAMPLES`. Always the
        same arrays (seeded by :data:`DATA_SEED`).

    Example:
        >>> from derl_gym.runtime.standin import synthetic_data
        >>> values, target = synthetic_data(4)
        >>> values.shape, target.shape, sorted(set(values[:, 0].tolist()))
        ((256, 4), (256,), [0.0, 1.0])
        >>> bool((synthetic_data(4)[0] == values).all())   # deterministic
        True
    """
    rng = np.random.default_rng(DATA_SEED)
    values = rng.uniform(0.0, 1.0, size=(NUM_SAMPLES, num_variables))
    values[:, 0] = (rng.uniform(size=NUM_SAMPLES) < 0.3).astype(float)  # g1: binary success
    target = 1.0 * values[:, 0]
    if num_variables >= 4:
        target = target + 1.5 * values[:, 3] + 0.3 * values[:, 1]
    elif num_variables >= 2:
        target = target + 0.5 * values[:, num_variables - 1]
    target = target + 0.1 * rng.standard_normal(NUM_SAMPLES)
    return values, target


def _noise(canonical: str, seed: int, label: str = "") -> float:
    digest = hashlib.sha256(f"{canonical}|{seed}|{label}".encode()).digest()
    return (int.from_bytes(digest[:4], "little") / 2**32 - 0.5) * 0.04  # in [-0.02, 0.02)


def standin_score(expression: str, num_variables: int = 4) -> tuple[str, float]:
    """Return a formula's canonical form and its noise-free stand-in objective.

    Args:
        expression: a formula over ``g1..g<num_variables>``.
        num_variables: the number of variables the formula may use.

    Returns:
        ``(canonical, objective)``: the canonical form and the Pearson correlation, clipped to [0, 1],
        between the formula's values and the hidden target on :func:`synthetic_data` (0.0 for a
        constant formula).

    Raises:
        InvalidExpression: (a ``ValueError``) when ``expression`` is not a valid formula.

    Example:
        >>> from derl_gym.runtime.standin import standin_score
        >>> canonical, objective = standin_score("0.5*g4 + g1")
        >>> canonical, round(objective, 3)
        ('g1 + 0.5*g4', 0.882)
        >>> objective > standin_score("g1")[1] > standin_score("3")[1] == 0.0
        True
    """
    from derl_gym.rewards.expression import MetaReward

    reward = MetaReward(expression, num_variables)
    values, target = synthetic_data(num_variables)
    out = np.asarray(reward.evaluate(values), dtype=float)
    if out.std() < 1e-12:
        return reward.canonical, 0.0
    corr = float(np.corrcoef(out, target)[0, 1])
    return reward.canonical, float(np.clip(corr, 0.0, 1.0)) if np.isfinite(corr) else 0.0


def standin_primitive_means(expression: str, num_variables: int = 4) -> dict[str, float]:
    """Return ``{primitive name: mean}`` over the synthetic samples that the formula rates above its median
    (what an agent trained on it would favour): the stand-in's ``extra["primitive_means"]``.

    Example:
        >>> from derl_gym.runtime.standin import standin_primitive_means
        >>> means = standin_primitive_means("g1 + 0.5*g4")
        >>> list(means)
        ['success', 'progress_first', 'progress_middle', 'progress_last']
        >>> means["success"] > standin_primitive_means("g2")["success"]   # rewarding success favours it
        True
    """
    from derl_gym.rewards.expression import MetaReward

    values, _ = synthetic_data(num_variables)
    out = np.asarray(MetaReward(expression, num_variables).evaluate(values), dtype=float)
    above = out > np.median(out)
    chosen = values[above] if above.any() else values[out >= np.median(out)]
    names = [p.name for p in standin_primitives(num_variables)]
    return {name: float(v) for name, v in zip(names, chosen.mean(axis=0))}


def _log_execution(canonical: str, seed: int | None) -> None:
    log = os.environ.get("DERL_GYM_STANDIN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{canonical}\t{seed}\t{os.getpid()}\n")
            fh.flush()
            os.fsync(fh.fileno())


def standin_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
                  init_model: str | None = None, save_model: str | None = None,
                  eval_splits: Sequence[str] = (), stop_rule: dict | None = None) -> InnerResult:
    """Score a formula like a trained inner run would, in milliseconds (``run_inner``'s signature).

    The score is the formula's correlation with the hidden target (:func:`standin_score`) plus a seed
    noise of at most 0.02. The "training" advances in four chunks of ``total_timesteps / 4`` env steps,
    recording one curve point ``(steps, score * k / 4)`` after chunk k.

    Args:
        spec: the inner-loop spec (:func:`standin_spec`); only its primitives, seed and
            ``agent.total_timesteps`` are used.
        expression: the formula to score.
        seed: the inner seed (default ``spec.seed``).
        init_model: a "warm start" path: adds a bonus of 0.01 and is echoed in ``extra["init_model"]``.
        save_model: where to write a small JSON "model" (``.json`` is appended if missing).
        eval_splits: test-split labels whose scores fill ``extra["test"]``.
        stop_rule: a multi-fidelity :class:`~derl_gym.runtime.multi_fidelity.StopRule` dict, checked
            after each chunk, before its point is recorded, as the SB3 callback does. A stopped run has
            status ``"stopped"``, ``env_steps`` = the chunk end, the curve so far, a lower-fidelity score
            ``score * (0.5 + 0.5 * fraction trained)`` (no test splits), ``extra["multi_fidelity"]``, and
            sleeps only that fraction of ``DERL_GYM_STANDIN_SLEEP`` (a quarter of it before each check).

    Returns:
        An :class:`InnerResult`; ``extra`` holds ``standin``, ``primitive_means`` and the optional keys
        above. Never raises: an invalid formula gives a failed result.

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> spec = standin_spec()
        >>> result = standin_inner(spec, "g1 + 0.5*g4", seed=0, eval_splits=["L0"])
        >>> result.status, round(result.score, 3), result.env_steps, [steps for steps, _ in result.curve]
        ('ok', 0.901, 1000, [250, 500, 750, 1000])
        >>> result.score > standin_inner(spec, "g1", seed=0).score, sorted(result.extra["test"])
        (True, ['L0'])
        >>> standin_inner(spec, "g1", seed=0).score != standin_inner(spec, "g1", seed=1).score  # seeds differ
        True
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     saved = standin_inner(spec, "g1", seed=0, save_model=f"{tmp}/agent")
        ...     saved.model_path.endswith("agent.json")
        True
        >>> failed = standin_inner(spec, "g1 +* g2")
        >>> failed.status, failed.error.split(":")[0]
        ('failed', 'InvalidExpression')
    """
    start = time.perf_counter()
    seed = spec.seed if seed is None else int(seed)
    try:
        num_variables = int(spec.primitives.kwargs.get("num_variables") or len(spec.primitives.build()))
        canonical, base = standin_score(expression, num_variables)
    except Exception as exc:  # noqa: BLE001 - a job never raises
        return InnerResult.failure(expression, expression, f"{type(exc).__name__}: {exc}", seed=seed,
                                   wall_seconds=time.perf_counter() - start)
    _log_execution(canonical, seed)
    delay = float(os.environ.get("DERL_GYM_STANDIN_SLEEP", "0") or 0)
    bonus = 0.01 if init_model else 0.0
    score = float(np.clip(base + _noise(canonical, seed) + bonus, 0.0, 1.0)) if base > 0 else 0.0
    total = steps = spec.agent.total_timesteps
    curve = [(int(steps * k / 4), float(score * k / 4)) for k in range(1, 5)]
    tracker = None
    if stop_rule:
        from derl_gym.runtime.multi_fidelity import StopTracker

        tracker = StopTracker(stop_rule)
    for k, (chunk_end, _) in enumerate(curve):
        if delay > 0:
            time.sleep(delay / len(curve))  # "training" the chunk
        if tracker is not None and tracker.check(chunk_end, curve[:k]):
            steps, curve = chunk_end, curve[:k]
            break
    fraction = steps / total if total else 1.0
    stopped = tracker is not None and tracker.stopped_at is not None
    low = (0.5 + 0.5 * fraction) if stopped else 1.0
    score *= low
    extra: dict = {"standin": True, "primitive_means": standin_primitive_means(expression, num_variables)}
    if init_model:
        extra["init_model"] = init_model
    if eval_splits and not stopped:  # a stopped run skips the test splits, as run_inner does
        extra["test"] = {label: float(np.clip(score - 0.05 * i + _noise(canonical, seed, label), 0.0, 1.0))
                         if base > 0 else 0.0
                         for i, label in enumerate(eval_splits)}
    model_path = None
    if save_model:
        path = Path(save_model)
        if path.suffix != ".json":
            path = path.with_name(path.name + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"canonical": canonical, "score": score}), encoding="utf-8")
        model_path = str(path)
    if tracker is not None:
        extra["multi_fidelity"] = tracker.summary()
    return InnerResult(expression=expression, canonical=canonical, score=score, seed=seed, curve=curve,
                       status=STATUS_STOPPED if stopped else STATUS_OK,
                       wall_seconds=time.perf_counter() - start, env_steps=steps,
                       model_path=model_path, extra=extra)


def failing_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
                  init_model: str | None = None, save_model: str | None = None,
                  eval_splits: Sequence[str] = ()) -> InnerResult:
    """A job that crashes with an exception (for runner and evaluator failure tests).

    Logs the call to ``DERL_GYM_STANDIN_LOG`` (when set) first, like :func:`standin_inner`.

    Returns:
        Never returns.

    Raises:
        RuntimeError: always, naming the formula.

    Example:
        >>> from derl_gym.runtime.standin import failing_inner, standin_spec
        >>> failing_inner(standin_spec(), "g1 + g2", seed=0)
        Traceback (most recent call last):
            ...
        RuntimeError: stand-in failure for 'g1 + g2'
    """
    _log_execution(expression, seed)
    raise RuntimeError(f"stand-in failure for {expression!r}")


def sleeping_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
                   init_model: str | None = None, save_model: str | None = None,
                   eval_splits: Sequence[str] = ()) -> InnerResult:
    """A slow (or hung) job: sleep for ``DERL_GYM_STANDIN_SLEEP`` seconds, then score like :func:`standin_inner`.

    The variable defaults to 60 (a hung job, for timeout tests). :func:`standin_inner` reads the same
    variable, so the whole call takes about twice that.

    Returns:
        :func:`standin_inner`'s result for the same arguments.

    Example:
        >>> import os, time
        >>> from derl_gym.runtime.standin import sleeping_inner, standin_inner, standin_spec
        >>> os.environ["DERL_GYM_STANDIN_SLEEP"] = "0.05"
        >>> try:
        ...     start = time.perf_counter()
        ...     result = sleeping_inner(standin_spec(), "g1", seed=0)
        ...     elapsed = time.perf_counter() - start
        ... finally:
        ...     del os.environ["DERL_GYM_STANDIN_SLEEP"]
        >>> elapsed >= 0.05, result.score == standin_inner(standin_spec(), "g1", seed=0).score
        (True, True)
    """
    time.sleep(float(os.environ.get("DERL_GYM_STANDIN_SLEEP", "60") or 60))
    return standin_inner(spec, expression, seed=seed, init_model=init_model, save_model=save_model,
                         eval_splits=eval_splits)


def crashing_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
                   init_model: str | None = None, save_model: str | None = None,
                   eval_splits: Sequence[str] = ()) -> InnerResult:
    """A job that kills its worker process with ``os._exit(3)`` (as an OOM kill or a segfault would).

    Logs the call to ``DERL_GYM_STANDIN_LOG`` (when set) first, so a test can count the attempts.

    Returns:
        Never returns: the process exits with code 3.

    Example:
        Run it in a separate process (it would end this one):

        >>> import os, subprocess, sys, tempfile
        >>> code = ("from derl_gym.runtime.standin import crashing_inner, standin_spec; "
        ...         "crashing_inner(standin_spec(), 'g1', seed=4)")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     log = os.path.join(tmp, "jobs.log")
        ...     done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DERL_GYM_STANDIN_LOG": log})
        ...     logged = open(log).read().split()[:2]
        >>> done.returncode, logged
        (3, ['g1', '4'])
    """
    _log_execution(expression, seed)
    os._exit(3)


def selective_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
                    init_model: str | None = None, save_model: str | None = None,
                    eval_splits: Sequence[str] = ()) -> InnerResult:
    """Dispatch on the formula text, for mixed-failure tests.

    A formula containing ``9`` raises (:func:`failing_inner`), one containing ``8`` hangs (sleeps
    60 s), one containing ``7`` kills its worker (:func:`crashing_inner`); any other formula runs
    :func:`echo_inner` (no parsing).

    Returns:
        :func:`echo_inner`'s result for a formula without 7, 8 or 9.

    Raises:
        RuntimeError: for a formula containing ``9``.

    Example:
        >>> from derl_gym.runtime.standin import selective_inner, standin_spec
        >>> result = selective_inner(standin_spec(), "g1 + g2", seed=0)
        >>> result.canonical, result.score
        ('g1+g2', 0.7)
        >>> selective_inner(standin_spec(), "0.9*g1", seed=0)
        Traceback (most recent call last):
            ...
        RuntimeError: stand-in failure for '0.9*g1'
    """
    if "9" in expression:
        return failing_inner(spec, expression, seed=seed)
    if "8" in expression:
        time.sleep(60)
    if "7" in expression:
        return crashing_inner(spec, expression, seed=seed)
    return echo_inner(spec, expression, seed=seed, init_model=init_model, save_model=save_model,
                      eval_splits=eval_splits)


def echo_inner(spec: InnerLoopSpec, expression: str, *, seed: int | None = None,
               init_model: str | None = None, save_model: str | None = None,
               eval_splits: Sequence[str] = ()) -> InnerResult:
    """A dependency-free job for runner tests: echo the formula without parsing it.

    Sleeps ``DERL_GYM_STANDIN_SLEEP`` seconds and logs ``<canonical>, <seed>, <pid>`` (tab-separated) to
    ``DERL_GYM_STANDIN_LOG`` like :func:`standin_inner`.

    Returns:
        An ``"ok"`` :class:`InnerResult` whose canonical form is the text without spaces and whose score
        is ``(len(expression) % 10) / 10``; ``extra`` holds the worker's ``pid``, ``test`` (0.5 per
        ``eval_splits`` label) and ``init_model`` when given.

    Example:
        >>> import os
        >>> from derl_gym.runtime.standin import echo_inner, standin_spec
        >>> result = echo_inner(standin_spec(), "g1 + g2", seed=3, eval_splits=["L1"])
        >>> result.canonical, result.score, result.seed, result.extra["test"], result.extra["pid"] == os.getpid()
        ('g1+g2', 0.7, 3, {'L1': 0.5}, True)
    """
    seed = spec.seed if seed is None else int(seed)
    canonical = "".join(expression.split())
    _log_execution(canonical, seed)
    delay = float(os.environ.get("DERL_GYM_STANDIN_SLEEP", "0") or 0)
    if delay > 0:
        time.sleep(delay)
    extra: dict = {"pid": os.getpid()}
    if eval_splits:
        extra["test"] = {label: 0.5 for label in eval_splits}
    if init_model:
        extra["init_model"] = init_model
    return InnerResult(expression=expression, canonical=canonical, score=(len(expression) % 10) / 10,
                       seed=seed, extra=extra)
