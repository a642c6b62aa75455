"""Tests of MetaRewardWrapper: rewards in both modes (numbers), info keys, trajectory, vector envs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from derl_gym.rewards import InvalidExpression, MetaReward, Primitive, agent_primitives
from derl_gym.wrappers import MetaRewardWrapper

# g1 success, g2/g3/g4 mean progress over the first/middle/last third
FORMULA = "g1 + 0.5*g2 - g3 + 2*g4 + 0.1"
WIN_ACTIONS = [1, 0, 1, 1]          # progress 0.5, 0, 0.5, 0.5 -> third hit wins at step 4
# F on each prefix of WIN_ACTIONS (worked out by hand from the segment definition):
#   [0.5]            -> g = (0, .5, .5, .5)    F = 0.85
#   [0.5, 0]         -> g = (0, .5, .5, 0)     F = -0.15
#   [0.5, 0, .5]     -> g = (0, .5, 0, .5)     F = 1.35
#   [0.5, 0, .5, .5] -> g = (1, .5, .25, .5)   F = 2.1  (segments [0,1) [1,3) [3,4))
PREFIX_VALUES = [0.85, -0.15, 1.35, 2.1]


class ToyEnv(gym.Env):
    """Action 1 advances the task (progress 0.5); three advances win; truncates after max_steps."""

    metadata: dict = {"render_modes": []}

    def __init__(self, max_steps: int = 6) -> None:
        self.observation_space = spaces.Discrete(10)
        self.action_space = spaces.Discrete(2)
        self.max_steps = max_steps
        self.t = self.hits = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = self.hits = 0
        return 0, {"progress": 0.0, "won": False, "step": 0}

    def step(self, action):
        self.t += 1
        self.hits += int(action)
        won = self.hits >= 3
        info = {"progress": 0.5 * int(action), "won": won, "step": self.t, "valid_action": True}
        return min(self.t, 9), float(won), won, (self.t >= self.max_steps) and not won, info


def make(mode: str = "episode", formula=FORMULA, max_steps: int = 6) -> MetaRewardWrapper:
    return MetaRewardWrapper(ToyEnv(max_steps), formula, agent_primitives(), mode=mode)


# ----------------------------------------------------------------------------- single env

def test_episode_mode_rewards_and_info():
    env = make("episode")
    obs, info = env.reset(seed=0)
    assert obs == 0 and "meta_reward" not in info
    for i, action in enumerate(WIN_ACTIONS):
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["task_reward"] == (1.0 if i == 3 else 0.0)
        if i < 3:
            assert reward == 0.0 and not terminated
            assert "meta_reward" not in info and "primitive_values" not in info
    assert terminated and reward == pytest.approx(2.1)
    assert info["meta_reward"] == pytest.approx(2.1)
    np.testing.assert_allclose(info["primitive_values"], [1.0, 0.5, 0.25, 0.5])
    assert info["primitive_values"].shape == (4,)
    assert info["progress"] == 0.5 and info["won"] is True  # the env's own keys are kept


def test_step_mode_telescopes_to_episode_value():
    env = make("step")
    env.reset(seed=0)
    rewards, potentials = [], []
    for action in WIN_ACTIONS:
        _, reward, _, _, info = env.step(action)
        rewards.append(reward)
        potentials.append(info["meta_reward"])
        assert info["primitive_values"].shape == (4,)
        assert "task_reward" in info
    np.testing.assert_allclose(potentials, PREFIX_VALUES)
    np.testing.assert_allclose(rewards, np.diff([0.0] + PREFIX_VALUES))
    assert sum(rewards) == pytest.approx(2.1)  # equals the episode-mode reward


def test_truncation_gives_terminal_reward():
    env = make("episode", max_steps=2)
    env.reset()
    _, r1, _, _, _ = env.step(0)
    _, r2, terminated, truncated, info = env.step(0)
    assert (r1, terminated, truncated) == (0.0, False, True)
    # no success, no progress: F = 0.1
    assert r2 == pytest.approx(0.1) and info["meta_reward"] == pytest.approx(0.1)


def test_trajectory_records_steps_and_reset_clears():
    env = make("episode")
    env.reset(seed=1)
    for action in WIN_ACTIONS[:3]:
        env.step(action)
    traj = env.trajectory
    assert len(traj) == 3 and not traj.done
    assert traj.initial_observation == 0 and traj.initial_info["step"] == 0
    assert [s.action for s in traj.steps] == [1, 0, 1]
    assert [s.prev_info["step"] for s in traj.steps] == [0, 1, 2]
    assert [s.info["step"] for s in traj.steps] == [1, 2, 3]
    assert "task_reward" not in traj.steps[0].info  # the recorded info is the env's own
    env.reset()
    assert len(env.trajectory) == 0 and env.trajectory is not traj


def test_expression_forms_and_errors():
    prims = agent_primitives()
    by_alias = make("episode", "success + 0.5*progress_first - progress_middle + 2*progress_last + 0.1")
    assert by_alias.expression.canonical == MetaReward(FORMULA, 4).canonical
    small = MetaRewardWrapper(ToyEnv(), MetaReward("2*g1", 1), prims)  # K' = 1 <= 4 reads g1 only
    small.reset()
    for action in WIN_ACTIONS:
        _, reward, _, _, info = small.step(action)
    assert reward == 2.0 and info["primitive_values"].shape == (4,)
    with pytest.raises(ValueError, match="5 variables.*has only 4"):
        MetaRewardWrapper(ToyEnv(), MetaReward("g5", 5), prims)
    with pytest.raises(InvalidExpression, match="g5"):
        MetaRewardWrapper(ToyEnv(), "g5", prims)
    with pytest.raises(ValueError, match="mode must be one of"):
        MetaRewardWrapper(ToyEnv(), "g1", prims, mode="turn")
    with pytest.raises(TypeError, match="MetaReward or its text"):
        MetaRewardWrapper(ToyEnv(), 3, prims)


def test_plain_primitive_sequence_is_accepted():
    steps = Primitive("steps", "episode length / 10", lambda traj: len(traj) / 10)
    env = MetaRewardWrapper(ToyEnv(max_steps=3), "10*steps", [steps], mode="step")
    env.reset()
    rewards = [env.step(0)[1] for _ in range(3)]
    np.testing.assert_allclose(rewards, [1.0, 1.0, 1.0])
    assert env.primitives.names == ["steps"]


def test_import_does_not_pull_torch_and_text_wrapper_is_lazy():
    code = ("import sys, derl_gym.wrappers as w; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'derl_gym.wrappers.text_actions' not in sys.modules; print(sorted(w.__all__)); "
            "import importlib.util as u; "
            "print(w.TextActionWrapper.__module__ if u.find_spec('derl_gym.wrappers.text_actions') else '')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "MetaRewardWrapper" in out.stdout
    if importlib.util.find_spec("derl_gym.wrappers.text_actions") is not None:
        assert "derl_gym.wrappers.text_actions" in out.stdout  # resolved lazily on first access
    import derl_gym.wrappers as wrappers

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        wrappers.Nope  # noqa: B018


# ----------------------------------------------------------------------------- vector envs

# env 0 wins at its 4th step; env 1 (max_steps=3, never advancing) truncates at its 3rd step
ACTIONS = np.array([[1, 0], [0, 0], [1, 0], [1, 0]])


def env_fns(mode: str = "episode"):
    return [lambda: make(mode, max_steps=6), lambda: make(mode, max_steps=3)]


def check_gym_vector(vec) -> None:
    try:
        vec.reset(seed=0)
        rewards, metas, task = [], [], []
        for actions in ACTIONS:
            _, reward, _, _, info = vec.step(actions)
            rewards.append(reward)
            metas.append(np.where(info.get("_meta_reward", np.zeros(2, bool)), info.get("meta_reward", 0.0), np.nan))
            task.append(np.where(info["_task_reward"], info["task_reward"], np.nan))
        np.testing.assert_array_equal(np.array(task, dtype=float), [[0, 0], [0, 0], [0, 0], [1, np.nan]])
        rewards = np.array(rewards)
        # gymnasium's default NEXT_STEP autoreset: env 1's 4th step is a reset step (reward 0)
        np.testing.assert_allclose(rewards, [[0, 0], [0, 0], [0, 0.1], [2.1, 0.0]])
        np.testing.assert_allclose(np.array(metas, dtype=float),
                                   [[np.nan, np.nan], [np.nan, np.nan], [np.nan, 0.1], [2.1, np.nan]])
    finally:
        vec.close()


def test_gymnasium_sync_vector_env():
    check_gym_vector(gym.vector.SyncVectorEnv(env_fns()))


def test_gymnasium_async_vector_env():
    check_gym_vector(gym.vector.AsyncVectorEnv(env_fns(), context="fork"))


def check_sb3_vector(vec, mode: str) -> None:
    try:
        vec.reset()
        rewards, infos = [], []
        for actions in ACTIONS:
            _, reward, done, info = vec.step(actions)
            rewards.append(reward)
            infos.append(info)
        rewards = np.array(rewards)
        if mode == "episode":
            # SB3 resets right away: env 1's 4th step is the first step of a new episode
            np.testing.assert_allclose(rewards, [[0, 0], [0, 0], [0, 0.1], [2.1, 0.0]], atol=1e-12)
            assert infos[2][1]["meta_reward"] == pytest.approx(0.1)
            assert "meta_reward" not in infos[3][1]
            np.testing.assert_allclose(infos[3][0]["primitive_values"], [1.0, 0.5, 0.25, 0.5])
            assert infos[3][0]["task_reward"] == 1.0
        else:
            np.testing.assert_allclose(rewards[:, 0], np.diff([0.0] + PREFIX_VALUES), atol=1e-12)
            np.testing.assert_allclose(rewards[:, 1].sum(), 0.1 + 0.1, atol=1e-12)  # 0.1 episode + new 0.1
            assert all("meta_reward" in i for step in infos for i in step)
    finally:
        vec.close()


@pytest.mark.parametrize("mode", ["episode", "step"])
def test_sb3_dummy_vec_env(mode):
    from stable_baselines3.common.vec_env import DummyVecEnv

    check_sb3_vector(DummyVecEnv(env_fns(mode)), mode)


def test_sb3_subproc_vec_env():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    check_sb3_vector(SubprocVecEnv(env_fns("episode"), start_method="fork"), "episode")
