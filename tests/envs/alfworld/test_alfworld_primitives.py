"""Tests of the ALFWorld primitive sets on trajectories played in ALFWorldEnv."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from derl_gym.envs.alfworld import alfworld_primitives
from derl_gym.envs.alfworld.env import ALFWorldEnv
from derl_gym.rewards.primitives import Step, Trajectory, rollout, segment_bounds

HANDMADE = Path(__file__).resolve().parents[2] / "data" / "alfworld" / "clean_apple_in_fridge.tw-pddl"

@pytest.fixture(autouse=True)
def _private_sas_cache(tmp_path_factory, monkeypatch):
    """Keep the on-disk SAS translation cache of these tests out of the user's cache folder."""
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))



def record(env: ALFWorldEnv, actions) -> Trajectory:
    """Play ``actions(reset_info)`` (a list decided at reset) and return the trajectory."""
    plan: list[str] = []

    def choose(info, t):
        if t == 0:
            plan.extend(actions(info))
        return plan[t] if t < len(plan) else None

    return rollout(env, choose, seed=0)


def walkthrough_actions(env):
    return lambda info: list(env.walkthrough)


def play_random(env: ALFWorldEnv, seed: int, junk_every: int = 4) -> Trajectory:
    rng = random.Random(seed)
    return rollout(env, lambda info, t: "jump around" if t % junk_every == 0 else rng.choice(info["admissible_commands"]),
                   max_steps=env.max_episode_steps, seed=seed)


def expected_segments(traj: Trajectory, score) -> list[float]:
    values = []
    for seg in ("first", "middle", "last"):
        start, stop = segment_bounds(len(traj.steps), seg)
        values.append(float(np.mean([score(s.info) for s in traj.steps[start:stop]])))
    return values


def test_names_order_and_describe():
    prims = alfworld_primitives()
    assert prims.names == ["success", "progress_first", "progress_middle", "progress_last"]
    assert prims.variables == ["g1", "g2", "g3", "g4"]
    text = prims.describe()
    assert "planner's remaining plan got shorter" in text and text.count("\n") == 3
    assert "look/examine/inventory" in alfworld_primitives("valid").describe()
    assert "<planning>" in alfworld_primitives("tags").describe()
    with pytest.raises(ValueError, match="unknown ALFWorld step scorer"):
        alfworld_primitives("speed")


def test_walkthrough_trajectory_scores_full_marks():
    env = ALFWorldEnv(games=[HANDMADE])
    traj = record(env, walkthrough_actions(env))
    assert traj.success and len(traj) == 7
    np.testing.assert_array_equal(alfworld_primitives("progress").compute(traj), [1, 1, 1, 1])
    np.testing.assert_array_equal(alfworld_primitives("valid").compute(traj), [1, 1, 1, 1])
    # the walkthrough without its last action is not a success, progress is still perfect
    env2 = ALFWorldEnv(games=[HANDMADE])
    partial = record(env2, lambda info: list(env2.walkthrough)[:-1])
    np.testing.assert_array_equal(alfworld_primitives().compute(partial), [0, 1, 1, 1])


def test_random_trajectory_values_match_step_infos():
    env = ALFWorldEnv(games=[HANDMADE], max_episode_steps=30)
    traj = play_random(env, seed=11)
    assert len(traj) == 30 and not traj.success
    progress = alfworld_primitives("progress").compute(traj)
    valid = alfworld_primitives("valid").compute(traj)
    assert progress[0] == 0.0 and valid[0] == 0.0
    np.testing.assert_allclose(progress[1:], expected_segments(traj, lambda i: i["progress"]))
    np.testing.assert_allclose(valid[1:], expected_segments(
        traj, lambda i: float(i["valid_action"] and i["state_changed"])))
    # junk every 4th step: those steps score 0 under both scorers, so no segment is perfect
    assert (valid[1:] < 1.0).all()


def test_tags_scorer_on_tagged_actions():
    env = ALFWorldEnv(games=[HANDMADE])
    env.reset(seed=0)
    tagged = [f"<planning>go get the apple</planning><action>{c}</action>" for c in env.walkthrough]
    # the env sees the whole tagged text: not admissible -> valid_action False -> tags score 0
    traj = record(env, lambda info: tagged)
    assert alfworld_primitives("tags").compute(traj)[1:].max() == 0.0
    # an agent wrapper that extracts the <action> reports valid steps: planning with progress fits
    fixed = Trajectory(traj.initial_observation, traj.initial_info,
                       [Step(t, s.observation, s.reward, s.terminated, s.truncated,
                             {**s.info, "valid_action": True, "progress": 1.0}, s.prev_info)
                        for t, s in zip(tagged, traj.steps)])
    np.testing.assert_array_equal(alfworld_primitives("tags").compute(fixed)[1:], [1, 1, 1])


def test_with_meta_reward_wrapper():
    wrappers = pytest.importorskip("derl_gym.wrappers.meta_reward")
    env = wrappers.MetaRewardWrapper(ALFWorldEnv(games=[HANDMADE]), "g1 + 0.5*g2", alfworld_primitives(),
                                     mode="episode")
    env.reset(seed=0)
    walkthrough = env.unwrapped.walkthrough
    for command in walkthrough:
        obs, reward, terminated, truncated, info = env.step(command)
    assert terminated and info["task_reward"] == 1.0
    np.testing.assert_array_equal(info["primitive_values"], [1, 1, 1, 1])
    assert info["meta_reward"] == pytest.approx(1.5)
