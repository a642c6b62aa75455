"""Named inner-loop specs (:class:`~derl_gym.runtime.spec.InnerLoopSpec`) with documented budgets.

``get_preset(name, **overrides)`` returns a fresh spec; ``overrides`` replace top-level spec fields
(``seed=3``, ``eval_episodes=50`` ...) and the shortcuts ``total_timesteps``, ``n_envs``,
``algorithm`` and ``device`` replace the agent's fields. ``describe_presets()`` lists every preset
with its budget. Wall times were measured on one core of the development machine (2 shared cores)
with ``benchmarks/bench_inner.py``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, PrimitiveSpec

__all__ = ["PRESETS", "PresetInfo", "get_preset", "describe_presets", "preset_names", "VALIDATION_KINDS",
           "with_validation"]

ALFWORLD_ID = "derl_gym/ALFWorld-v0"
ALFWORLD_PRIMITIVES = PrimitiveSpec("derl_gym.envs.alfworld.primitives:alfworld_primitives",
                                    {"step_scorer": "progress"})

#: ALFWorld commands that only gather information; the tiny/small presets drop them from the
#: candidate list (they never advance a task, and removing them shortens random exploration less
#: than it speeds up learning, see benchmarks/results/bench_inner.md)
INFO_COMMANDS = ("examine", "inventory", "look", "help")
#: alfworld-tiny also drops ``close``: pick_and_place_simple never needs it, and open/close loops
#: were the commonest failure of trained agents
TINY_EXCLUDE = (*INFO_COMMANDS, "close")

AGENT_KEYS = ("total_timesteps", "n_envs", "algorithm", "device", "algo_kwargs", "policy_kwargs")
#: override shortcuts that go into ``agent.algo_kwargs`` (language-model presets: ``model="/path/to/model"``)
ALGO_KEYS = ("model",)


@dataclass(frozen=True)
class PresetInfo:
    """A preset's ``factory`` (returns a fresh spec) and its expected ``wall_time`` per inner run (text shown by
    :func:`describe_presets`).

    Example:
        >>> info = PRESETS["alfworld-tiny"]
        >>> isinstance(info, PresetInfo), info.factory is alfworld_tiny, "CPU per run" in info.wall_time
        (True, True, True)
    """

    factory: Callable[[], InnerLoopSpec]
    wall_time: str


def _alfworld_env(split: str, level: str, task_types: tuple[str, ...], generator: dict[str, Any],
                  max_episode_steps: int) -> EnvSpec:
    return EnvSpec(ALFWORLD_ID, {"split": split, "level": level, "task_types": list(task_types),
                                 "generator": dict(generator), "max_episode_steps": max_episode_steps})


def _level_splits(env: Callable[..., EnvSpec]) -> dict[str, Any]:
    """Return ``train_env``, ``validation_env`` and ``test_envs`` (L0 and L1) of an InnerLoopSpec from
    ``env(split, level="L0")``."""
    return {"train_env": env("train"), "validation_env": env("validation"),
            "test_envs": {"L0": env("test"), "L1": env("test", "L1")}}


def _alfworld_splits(task_types: Sequence[str], generator: dict[str, Any], max_episode_steps: int) -> dict[str, Any]:
    """Return :func:`_level_splits` of ALFWorld envs on ``task_types`` generated with ``generator``."""
    return _level_splits(lambda split, level="L0": _alfworld_env(split, level, task_types, generator,
                                                                  max_episode_steps))


# ------------------------------------------------------------------------------- alfworld-tiny
TINY_TASKS = ("pick_and_place_simple",)
TINY_GENERATOR = {"task_types": list(TINY_TASKS), "games_per_task": 300, "test_games_per_task": 50,
                  "num_receptacles": 2, "num_distractors": 1, "seed": 0}
TINY_STEPS = 20


def alfworld_tiny() -> InnerLoopSpec:
    """Return the ``alfworld-tiny`` spec: pick_and_place_simple, few receptacles, about 30 s of CPU per run.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (MaskablePPO on 4 envs x 64 steps per rollout,
        24k env steps, test splits L0 and L1).

    Example:
        >>> spec = alfworld_tiny()
        >>> spec.name, spec.agent.algorithm, spec.agent.total_timesteps, sorted(spec.test_envs)
        ('alfworld-tiny', 'maskable_ppo', 24000, ['L0', 'L1'])
        >>> spec.agent.n_envs, spec.agent.algo_kwargs["n_steps"]
        (4, 64)
        >>> spec.train_env.kwargs["task_types"], spec.train_env.kwargs["max_episode_steps"]
        (['pick_and_place_simple'], 20)
    """
    return InnerLoopSpec(
        name="alfworld-tiny",
        **_alfworld_splits(TINY_TASKS, TINY_GENERATOR, TINY_STEPS),
        primitives=ALFWORLD_PRIMITIVES,
        # 4 envs x 64 steps: the same 256-step rollouts as 1 x 256 with a batched policy forward, 3.16x less
        # CPU per run at the same validation (benchmarks/bench_inner_speed.py --old-n-envs 1)
        agent=AgentSpec(algorithm="maskable_ppo", total_timesteps=24_000, n_envs=4,
                        algo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3,
                                     "gamma": 0.95, "gae_lambda": 0.95, "ent_coef": 0.0},
                        policy_kwargs={"hidden_dim": 64, "scoring": "product"}),
        reward_mode="episode",
        eval_episodes=30,
        seed=0,
        wrapper_kwargs={"max_actions": 24, "dim": 128, "include": ["observation", "task", "history"],
                        "history_length": 3, "exclude": list(TINY_EXCLUDE)},
        description="ALFWorld pick_and_place_simple, 2 extra receptacles, 1 distractor, 20-step episodes; "
                    "MaskablePPO with the DRRN-style action-scoring policy",
    )


# ------------------------------------------------------------------------------ alfworld-small
SMALL_TASKS = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
               "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place")
SMALL_GENERATOR = {"task_types": list(SMALL_TASKS), "games_per_task": 60, "test_games_per_task": 20,
                   "num_receptacles": 4, "num_distractors": 2, "seed": 0}
#: agent settings shared by alfworld-small and alfworld-l2 (the tiny preset's tuned values, more steps)
SMALL_ALGO = {"n_steps": 512, "batch_size": 128, "n_epochs": 4, "learning_rate": 1e-3, "gamma": 0.97,
              "gae_lambda": 0.95, "ent_coef": 0.0}


def _small_agent() -> AgentSpec:
    """Return the agent shared by alfworld-small and alfworld-l2 (a fresh object: its dicts are mutable)."""
    return AgentSpec(algorithm="maskable_ppo", total_timesteps=50_000, n_envs=1, algo_kwargs=dict(SMALL_ALGO),
                     policy_kwargs={"hidden_dim": 128, "scoring": "product"})


def _small_wrapper_kwargs() -> dict[str, Any]:
    """Return the text-action wrapper settings shared by alfworld-small and alfworld-l2."""
    return {"max_actions": 48, "dim": 256, "include": ["observation", "task", "history"],
            "history_length": 4, "exclude": list(INFO_COMMANDS)}


def alfworld_small() -> InnerLoopSpec:
    """Return the ``alfworld-small`` spec: all six task types, more receptacles, bigger budget.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (50k env steps, 40-step episodes, test L0 and L1).

    Example:
        >>> spec = alfworld_small()
        >>> len(spec.train_env.kwargs["task_types"]), spec.agent.total_timesteps, spec.wrapper_kwargs["max_actions"]
        (6, 50000, 48)
    """
    return InnerLoopSpec(
        name="alfworld-small",
        **_alfworld_splits(SMALL_TASKS, SMALL_GENERATOR, 40),
        primitives=ALFWORLD_PRIMITIVES,
        agent=_small_agent(),
        eval_episodes=40,
        wrapper_kwargs=_small_wrapper_kwargs(),
        description="ALFWorld, all six task types, 4 extra receptacles, 2 distractors, 40-step episodes",
    )


# -------------------------------------------------------------------------------- alfworld-l2
L2_TRAIN_TASKS = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
                  "pick_heat_then_place_in_recep")
L2_TEST_TASKS = ("pick_cool_then_place_in_recep", "pick_two_obj_and_place")


def alfworld_l2() -> InnerLoopSpec:
    """Return the ``alfworld-l2`` spec: train on pick/look/clean/heat, test L2 on cool/pick-two.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` whose test split ``L2`` holds task types never trained on.

    Example:
        >>> spec = alfworld_l2()
        >>> sorted(spec.test_envs), spec.test_envs["L2"].kwargs["task_types"]
        (['L0', 'L1', 'L2'], ['pick_cool_then_place_in_recep', 'pick_two_obj_and_place'])
        >>> set(spec.train_env.kwargs["task_types"]) & set(spec.test_envs["L2"].kwargs["task_types"])
        set()
    """
    generator = {**SMALL_GENERATOR, "task_types": list(SMALL_TASKS)}

    def env(split: str, level: str, tasks: tuple[str, ...]) -> EnvSpec:
        return _alfworld_env(split, level, tasks, generator, 40)

    return InnerLoopSpec(
        name="alfworld-l2",
        train_env=env("train", "L0", L2_TRAIN_TASKS),
        validation_env=env("validation", "L0", L2_TRAIN_TASKS),
        test_envs={"L0": env("test", "L0", L2_TRAIN_TASKS), "L1": env("test", "L1", L2_TRAIN_TASKS),
                   "L2": env("test", "L2", L2_TEST_TASKS)},
        primitives=ALFWORLD_PRIMITIVES,
        agent=_small_agent(),
        eval_episodes=40,
        wrapper_kwargs=_small_wrapper_kwargs(),
        description="ALFWorld L2 (out of distribution): train pick/look/clean/heat, test cool/pick-two",
    )


#: Budget of ``alfworld-l2-fast``: outcome-only ``g1`` stays far from saturation there (measured over 5 seeds:
#: validation 0.305, test L2 0.120; see the preset's wall time), at 60% of alfworld-l2's env steps.
L2_FAST_STEPS = 30_000


def alfworld_l2_fast() -> InnerLoopSpec:
    """Return ``alfworld-l2-fast``: ``alfworld-l2``'s splits and agent at 30k env steps per inner run.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec`: ``alfworld-l2`` with ``total_timesteps`` :data:`L2_FAST_STEPS`.

    Example:
        >>> fast, full = alfworld_l2_fast(), alfworld_l2()
        >>> fast.name, fast.agent.total_timesteps, full.agent.total_timesteps, fast.test_envs == full.test_envs
        ('alfworld-l2-fast', 30000, 50000, True)
    """
    spec = alfworld_l2()
    return spec.replace(
        name="alfworld-l2-fast", agent=dataclasses.replace(spec.agent, total_timesteps=L2_FAST_STEPS),
        description="ALFWorld L2 as alfworld-l2 (train pick/look/clean/heat, test cool/pick-two) at 30k env steps "
                    "per inner run: the cheapest budget measured where outcome-only g1 has headroom on L2")


# ------------------------------------------------------------------------- validation variants
#: The selection split a search scores formulas on (ALFWorld presets; ``derl-gym --validation KIND``):
#:
#: - ``paper`` (default): the preset's own validation env, the paper's choice: a deterministic 20% of
#:   the training games (held out from training, same task types and floor plans);
#: - ``fresh``: a larger held-out set of the training task types: games of an independently seeded
#:   generation (generator seed + 1000; every game's seed includes it, so none is a training or test
#:   game), the 80% part of it (4x the paper's validation games per task type), seen floor plans;
#: - ``unseen-plans``: held-out games of the training task types on ALFRED's unseen floor plans, again
#:   from the independently seeded generation. It selects for transfer to new rooms; it shares floor
#:   plans (not games) with the L1 test, so L1 is then no longer an untouched distribution (L0/L2 are).
#:
#: No variant uses a test game: the search never sees test data.
VALIDATION_KINDS = ("paper", "fresh", "unseen-plans")
#: Offset added to the generator seed for the ``fresh`` / ``unseen-plans`` validation games.
VALIDATION_GENERATOR_SEED_OFFSET = 1000


def with_validation(spec: InnerLoopSpec, kind: str = "paper") -> InnerLoopSpec:
    """Return ``spec`` with another validation (selection) split.

    Args:
        spec: an inner-loop spec (an ALFWorld preset with generated games for ``fresh``/``unseen-plans``).
        kind: one of :data:`VALIDATION_KINDS`; ``"paper"`` returns ``spec`` unchanged.

    Returns:
        The spec with the new ``validation_env`` (games of an independently seeded generation: the
        generator seed plus :data:`VALIDATION_GENERATOR_SEED_OFFSET`), its description saying which.

    Raises:
        ValueError: for an unknown kind, or for ``fresh``/``unseen-plans`` on a preset without generated
            ALFWorld games.

    Example:
        >>> spec = alfworld_tiny()
        >>> fresh = with_validation(spec, "fresh").validation_env.kwargs
        >>> fresh["split"], fresh["generator"]["seed"] - spec.validation_env.kwargs["generator"]["seed"]
        ('train', 1000)
        >>> plans = with_validation(spec, "unseen-plans").validation_env.kwargs
        >>> plans["split"], plans["level"], with_validation(spec) is spec
        ('test', 'L1', True)
        >>> with_validation(gsm8k_lm_tiny(), "fresh")
        Traceback (most recent call last):
        ...
        ValueError: validation='fresh' needs an ALFWorld preset with generated games; 'gsm8k-lm-tiny' has validation env 'derl_gym/GSM8K-v0'; use validation='paper'
    """
    if kind not in VALIDATION_KINDS:
        raise ValueError(f"unknown validation kind {kind!r}; choose one of {', '.join(VALIDATION_KINDS)}")
    if kind == "paper":
        return spec
    val = spec.validation_env
    if val.env_id != ALFWORLD_ID or "generator" not in val.kwargs:
        raise ValueError(f"validation={kind!r} needs an ALFWorld preset with generated games; {spec.name!r} has "
                         f"validation env {val.env_id!r}; use validation='paper'")
    generator = dict(val.kwargs["generator"])
    generator["seed"] = int(generator.get("seed", 0)) + VALIDATION_GENERATOR_SEED_OFFSET
    kwargs = {**val.kwargs, "generator": generator, "level": "L0"}
    if kind == "fresh":
        kwargs["split"] = "train"   # the larger (80%) part of the independent generation
    else:
        kwargs.update(split="test", level="L1")  # unseen floor plans of the independent generation
    return spec.replace(validation_env=EnvSpec(val.env_id, kwargs),
                        description=f"{spec.description} [validation: {kind}]")


# ---------------------------------------------------------------------------- scienceworld-tiny
SCIENCEWORLD_ID = "derl_gym/ScienceWorld-v0"
SCIENCEWORLD_TINY_TASK = "lifespan-longest-lived"
#: scienceworld-tiny keeps only ``teleport to`` and ``focus on`` style commands (proposed by the
#: ScienceWorld engineer: the task is solved in two steps with the easy simplification), and of those
#: only ``teleport to outside`` (where the animals are) and ``focus on`` anything but the outside's fixed
#: non-animal objects (the same 15 in every variation). Focusing on a wrong object fails the task, so
#: the agent still has to learn to go outside first and then which of the (about 3) animals lives longest.
SCIENCEWORLD_TINY_EXCLUDE = (
    "activate", "close", "connect", "deactivate", "disconnect", "dunk", "eat", "examine", "flush", "go to",
    "inventory", "look", "mix", "move", "open", "pick up", "pour", "put down", "read", "reset", "task", "use", "wait",
    *(f"teleport to {room}" for room in ("art studio", "bathroom", "bedroom", "foundry", "greenhouse", "hallway",
                                          "kitchen", "living room", "workshop")),
    *(f"focus on {thing}" for thing in ("agent", "air", "axe", "door", "fire pit", "foundry", "fountain", "greenhouse",
                                         "ground", "inventory", "kitchen", "orange", "outside", "substance", "wood")),
)


def scienceworld_tiny() -> InnerLoopSpec:
    """Return the ``scienceworld-tiny`` spec: lifespan-longest-lived, easy simplification, 8-step episodes.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (MaskablePPO, 2k env steps, test L0 and L1).

    Example:
        >>> spec = scienceworld_tiny()
        >>> spec.train_env.kwargs["task"], spec.train_env.kwargs["max_episode_steps"], spec.agent.total_timesteps
        ('lifespan-longest-lived', 8, 2000)
        >>> "teleport to kitchen" in spec.wrapper_kwargs["exclude"], "teleport to outside" in spec.wrapper_kwargs["exclude"]
        (True, False)
    """
    def env(split: str, level: str = "L0") -> EnvSpec:
        return EnvSpec(SCIENCEWORLD_ID, {"task": SCIENCEWORLD_TINY_TASK, "split": split, "level": level,
                                         "simplification": "easy", "max_episode_steps": 8,
                                         "max_admissible": None})

    return InnerLoopSpec(
        name="scienceworld-tiny",
        **_level_splits(env),
        primitives=PrimitiveSpec("derl_gym.envs.scienceworld:scienceworld_primitives", {"step_scorer": "progress"}),
        agent=AgentSpec(algorithm="maskable_ppo", total_timesteps=SCIENCEWORLD_TINY_STEPS, n_envs=1,
                        algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3,
                                     "gamma": 0.95, "gae_lambda": 0.95, "ent_coef": 0.0},
                        policy_kwargs={"hidden_dim": 64, "scoring": "product"}),
        eval_episodes=10,
        wrapper_kwargs={"max_actions": 64, "dim": 128, "include": ["observation", "task", "history"],
                        "history_length": 3, "exclude": list(SCIENCEWORLD_TINY_EXCLUDE)},
        description="ScienceWorld lifespan-longest-lived (easy simplification), 8-step episodes, only 'teleport to "
                    "outside' and 'focus on' commands (the outside's fixed non-animal objects left out). Measured, "
                    "outcome-only g1, 2k steps, seeds 0/1/2: validation 0.7/1.0/0.6 and 1.0/1.0/0.6 in two runs, "
                    "test L1 0.7/1.0/0.9 and 1.0/1.0/0.9; random policy over 150 episodes: validation 0.02, L1 0.08",
    )


SCIENCEWORLD_TINY_STEPS = 2000


# ------------------------------------------------------------------ language-model inner agents (TRL GRPO)
#: Model of the real-model LM presets: ``$DERL_GYM_MODEL`` (a local folder), else the paper's hub id
#: (which loads only where the hub or its cache is reachable; otherwise the inner run fails cleanly).
def _lm_model(default: str) -> str:
    return os.environ.get("DERL_GYM_MODEL") or default


def _math_data_dir() -> dict[str, Any]:
    """``{"data_dir": ...}`` for the math envs: ``$DERL_GYM_DATA``, else ``<repo>/../shared/data`` when it exists."""
    if os.environ.get("DERL_GYM_DATA"):
        return {}
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return {"data_dir": str(shared)} if shared.is_dir() else {}


GSM8K_ID = "derl_gym/GSM8K-v0"
MATH_ID = "derl_gym/MATH-v0"
MATH_PRIMITIVES = PrimitiveSpec("derl_gym.envs.math:math_primitives", {})


def _gsm8k_env(split: str, max_problems: int | None) -> EnvSpec:
    kwargs: dict[str, Any] = {"split": split, **_math_data_dir()}
    if max_problems is not None:
        kwargs["max_problems"] = max_problems
    return EnvSpec(GSM8K_ID, kwargs)


def gsm8k_lm_tiny() -> InnerLoopSpec:
    """Return ``gsm8k-lm-tiny``: the tiny offline Qwen2 model, 16 GRPO steps on 64 GSM8K problems.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (GRPO with ``model="tiny"``, 128 completions in all).

    Example:
        >>> spec = gsm8k_lm_tiny()
        >>> spec.agent.algorithm, spec.agent.algo_kwargs["model"], spec.train_env.kwargs["max_problems"]
        ('grpo', 'tiny', 64)
    """
    return InnerLoopSpec(
        name="gsm8k-lm-tiny",
        train_env=_gsm8k_env("train", 64),
        validation_env=_gsm8k_env("validation", 16),
        test_envs={"L0": _gsm8k_env("test", 32)},
        primitives=MATH_PRIMITIVES,
        agent=AgentSpec(algorithm="grpo", total_timesteps=128,
                        algo_kwargs={"model": "tiny", "num_generations": 4, "prompts_per_step": 2,
                                     "max_completion_length": 32, "learning_rate": 1e-3, "beta": 0.0}),
        eval_episodes=16,
        description="GSM8K with the tiny random-weight Qwen2 model (derl_gym.models.tiny): 16 GRPO steps x 2 prompts "
                    "x 4 completions of <= 32 tokens, greedy pass@1 on 16 validation problems; 20 s per run measured on "
                    "one busy core. A plumbing check: a random model scores 0 on the task",
    )


def math_lm_tiny() -> InnerLoopSpec:
    """Return ``math-lm-tiny``: the tiny model on MATH-500 (train/validation carved from the test file).

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` without test splits (MATH-500 is the holdout's source).

    Example:
        >>> spec = math_lm_tiny()
        >>> spec.train_env.env_id, spec.train_env.kwargs["holdout_from"], spec.test_envs, spec.agent == gsm8k_lm_tiny().agent
        ('derl_gym/MATH-v0', 'test', {}, True)
    """
    def env(split: str, n: int) -> EnvSpec:
        return EnvSpec(MATH_ID, {"split": split, "holdout_from": "test", "max_problems": n, **_math_data_dir()})

    spec = gsm8k_lm_tiny()
    return spec.replace(name="math-lm-tiny", train_env=env("train", 64), validation_env=env("validation", 16),
                        test_envs={}, description="MATH-500 (80/20 holdout of the test file) with the tiny model; "
                        "same budget as gsm8k-lm-tiny")


def _paper_lm_agent(model: str, total: int, **kwargs: Any) -> AgentSpec:
    algo = {"model": _lm_model(model), "num_generations": 8, "prompts_per_step": 16, "max_completion_length": 1024,
            "learning_rate": 1e-6, "beta": 0.001, "temperature": 1.0, "lora_r": 0, "eval_batch_size": 64, **kwargs}
    return AgentSpec(algorithm="grpo", total_timesteps=total, algo_kwargs=algo, device="auto")


def gsm8k_lm() -> InnerLoopSpec:
    """Return ``gsm8k-lm``: a real model (``$DERL_GYM_MODEL`` or ``model=``) on full GSM8K, paper-shaped budget.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (GRPO, 200 steps x 16 prompts x 8 completions).

    Example:
        >>> spec = gsm8k_lm()
        >>> spec.agent.total_timesteps, spec.agent.algo_kwargs["max_completion_length"], spec.eval_episodes
        (25600, 1024, 500)
    """
    return InnerLoopSpec(
        name="gsm8k-lm", train_env=_gsm8k_env("train", None), validation_env=_gsm8k_env("validation", None),
        test_envs={"L0": _gsm8k_env("test", None)}, primitives=MATH_PRIMITIVES,
        agent=_paper_lm_agent("Qwen/Qwen2.5-3B-Instruct", 200 * 8 * 16), eval_episodes=500,
        description="GSM8K, Qwen2.5-3B-Instruct-style model from $DERL_GYM_MODEL or model=/path; GRPO 200 steps x 16 "
                    "prompts x 8 completions of <= 1024 tokens, lr 1e-6, KL 0.001; greedy pass@1 on 500 validation "
                    "problems. Budget shaped like the paper's, NOT measured here (needs one GPU of >= 40 GB)",
    )


def math_lm() -> InnerLoopSpec:
    """Return ``math-lm``: a real model on MATH (``math/train.jsonl`` for training, MATH-500 for test).

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (as ``gsm8k-lm`` with 2048-token completions).

    Example:
        >>> spec = math_lm()
        >>> spec.train_env.env_id, spec.train_env.kwargs["split"], spec.agent.algo_kwargs["max_completion_length"]
        ('derl_gym/MATH-v0', 'train', 2048)
    """
    def env(split: str) -> EnvSpec:
        return EnvSpec(MATH_ID, {"split": split, **_math_data_dir()})

    return InnerLoopSpec(
        name="math-lm", train_env=env("train"), validation_env=env("validation"), test_envs={"L0": env("test")},
        primitives=MATH_PRIMITIVES, agent=_paper_lm_agent("Qwen/Qwen2.5-3B-Instruct", 200 * 8 * 16,
                                                          max_completion_length=2048),
        eval_episodes=500,
        description="MATH (needs math/train.jsonl; MATH-500 as test), Qwen2.5-3B-style model from $DERL_GYM_MODEL or "
                    "model=; as gsm8k-lm with 2048-token completions. NOT measured here",
    )


# ---------------------------------------------------------------- multi-turn language-model presets
ALFWORLD_LM_PRIMITIVES = PrimitiveSpec("derl_gym.envs.alfworld.primitives:alfworld_primitives",
                                       {"step_scorer": "tags"})
ALFWORLD_LM_TINY_STEPS = 6


def alfworld_lm_tiny() -> InnerLoopSpec:
    """Return ``alfworld-lm-tiny``: the tiny model on alfworld-tiny's games, 6-turn conversations, RLVMR tags.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (GRPO with ``model="tiny"``, step scorer ``tags``).

    Example:
        >>> spec = alfworld_lm_tiny()
        >>> spec.agent.algorithm, spec.primitives.kwargs, spec.train_env.kwargs["max_episode_steps"]
        ('grpo', {'step_scorer': 'tags'}, 6)
        >>> spec.train_env.kwargs["generator"] == alfworld_tiny().train_env.kwargs["generator"]   # the same games
        True
    """
    return InnerLoopSpec(
        name="alfworld-lm-tiny",
        **_alfworld_splits(TINY_TASKS, TINY_GENERATOR, ALFWORLD_LM_TINY_STEPS),
        primitives=ALFWORLD_LM_PRIMITIVES,
        agent=AgentSpec(algorithm="grpo", total_timesteps=32,
                        algo_kwargs={"model": "tiny", "num_generations": 4, "prompts_per_step": 1,
                                     "max_completion_length": 24, "learning_rate": 1e-3, "beta": 0.0,
                                     "eval_batch_size": 8}),
        eval_episodes=8,
        description="ALFWorld pick_and_place_simple (alfworld-tiny's games), 6-turn conversations with the tiny "
                    "model: RLVMR tags, <action> commands, step scorer 'tags'; 8 GRPO steps x 1 game x 4 episodes, "
                    "greedy pass@1 on 8 validation games; 23 s per run measured on one busy core",
    )


def _paper_text_agent(total: int) -> AgentSpec:
    return _paper_lm_agent("Qwen/Qwen2.5-1.5B-Instruct", total, max_completion_length=256, num_generations=8,
                           prompts_per_step=16, max_turns=None, eval_batch_size=32)


def alfworld_lm() -> InnerLoopSpec:
    """Return ``alfworld-lm``: a real model (``$DERL_GYM_MODEL`` or ``model=``) on all six ALFWorld task types.

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (GRPO, 150 steps x 16 games x 8 episodes).

    Example:
        >>> spec = alfworld_lm()
        >>> len(spec.train_env.kwargs["task_types"]), spec.train_env.kwargs["max_episode_steps"], spec.agent.total_timesteps
        (6, 50, 19200)
    """
    return InnerLoopSpec(
        name="alfworld-lm", **_alfworld_splits(SMALL_TASKS, SMALL_GENERATOR, 50), primitives=ALFWORLD_LM_PRIMITIVES,
        agent=_paper_text_agent(150 * 8 * 16), eval_episodes=100,
        description="ALFWorld, six task types, 50-turn conversations, Qwen2.5-1.5B-Instruct-style model from "
                    "$DERL_GYM_MODEL or model=; GRPO 150 steps x 16 games x 8 episodes, <= 256 tokens per turn, "
                    "lr 1e-6, KL 0.001 (verl-agent/RLVMR-shaped). NOT measured here (needs one GPU of >= 40 GB)",
    )


def scienceworld_lm() -> InnerLoopSpec:
    """Return ``scienceworld-lm``: a real model on ScienceWorld's lifespan task (as scienceworld-tiny's env).

    Returns:
        A fresh :class:`~derl_gym.runtime.spec.InnerLoopSpec` (30-turn conversations, budget as ``alfworld-lm``).

    Example:
        >>> spec = scienceworld_lm()
        >>> spec.train_env.kwargs["max_episode_steps"], spec.agent.total_timesteps == alfworld_lm().agent.total_timesteps
        (30, True)
    """
    def env(split: str, level: str = "L0") -> EnvSpec:
        return EnvSpec(SCIENCEWORLD_ID, {"task": SCIENCEWORLD_TINY_TASK, "split": split, "level": level,
                                         "simplification": "easy", "max_episode_steps": 30, "max_admissible": 64})

    return InnerLoopSpec(
        name="scienceworld-lm", **_level_splits(env),
        primitives=PrimitiveSpec("derl_gym.envs.scienceworld:scienceworld_primitives", {"step_scorer": "tags"}),
        agent=_paper_text_agent(150 * 8 * 16), eval_episodes=50,
        description="ScienceWorld lifespan-longest-lived, 30-turn conversations, Qwen2.5-1.5B-style model from "
                    "$DERL_GYM_MODEL or model=; budget as alfworld-lm. NOT measured here",
    )


PRESETS: dict[str, PresetInfo] = {
    "alfworld-tiny": PresetInfo(alfworld_tiny, "27-33 s of CPU per run (4 envs, 3 seeds; 40-54 s wall "
                                               "beside 2 other inner runs on a 2-core machine; "
                                               "benchmarks/bench_inner_speed.py); first use also generates "
                                               "~400 games (cached)"),
    "alfworld-small": PresetInfo(alfworld_small, "120-189 s per run measured one at a time on the 2-core dev "
                                                 "machine beside a test run (seeds 0, 1; benchmarks/bench_inner.py "
                                                 "--tag small): g1 validation 0.17/0.25, "
                                                 "g1 + 0.5*(g2 + g3 + g4)/3 0.07/0.35, random 0.07"),
    "alfworld-l2": PresetInfo(alfworld_l2, "231-519 s per run measured on the busy 2-core dev machine (load 3-5), "
                                           "3 seeds, 48 episodes (benchmarks/results/meta_noise_l2.md): g1 "
                                           "validation 0.549, test L2 0.132; g1 + 0.5*(g2 + g3 + g4)/3 validation "
                                           "0.472, L2 0.153"),
    "alfworld-l2-fast": PresetInfo(alfworld_l2_fast, "152-556 s per run measured (mean 260 s), one run at a time on "
                                                     "the busy 2-core dev machine (load 2-5; 61-127 train steps/s); "
                                                     "5 seeds: g1 validation 0.305 ± 0.071 (95% CI), test L2 0.120; "
                                                     "(g1+g2+g3+g4)/4 validation 0.315, L2 0.080; "
                                                     "g1 + 0.5*(g2+g3+g4)/3 validation 0.375, L2 0.125 "
                                                     "(benchmarks/results/meta_noise.md)"),
    "scienceworld-tiny": PresetInfo(scienceworld_tiny, "117-160 s per run measured on one worker of the busy "
                                                       "2-core machine (load ~3.5; 15-20 train steps/s); g1 "
                                                       "learns: validation 0.77 and 0.87 mean over 3 seeds in two "
                                                       "runs vs 0.02 random"),
    "gsm8k-lm-tiny": PresetInfo(gsm8k_lm_tiny, "20 s per inner run measured on one core of the busy 2-core dev machine (load ~8): 16 GRPO "
                                                "steps at ~2 steps/s, then 16 greedy validation answers; first use also builds the tiny model (~5 s, cached)"),
    "math-lm-tiny": PresetInfo(math_lm_tiny, "20 s per inner run measured on one core of the busy 2-core dev machine (as gsm8k-lm-tiny)"),
    "alfworld-lm-tiny": PresetInfo(alfworld_lm_tiny, "23 s per inner run measured on one core of the busy 2-core dev machine (load ~8): 8 GRPO "
                                                      "steps at ~0.8 steps/s, 8 greedy validation episodes; uses alfworld-tiny's cached games"),
    "alfworld-lm": PresetInfo(alfworld_lm, "not measured here: hours on one GPU (paper-shaped budget)"),
    "scienceworld-lm": PresetInfo(scienceworld_lm, "not measured here: hours on one GPU (paper-shaped budget)"),
    "gsm8k-lm": PresetInfo(gsm8k_lm, "not measured here: hours on one GPU (paper-shaped budget)"),
    "math-lm": PresetInfo(math_lm, "not measured here: hours on one GPU (paper-shaped budget)"),
}


def preset_names() -> list[str]:
    """Return the registered preset names (the keys of :data:`PRESETS`), sorted.

    Example:
        >>> names = preset_names()
        >>> names == sorted(names), "alfworld-tiny" in names, "standin" in names   # the CLI adds the stand-in
        (True, True, False)
    """
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> InnerLoopSpec:
    """Return a fresh :class:`InnerLoopSpec` for preset ``name`` with ``overrides`` applied.

    ``overrides`` may name spec fields (``seed``, ``eval_episodes``, ``wrapper_kwargs`` ...) or agent
    fields (``total_timesteps``, ``n_envs``, ``algorithm``, ``device``, ``algo_kwargs``,
    ``policy_kwargs``), or ``model`` (merged into ``agent.algo_kwargs``: the LM presets' model folder).

    Args:
        name: a preset name of :func:`preset_names`.
        **overrides: the fields to replace.

    Returns:
        A new spec (the preset's factory is called each time: changing it never changes the preset).

    Raises:
        KeyError: for an unknown preset (the message lists the known names).
        TypeError: for an unknown override (the message lists the accepted fields).

    Example:
        >>> spec = get_preset("alfworld-tiny", seed=3, total_timesteps=2000, eval_episodes=5)
        >>> spec.seed, spec.agent.total_timesteps, spec.eval_episodes, spec.agent.algorithm
        (3, 2000, 5, 'maskable_ppo')
        >>> get_preset("gsm8k-lm-tiny", model="/models/qwen").agent.algo_kwargs["model"]
        '/models/qwen'
        >>> get_preset("alfworld-tiny", steps=1)
        Traceback (most recent call last):
        ...
        TypeError: unknown override(s) ['steps'] for preset 'alfworld-tiny'; use InnerLoopSpec fields ...
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    spec = PRESETS[name].factory()
    agent_changes = {k: overrides.pop(k) for k in list(overrides) if k in AGENT_KEYS}
    algo_changes = {k: overrides.pop(k) for k in list(overrides) if k in ALGO_KEYS}
    if algo_changes:
        base = agent_changes.get("algo_kwargs", spec.agent.algo_kwargs)
        agent_changes["algo_kwargs"] = {**base, **algo_changes}
    fields = {f.name for f in dataclasses.fields(InnerLoopSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown override(s) {unknown} for preset {name!r}; use InnerLoopSpec fields "
                        f"{sorted(fields)}, agent fields {list(AGENT_KEYS)} or {list(ALGO_KEYS)}")
    if agent_changes:
        overrides["agent"] = dataclasses.replace(overrides.get("agent", spec.agent), **agent_changes)
    return spec.replace(**overrides) if overrides else spec


def describe_presets() -> str:
    """Return a text table of the presets (what ``derl-gym list`` prints).

    Returns:
        Three lines per preset, in name order: ``<name>: <description>``, its budget (env steps, algorithm,
        eval episodes, wall time) and its splits.

    Example:
        >>> lines = describe_presets().splitlines()
        >>> len(lines) == 3 * len(preset_names()), lines[0].split(":")[0]
        (True, 'alfworld-l2')
        >>> lines[1].split(";")[0]
        '  budget: 50,000 env steps (maskable_ppo, 1 env), eval_episodes=40'
    """
    lines = []
    for name in preset_names():
        info = PRESETS[name]
        spec = info.factory()
        lines.append(f"{name}: {spec.description}")
        lines.append(f"  budget: {spec.agent.total_timesteps:,} env steps ({spec.agent.algorithm}, "
                     f"{spec.agent.n_envs} env), eval_episodes={spec.eval_episodes}; wall time: {info.wall_time}")
        lines.append(f"  train={spec.train_env.kwargs.get('split')}, validation={spec.validation_env.kwargs.get('split')}, "
                     f"test={{{', '.join(sorted(spec.test_envs))}}}, reward_mode={spec.reward_mode}")
    return "\n".join(lines)
