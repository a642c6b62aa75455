"""Tests of the primitive core: Primitive, PrimitiveSet, step scorers, segment primitives."""

from __future__ import annotations

import numpy as np
import pytest

from derl_gym.rewards import Primitive, PrimitiveSet, Step, Trajectory, agent_primitives, segment_primitives
from derl_gym.rewards.primitives import (
    as_primitive_set,
    get_step_scorer,
    progress_score,
    segment_bounds,
    segment_mean,
    success_primitive,
    tags_score,
    valid_score,
)


def step(progress: float = 0.0, *, won: bool = False, reward: float = 0.0, action: str = "go to desk",
         valid: bool = True, changed: bool = True, prev_info: dict | None = None, done: bool = False) -> Step:
    info = {"progress": progress, "won": won, "valid_action": valid, "state_changed": changed}
    return Step(action=action, observation="obs", reward=reward, terminated=done, truncated=False, info=info,
                prev_info=prev_info or {})


def trajectory(progress: list[float], won: bool = False) -> Trajectory:
    traj = Trajectory(initial_observation="start", initial_info={})
    for i, p in enumerate(progress):
        last = i == len(progress) - 1
        traj.append(step(p, won=won and last, reward=float(won and last), done=last))
    return traj


# ----------------------------------------------------------------------------- Trajectory

def test_trajectory_properties():
    traj = trajectory([0.1, 0.0, 0.5], won=True)
    assert len(traj) == 3 and traj.done and traj.success and traj.task_return == 1.0
    assert not Trajectory().done and not Trajectory().success
    lost = trajectory([0.1, 0.2])
    assert lost.done and not lost.success and lost.task_return == 0.0
    by_reward = Trajectory(steps=[Step("a", "o", 1.0, True, False, {})])
    assert by_reward.success


# ----------------------------------------------------------------------------- Primitive

def test_primitive_clips_and_maps_non_finite_to_low():
    values = iter([2.0, -3.0, float("nan"), 0.25, float("inf")])
    prim = Primitive("p", "test", lambda traj: next(values), bounds=(-1.0, 1.0))
    assert [prim(Trajectory()) for _ in range(5)] == [1.0, -1.0, -1.0, 0.25, -1.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "1bad"}, "identifier"),
    ({"name": "g3"}, "clashes"),
    ({"kind": "turn"}, "kind"),
    ({"bounds": (1.0, 1.0)}, "low < high"),
])
def test_primitive_validation(kwargs, message):
    args = {"name": "ok", "description": "d", "function": lambda t: 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        Primitive(**args)


# ----------------------------------------------------------------------------- PrimitiveSet

def test_primitive_set_lookup_and_compute():
    prims = agent_primitives()
    assert len(prims) == 4
    assert prims.names == ["success", "progress_first", "progress_middle", "progress_last"]
    assert prims.variables == ["g1", "g2", "g3", "g4"]
    assert prims.aliases["progress_last"] == "g4"
    assert prims.index("g3") == prims.index("progress_middle") == 2
    assert prims["g1"] is prims[0] is prims["success"]
    with pytest.raises(KeyError, match="unknown primitive 'g9'"):
        prims.index("g9")
    np.testing.assert_array_equal(prims.bounds, np.tile([0.0, 1.0], (4, 1)))
    values = prims.compute(trajectory([1.0, 0.0, 0.0, 0.5, 0.5, 0.0], won=True))
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, [1.0, 0.5, 0.25, 0.25])


def test_primitive_set_validation_and_describe():
    with pytest.raises(ValueError, match="at least one"):
        PrimitiveSet([])
    a = Primitive("a", "first", lambda t: 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        PrimitiveSet([a, a])
    text = agent_primitives().describe()
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("g1 (success, episode, [0, 1]):")
    assert lines[3].startswith("g4 (progress_last, step, [0, 1]):")
    assert as_primitive_set([a]).names == ["a"]
    prims = agent_primitives()
    assert as_primitive_set(prims) is prims


# ----------------------------------------------------------------------------- step scorers

def test_progress_and_valid_scores():
    assert progress_score(step(0.4)) == 0.4
    assert progress_score(step(3.0)) == 1.0 and progress_score(step(-1.0)) == 0.0
    assert progress_score(Step("a", "o", 0.0, False, False, {})) == 0.0
    assert valid_score(step(valid=True, changed=True)) == 1.0
    assert valid_score(step(valid=True, changed=False)) == 0.0
    assert valid_score(step(valid=False)) == 0.0
    assert get_step_scorer("valid") is valid_score
    custom = lambda s: 0.3  # noqa: E731
    assert get_step_scorer(custom) is custom
    with pytest.raises(ValueError, match="unknown step scorer 'nope'"):
        get_step_scorer("nope")


@pytest.mark.parametrize("action, progress, prev_info, valid, expected", [
    ("<planning>find the mug</planning><action>go to desk</action>", 0.0, {}, True, 1.0),
    ("<explore>look around</explore><action>go to desk</action>", 0.0, {"step": 3}, True, 1.0),
    ("<explore>x</explore><action>take mug</action>", 0.0, {"step": 3}, True, 0.5),
    ("<reflection>oops</reflection><action>take mug</action>", 0.0, {"step": 2, "valid_action": False}, True, 1.0),
    ("<reflection>oops</reflection><action>take mug</action>", 0.0, {"step": 2, "valid_action": True}, True, 0.5),
    ("<planning>p</planning><action>take mug</action>", 0.5, {"step": 4}, True, 1.0),
    ("<action>take mug</action>", 0.0, {"step": 4}, True, 0.5),
    ("take mug", 0.0, {}, True, 0.0),
    ("<action>a</action><action>b</action>", 0.0, {}, True, 0.0),
    ("<planning>p</planning><action>take mug</action>", 0.0, {}, False, 0.0),
])
def test_tags_score(action, progress, prev_info, valid, expected):
    assert tags_score(step(progress, action=action, prev_info=prev_info, valid=valid)) == expected


# ----------------------------------------------------------------------------- segments

def test_segment_bounds_partition_long_trajectories():
    for length in range(3, 61):
        ranges = [segment_bounds(length, s) for s in ("first", "middle", "last")]
        covered = [i for start, stop in ranges for i in range(start, stop)]
        assert covered == list(range(length)), length
        sizes = [stop - start for start, stop in ranges]
        assert max(sizes) - min(sizes) <= 1, (length, sizes)


def test_segment_bounds_short_trajectories():
    assert segment_bounds(0, "first") == (0, 0)
    assert [segment_bounds(1, s) for s in ("first", "middle", "last")] == [(0, 1)] * 3
    assert [segment_bounds(2, s) for s in ("first", "middle", "last")] == [(0, 1), (0, 1), (1, 2)]
    with pytest.raises(ValueError, match="segment"):
        segment_bounds(3, "end")


def test_segment_mean_and_primitives():
    traj = trajectory([1.0, 0.0, 0.0, 0.5, 0.2, 0.4])
    assert segment_mean(traj, progress_score, "first") == pytest.approx(0.5)
    assert segment_mean(traj, progress_score, "middle") == pytest.approx(0.25)
    assert segment_mean(traj, progress_score, "last") == pytest.approx(0.3)
    assert segment_mean(Trajectory(), progress_score, "last") == 0.0
    prims = segment_primitives("valid")
    assert [p.name for p in prims] == ["valid_first", "valid_middle", "valid_last"]
    assert all(p.kind == "step" for p in prims)
    custom = segment_primitives(lambda s: 1.0, prefix="one")
    assert [p(traj) for p in custom] == [1.0, 1.0, 1.0]
    assert custom[0].name == "one_first"


def test_success_primitive_and_agent_set_with_other_scorer():
    assert success_primitive()(trajectory([0.0], won=True)) == 1.0
    assert success_primitive()(trajectory([0.0])) == 0.0
    prims = agent_primitives("valid")
    assert prims.names[1:] == ["valid_first", "valid_middle", "valid_last"]
    assert prims.name == "agent:valid"


def test_rollout_and_play_episode_record_steps_with_prev_info_and_stop():
    import gymnasium as gym

    from derl_gym.rewards.primitives import play_episode, rollout

    class Counter(gym.Env):
        observation_space = gym.spaces.Discrete(10)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            self.n = 0
            return 0, {"n": 0}

        def step(self, action):
            self.n += 1
            return self.n, float(self.n == 3), self.n == 3, False, {"n": self.n, "won": self.n == 3}

    traj = rollout(Counter(), lambda info, t: 1, seed=0)
    assert len(traj) == 3 and traj.success and traj.done
    assert [s.prev_info["n"] for s in traj.steps] == [0, 1, 2] and traj.initial_info == {"n": 0}
    assert len(rollout(Counter(), lambda info, t: 1, max_steps=2)) == 2
    assert len(rollout(Counter(), lambda info, t: None if t == 1 else 1)) == 1  # None stops early
    seen = []
    traj = play_episode(Counter(), lambda obs, info, t: seen.append((obs, info["n"], t)) or 1, seed=0)
    assert seen == [(0, 0, 0), (1, 1, 1), (2, 2, 2)]  # the policy sees the latest observation and info
    assert [s.observation for s in traj.steps] == [1, 2, 3] and traj.task_return == 1.0 and traj.success
