"""MetaRewardWrapper(env, expr) without primitives= uses the env's own set, env.unwrapped.primitives."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import derl_gym  # noqa: F401  (registers the ids)
from derl_gym.rewards import agent_primitives
from derl_gym.wrappers import MetaRewardWrapper

ALFWORLD_DATA = Path(__file__).resolve().parents[1] / "data" / "alfworld"
FORMULA = "g1 + 0.5*g2"


class NoPrimitivesEnv(gym.Env):
    """A two-step env that publishes no default primitive set."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {"won": False, "progress": 0.0}

    def step(self, action):
        self.t += 1
        return self.t, 0.0, self.t >= 2, False, {"won": False, "progress": 0.0}


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make", [NoPrimitivesEnv, lambda: gym.wrappers.TimeLimit(NoPrimitivesEnv(), 5)])
def test_env_without_primitives_gets_a_clear_error(make):
    with pytest.raises(TypeError) as err:
        MetaRewardWrapper(make(), FORMULA)
    message = str(err.value)
    assert "primitives=" in message and "NoPrimitivesEnv" in message
    assert "env.unwrapped.primitives" in message and "PrimitiveSet" in message
    # with primitives= the same env works
    env = MetaRewardWrapper(make(), FORMULA, agent_primitives())
    env.reset(seed=0)
    env.step(0)
    assert env.step(1)[4]["meta_reward"] == 0.0


@pytest.mark.parametrize("bad", ["g1", [1, 2], 3])
def test_a_bad_primitives_value_is_named(bad):
    with pytest.raises(TypeError, match="must be a PrimitiveSet or a sequence of Primitive"):
        MetaRewardWrapper(NoPrimitivesEnv(), FORMULA, bad)


def test_env_whose_default_is_not_a_primitive_set_is_named():
    class Odd(NoPrimitivesEnv):
        primitives = "success"

    with pytest.raises(TypeError, match=r"Odd\.primitives .* must be a PrimitiveSet"):
        MetaRewardWrapper(Odd(), FORMULA)


# ----------------------------------------------------------------------------- math

@pytest.fixture
def _offline(monkeypatch):
    monkeypatch.setenv("DERL_GYM_OFFLINE", "1")


@pytest.mark.parametrize("env_id", ["derl_gym/GSM8K-v0", "derl_gym/MATH-v0"])
def test_math_env_default_primitives(env_id, shared_data_dir, _offline):
    from derl_gym.envs.math import math_primitives

    env = MetaRewardWrapper(gym.make(env_id, split="test", data_dir=shared_data_dir, max_problems=4, seed=0),
                            FORMULA)
    assert env.primitives.names == math_primitives().names == env.unwrapped.primitives.names
    env.reset(seed=0)
    truth = env.unwrapped.current_problem.ground_truth
    _, reward, terminated, _, info = env.step(f"Step 1: work it out.\nStep 2: done.\nThe answer is \\boxed{{{truth}}}")
    assert terminated and info["task_reward"] == 1.0
    assert info["primitive_values"][:2].tolist() == [1.0, 1.0]
    assert info["meta_reward"] == reward == pytest.approx(1.5)
    env.reset()
    _, reward, _, _, info = env.step("no idea")  # no number, no box: g1 = g2 = 0
    assert info["task_reward"] == 0.0 and info["primitive_values"][:2].tolist() == [0.0, 0.0]
    assert info["meta_reward"] == reward == 0.0


# ----------------------------------------------------------------------------- ALFWorld

@pytest.fixture
def _private_sas_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))


@pytest.mark.parametrize("game", ["clean_apple_in_fridge.tw-pddl", "look_at_cd_under_desklamp.tw-pddl"])
@pytest.mark.parametrize("mode", ["episode", "step"])
def test_alfworld_default_primitives(game, mode, _private_sas_cache):
    pytest.importorskip("textworld")
    from derl_gym.envs.alfworld.primitives import alfworld_primitives

    made = gym.make("derl_gym/ALFWorld-v0", games=[str(ALFWORLD_DATA / game)], max_episode_steps=8)
    env = MetaRewardWrapper(made, FORMULA, mode=mode)
    assert env.primitives.names == alfworld_primitives().names
    env.reset(seed=0)
    info = {}
    walkthrough = env.unwrapped.walkthrough
    total = 0.0
    assert len(walkthrough) < 8
    for command in walkthrough:
        _, reward, terminated, truncated, info = env.step(command)
        total += reward
    assert terminated and not truncated and info["task_reward"] == 1.0 and info["won"]
    # every walkthrough step shortens the plan: g2 = 1, so F = 1 + 0.5
    assert info["primitive_values"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert info["meta_reward"] == pytest.approx(1.5) and total == pytest.approx(1.5)
    env.reset()
    for _ in range(8):  # junk until truncation: no success, no progress
        _, reward, terminated, truncated, info = env.step("dance")
    assert truncated and not terminated and info["meta_reward"] == 0.0
    env.close()


def test_explicit_primitives_override_the_default(_private_sas_cache):
    pytest.importorskip("textworld")
    game = str(ALFWORLD_DATA / "look_at_cd_under_desklamp.tw-pddl")
    valid = agent_primitives("valid", name="mine")
    # "go to drawer" is a valid world change but no plan progress: the two scorers differ on it
    commands = ["go to drawer", "go to bed", "take cd from bed", "go to desk", "use desklamp"]
    results = {}
    for label, primitives in (("default", None), ("valid", valid)):
        env = MetaRewardWrapper(gym.make("derl_gym/ALFWorld-v0", games=[game]), "g2", primitives)
        if primitives is not None:
            assert env.primitives is valid
        env.reset(seed=0)
        for command in commands:
            _, _, terminated, _, info = env.step(command)
        assert terminated
        results[label] = info["meta_reward"]
        env.close()
    # first third of 5 steps = the first 2: progress (0 + 1) / 2, valid (1 + 1) / 2
    assert results == {"default": pytest.approx(0.5), "valid": pytest.approx(1.0)}


# ----------------------------------------------------------------------------- toy text env

def test_toy_text_env_default_primitives():
    from tests.toy_text_env import TOY_ENV_ID

    env = MetaRewardWrapper(gym.make(TOY_ENV_ID, max_episode_steps=30), FORMULA)
    assert env.primitives.names == agent_primitives().names
    obs, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(str(rng.choice(info["admissible_commands"])))
        if terminated or truncated:
            break
    values = info["primitive_values"]
    assert info["meta_reward"] == reward == pytest.approx(values[0] + 0.5 * values[1])
    assert values[0] == float(info["won"])
