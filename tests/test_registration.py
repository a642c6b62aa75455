"""`import derl_gym` registers every env id; the math envs build through gym.make and pass check_env."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import derl_gym
from derl_gym.envs import ENV_ENTRY_POINTS

EXPECTED_IDS = ("derl_gym/GSM8K-v0", "derl_gym/MATH-v0", "derl_gym/ALFWorld-v0",
                "derl_gym/ScienceWorld-v0", "derl_gym/MetaReward-v0")


def test_import_registers_all_ids():
    for env_id in EXPECTED_IDS:
        assert env_id in gym.registry, f"{env_id} not registered by `import derl_gym`"
    for env_id, entry_point in ENV_ENTRY_POINTS.items():
        assert gym.registry[env_id].entry_point == entry_point
    assert gym.registry["derl_gym/GSM8K-v0"].entry_point == "derl_gym.envs.math:GSM8KEnv"
    assert gym.registry["derl_gym/MATH-v0"].entry_point == "derl_gym.envs.math:MATHEnv"


def test_register_envs_is_idempotent():
    before = len(gym.registry)
    assert set(derl_gym.register_envs()) >= set(EXPECTED_IDS)
    assert len(gym.registry) == before


@pytest.mark.parametrize("env_id, kwargs", [
    ("derl_gym/GSM8K-v0", {"split": "validation"}),
    ("derl_gym/MATH-v0", {"split": "test"}),
])
def test_math_envs_make_and_check(env_id, kwargs, shared_data_dir, monkeypatch):
    monkeypatch.setenv("DERL_GYM_OFFLINE", "1")
    env = gym.make(env_id, data_dir=shared_data_dir, **kwargs)
    assert env.spec.id == env_id
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["task"] == obs
    _, reward, terminated, truncated, info = env.step("no idea")
    assert reward == 0.0 and terminated and not truncated and "ground_truth" in info
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_math_env_make_via_env_var(shared_data_dir, monkeypatch):
    monkeypatch.setenv("DERL_GYM_OFFLINE", "1")
    monkeypatch.setenv("DERL_GYM_DATA", str(shared_data_dir))
    env = gym.make("derl_gym/GSM8K-v0", split="test")
    env.reset(seed=0)
    truth = env.unwrapped.current_problem.ground_truth
    assert env.step(f"#### {truth}")[1] == 1.0
    env.close()
