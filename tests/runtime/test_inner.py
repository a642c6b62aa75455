"""run_inner on the toy text world: results, determinism, failures as results, warm start, test splits."""

from __future__ import annotations

import time

import pytest
import torch as th

from derl_gym.runtime.inner import run_inner
from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, InnerResult, PrimitiveSpec
from tests.learning_checks import TEST_SEEDS, check_toy_run_inner
from tests.toy_text_env import TOY_ENV_IMPORT_ID


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_spec(total_timesteps: int = 512, **changes) -> InnerLoopSpec:
    env = lambda offset, **kw: EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 8, "game_offset": offset, **kw})  # noqa: E731
    spec = InnerLoopSpec(
        name="toy",
        train_env=env(0),
        validation_env=env(100),
        test_envs={"L0": env(0), "L1": env(200, num_locations=5)},
        primitives=PrimitiveSpec("derl_gym.rewards.primitives:agent_primitives", {"scorer": "progress"}),
        agent=AgentSpec(total_timesteps=total_timesteps, algo_kwargs={"n_steps": 128, "batch_size": 64},
                        policy_kwargs={"hidden_dim": 32}),
        eval_episodes=10,
        wrapper_kwargs={"max_actions": 8, "dim": 64},
    )
    return spec.replace(**changes)


def test_run_inner_returns_a_complete_result():
    spec = toy_spec()
    result = run_inner(spec, "g1 + 0.5*(g2 + g3 + g4)/3", seed=1, eval_splits=("L0", "L1"))
    assert isinstance(result, InnerResult)
    assert result.ok, result.error
    assert result.seed == 1 and result.error is None
    assert 0.0 <= result.score <= 1.0
    assert result.env_steps >= spec.agent.total_timesteps
    assert result.curve and all(0.0 <= s <= 1.0 for _, s in result.curve)
    assert [p[0] for p in result.curve] == sorted(p[0] for p in result.curve)
    assert result.wall_seconds > 0
    assert set(result.extra["test"]) == {"L0", "L1"}
    assert result.extra["validation"]["episodes"] == spec.eval_episodes
    # canonical form comes from MetaReward, so equivalent formulas share it
    other = run_inner(spec.replace(agent=spec.agent.__class__(total_timesteps=1, algo_kwargs={"n_steps": 8}),
                                   eval_episodes=1), "(g2 + g3 + g4)/6 + g1", seed=1)
    assert other.canonical == result.canonical


def test_same_seed_gives_bitwise_equal_result_and_other_seed_differs():
    spec = toy_spec(total_timesteps=768)
    a = run_inner(spec, "g1 + 0.1*g4", seed=5)
    b = run_inner(spec, "g1 + 0.1*g4", seed=5)
    c = run_inner(spec, "g1 + 0.1*g4", seed=6)
    assert a.ok and b.ok and c.ok
    assert a.score == b.score and a.curve == b.curve and a.env_steps == b.env_steps
    assert a.extra["train_episodes"] == b.extra["train_episodes"]
    assert (a.curve, a.extra["train_episodes"]) != (c.curve, c.extra["train_episodes"])


def test_invalid_expression_fails_fast_without_raising():
    start = time.perf_counter()
    result = run_inner(toy_spec(), "g1 +* g2", seed=0)
    assert result.status == "failed" and result.score == 0.0
    assert "InvalidExpression" in result.error
    assert time.perf_counter() - start < 5
    unknown = run_inner(toy_spec(), "g1 + g9", seed=0)
    assert unknown.status == "failed" and "g9" in unknown.error


def test_crashing_env_becomes_a_failed_result():
    spec = toy_spec()
    crash = spec.replace(train_env=EnvSpec(TOY_ENV_IMPORT_ID, {"crash_at_step": 100}))
    result = run_inner(crash, "g1", seed=0)
    assert result.status == "failed" and result.score == 0.0
    assert "simulated engine failure" in result.error and "Traceback" in result.error
    assert result.canonical == "g1"
    bad_val = spec.replace(validation_env=EnvSpec(TOY_ENV_IMPORT_ID, {"crash_at_reset": True}))
    result = run_inner(bad_val, "g1", seed=0)
    assert result.status == "failed" and "crash_at_reset" in result.error
    missing = spec.replace(train_env=EnvSpec("derl_gym_test/NoSuchEnv-v0"))
    assert run_inner(missing, "g1").status == "failed"


def test_unknown_eval_split_and_algorithm_fail_cleanly():
    result = run_inner(toy_spec(), "g1", eval_splits=("L7",))
    assert result.status == "failed" and "L7" in result.error
    result = run_inner(toy_spec(agent=AgentSpec(algorithm="sac")), "g1")
    assert result.status == "failed" and "unknown algorithm 'sac'" in result.error


def test_save_and_warm_start(tmp_path):
    from sb3_contrib import MaskablePPO

    spec = toy_spec(total_timesteps=256)
    path = tmp_path / "models" / "agent.zip"
    first = run_inner(spec, "g1", seed=0, save_model=str(path))
    assert first.ok and first.model_path == str(path) and path.exists()
    # warm start with a zero learning rate: the saved weights come back unchanged
    frozen = spec.replace(agent=AgentSpec(total_timesteps=128, algo_kwargs={"n_steps": 128, "learning_rate": 0.0},
                                          policy_kwargs={"hidden_dim": 32}))
    again = tmp_path / "again.zip"
    warm = run_inner(frozen, "g1", seed=3, init_model=str(path), save_model=str(again))
    cold = run_inner(frozen, "g1", seed=3, save_model=str(tmp_path / "cold.zip"))
    assert warm.ok and cold.ok
    saved = MaskablePPO.load(path, device="cpu").policy.state_dict()
    warm_params = MaskablePPO.load(again, device="cpu").policy.state_dict()
    cold_params = MaskablePPO.load(tmp_path / "cold.zip", device="cpu").policy.state_dict()
    assert all(th.equal(saved[k], warm_params[k]) for k in saved)
    assert not all(th.equal(saved[k], cold_params[k]) for k in saved)
    missing = run_inner(spec, "g1", seed=0, init_model=str(tmp_path / "nope.zip"))
    assert missing.status == "failed" and "nope.zip" in missing.error


def test_step_mode_and_ppo_registry():
    result = run_inner(toy_spec(reward_mode="step", agent=AgentSpec(algorithm="ppo", total_timesteps=256,
                                                                      algo_kwargs={"n_steps": 128})), "g1 + g2")
    assert result.ok, result.error


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_learning_on_toy_world_beats_random(seed):
    # budget and threshold measured over 20 seeds by benchmarks/bench_seed_robustness.py
    check = check_toy_run_inner(seed)
    assert check.passed, check


def _small_alfworld_spec(games: int = 5, **overrides):
    from derl_gym.runtime.presets import get_preset

    spec = get_preset("alfworld-tiny", **overrides)

    def small(env_spec):  # few games so that a fresh cache generates them quickly
        generator = {**env_spec.kwargs["generator"], "games_per_task": games, "test_games_per_task": 2}
        return EnvSpec(env_spec.env_id, {**env_spec.kwargs, "generator": generator})

    return spec.replace(train_env=small(spec.train_env), validation_env=small(spec.validation_env),
                        test_envs={k: small(v) for k, v in spec.test_envs.items()})


def test_run_inner_on_real_alfworld_tiny_preset():
    pytest.importorskip("textworld")
    spec = _small_alfworld_spec(total_timesteps=256, eval_episodes=3,
                                algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1})
    result = run_inner(spec, "g1 + 0.5*(g2 + g3 + g4)/3", seed=0, eval_splits=("L0",))
    assert result.ok, result.error
    assert result.env_steps >= 256 and result.extra["validation"]["episodes"] == 3
    assert 0.0 <= result.extra["test"]["L0"] <= 1.0


def test_process_wide_env_caches_do_not_change_a_later_job(tmp_path):
    """Engines with process-wide caches (like ALFWorld's) must not make two identical jobs diverge.

    The first job fills the toy's process-wide cache, the second runs on it warm. Nothing reseeds
    NumPy's global RNG any more: the engines' cache misses draw from generators of their own (ALFWorld's
    first TextWorld import: tests/envs/alfworld/test_global_rng.py), and SB3 seeds the global RNG it
    shuffles minibatches with once, in build_model.
    """
    from sb3_contrib import MaskablePPO

    from tests import toy_text_env

    toy_text_env._SEEN_STATES.clear()  # the first job below meets only cache misses
    memo = EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 8, "global_rng_memo": True})
    spec = toy_spec(total_timesteps=768, train_env=memo)
    first = run_inner(spec, "g1 + g2", seed=3, save_model=str(tmp_path / "a.zip"))
    misses = len(toy_text_env._SEEN_STATES)
    second = run_inner(spec, "g1 + g2", seed=3, save_model=str(tmp_path / "b.zip"))
    assert first.ok and second.ok
    assert misses > 0 and len(toy_text_env._SEEN_STATES) == misses  # second job: all cache hits
    assert first.curve == second.curve and first.score == second.score
    a = MaskablePPO.load(tmp_path / "a.zip", device="cpu").policy.state_dict()
    b = MaskablePPO.load(tmp_path / "b.zip", device="cpu").policy.state_dict()
    assert all(th.equal(a[k], b[k]) for k in a)


def test_an_env_drawing_from_the_global_rng_mid_run_changes_training(tmp_path):
    """Why engines must not draw from np.random: SB3's minibatch order comes from that stream.

    Guards the test above: with the draws on the global RNG (what ALFWorld's first TextWorld import
    did) the cold and the warm job differ, so equal results there are the fix's doing.
    """
    from tests import toy_text_env

    toy_text_env._SEEN_STATES.clear()
    memo = EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 8, "global_rng_memo": "global"})
    spec = toy_spec(total_timesteps=512, train_env=memo, eval_episodes=2)
    first = run_inner(spec, "g1 + g2", seed=3, save_model=str(tmp_path / "a.zip"))
    second = run_inner(spec, "g1 + g2", seed=3, save_model=str(tmp_path / "b.zip"))
    assert first.ok and second.ok
    from sb3_contrib import MaskablePPO

    a = MaskablePPO.load(tmp_path / "a.zip", device="cpu").policy.state_dict()
    b = MaskablePPO.load(tmp_path / "b.zip", device="cpu").policy.state_dict()
    assert not all(th.equal(a[k], b[k]) for k in a)
