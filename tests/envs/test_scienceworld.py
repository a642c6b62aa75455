"""ScienceWorld env on the real simulator: gold paths, junk actions, splits, primitives, JVM lifecycle.

One env (one JVM) is shared by most tests; the lifecycle tests start their own and check, by
reading /proc, that no Java process outlives them.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("scienceworld")

import derl_gym  # noqa: E402,F401  (registers the env ids)
from derl_gym.envs.scienceworld import (  # noqa: E402
    L2_HELD_OUT_TASKS,
    VARIATION_SPLITS,
    ScienceWorldEnv,
    bound_commands,
    normalize_text,
    resolve_task,
    scienceworld_primitives,
    split_episodes,
    split_tasks,
    split_variations,
    task_names,
)
from derl_gym.rewards.primitives import rollout  # noqa: E402

GOLD_TASKS = ["find-living-thing", "boil", "chemistry-mix", "power-component"]


# ----------------------------------------------------------------------------- /proc helpers

def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = f"/proc/{pid}/task"
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return kids
    for tid in threads:
        try:
            with open(f"{task_dir}/{tid}/children") as handle:
                kids += [int(x) for x in handle.read().split()]
        except OSError:
            pass
    return kids


def _is_java(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv0 = handle.read().split(b"\0")[0]
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"java" and state != "Z"


def java_descendants(root: int | None = None) -> list[int]:
    """Return the pids of live Java processes below ``root`` (default: this process)."""
    stack, found = [root or os.getpid()], []
    while stack:
        pid = stack.pop()
        for kid in _children(pid):
            stack.append(kid)
            if _is_java(kid):
                found.append(kid)
    return found


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout: float = 15.0) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if pid_running(p)]
    return alive


@pytest.fixture(scope="module", autouse=True)
def no_java_left_behind():
    """Module-end check: every JVM this test module started has exited."""
    before = set(java_descendants())
    yield
    gc.collect()
    leftover = wait_gone(set(java_descendants()) - before, timeout=10.0)
    assert not leftover, f"Java processes left running after the ScienceWorld tests: {leftover}"


@pytest.fixture(scope="module")
def env():
    """One env (one JVM) shared by the tests that only reset and step."""
    environment = ScienceWorldEnv(task="find-living-thing", seed=0, max_episode_steps=100)
    yield environment
    environment.close()


# ----------------------------------------------------------------------------- gold paths

@pytest.fixture
def no_admissible(env):
    """Skip the (slow) valid-action listing for tests that do not read it."""
    env.admissible = False
    yield env
    env.admissible = True


@pytest.mark.parametrize("task", GOLD_TASKS)
def test_gold_path_wins_through_the_env(no_admissible, task):
    env = no_admissible
    obs, info = env.reset(options={"task": task, "variation": 2, "gold_path": True})
    assert info["task"] == task and info["variation"] == 2
    assert env.observation_space.contains(obs)
    assert obs.startswith("Task Description:")
    gold = info["gold_actions"]
    assert len(gold) >= 5
    rewards, progress = [], []
    terminated = truncated = False
    for i, action in enumerate(gold):
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        rewards.append(reward)
        progress.append(info["progress"])
        assert info["step"] == i + 1
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["won"] and info["score"] == 100 and not info["failed"]
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    assert sum(progress) >= 1 and set(progress) <= {0.0, 1.0}


def test_variation_table_matches_the_simulator(env):
    env.reset()
    server = env._jvm.server
    for task in GOLD_TASKS + ["identify-life-stages-2"]:
        server.load(task, 0, "easy", False)
        train_end, dev_end, total = VARIATION_SPLITS[task]
        assert list(server.getVariationsTrain()) == list(range(train_end)), task
        assert list(server.getVariationsDev()) == list(range(train_end, dev_end)), task
        assert list(server.getVariationsTest()) == list(range(dev_end, total)), task
    assert sorted(VARIATION_SPLITS) == sorted(str(n) for n in server.getTaskNames())


# ----------------------------------------------------------------------------- actions

JUNK = ["", "   ", "asdf qwer", "x" * 10_000, "héllo ☃ ünïcode", "\n\t\r", "\x00\x01\x7f", "focus on",
        "0", "1 2 3", "go to the moon", "(", "'; DROP TABLE", "\\n"]


def test_junk_actions_get_feedback_never_exceptions(env):
    env.reset(options={"task": "find-living-thing", "variation": 7})
    for junk in JUNK:
        obs, reward, terminated, truncated, info = env.step(junk)
        assert env.observation_space.contains(obs), repr(junk)
        assert reward == 0.0 and not terminated
        assert info["valid_action"] is False, (junk, info["feedback"])
        assert info["state_changed"] is False and info["progress"] == 0.0
        assert info["feedback"]
    for odd in [b"look around", np.str_("look around")]:
        _, _, _, _, info = env.step(odd)
        assert info["valid_action"] is True
    obs, _, _, _, info = env.step("look around")
    assert info["valid_action"] and " is called the " in obs


def test_admissible_commands_are_sorted_bounded_and_act(env):
    obs, info = env.reset(options={"task": "find-living-thing", "variation": 3})
    commands = info["admissible_commands"]
    assert commands == sorted(set(commands)) and 0 < len(commands) <= env.max_admissible
    assert "reset task" not in commands
    assert all(env.action_space.contains(c) for c in commands)
    moves = [c for c in commands if c.startswith(("go to", "open", "look", "pick up", "teleport"))][:5]
    assert moves
    for command in moves:  # each from the start state: a move changes which commands are valid
        env.reset(options={"task": "find-living-thing", "variation": 3})
        _, _, terminated, _, info = env.step(command)
        assert info["valid_action"], (command, info["feedback"])
        assert not terminated


def test_ambiguous_request_is_resolved(env):
    env.reset(options={"task": "boil", "variation": 0})
    env.step("teleport to kitchen")
    _, _, _, _, info = env.step("open orange")  # two oranges in the kitchen
    assert not info["feedback"].startswith("Ambiguous request"), info["feedback"]
    assert info["valid_action"]
    env.resolve_ambiguous = False
    try:
        _, _, _, _, info = env.step("open orange")
        assert info["feedback"].startswith("Ambiguous request") and not info["valid_action"]
        env.step("")  # answer the question (cancel)
    finally:
        env.resolve_ambiguous = True


def test_failure_terminates_with_zero_reward(env):
    env.reset(options={"task": "find-living-thing", "variation": 11})
    obs, reward, terminated, truncated, info = env.step("focus on agent")
    assert terminated and not truncated and reward == 0.0
    assert info["failed"] and not info["won"] and info["score"] == 0


def test_truncation_after_max_episode_steps(env):
    env.max_episode_steps = 3
    try:
        env.reset(options={"task": "find-living-thing", "variation": 4})
        flags = [env.step("look around")[2:4] for _ in range(3)]
    finally:
        env.max_episode_steps = 100
    assert flags == [(False, False), (False, False), (False, True)]




def test_check_env_passes(env):
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)


def test_gym_make_seeded_cycle_and_garbage_collection_after_an_exception():
    env = gym.make("derl_gym/ScienceWorld-v0", task="identify-life-stages-2", split="train", seed=5,
                   admissible=False)
    pool = split_episodes("identify-life-stages-2", "train")
    drawn = [env.reset()[1]["variation"] for _ in range(2 * len(pool))]
    first, second = drawn[: len(pool)], drawn[len(pool):]
    assert sorted(first) == sorted(v for _, v in pool) == sorted(second)  # cycles through the split
    again = [env.reset(seed=5)[1]["variation"]] + [env.reset()[1]["variation"] for _ in range(len(pool) - 1)]
    assert again == first
    pid = env.unwrapped.java_pid
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"variation": 10**6})
    del env  # never closed: the finalizer must end the JVM
    gc.collect()
    assert wait_gone([pid], timeout=5.0) == []


# ----------------------------------------------------------------------------- splits

def test_splits_are_deterministic_and_disjoint():
    for task in task_names():
        train_end, dev_end, total = VARIATION_SPLITS[task]
        level = "L2" if task in L2_HELD_OUT_TASKS else "L1"
        if level == "L1":
            train = split_variations(task, "train", "L1")
            validation = split_variations(task, "validation", "L1")
            assert not set(train) & set(validation)
            assert sorted(train + validation) == list(range(train_end))
            assert len(validation) == max(1, train_end // 5)
            assert split_variations(task, "test", "L0") == train  # L0 tests on seen instances
        test = split_variations(task, "test", level)
        assert test == list(range(dev_end, total))
        assert not set(test) & set(range(train_end))
    assert split_episodes(None, "validation", "L1") == split_episodes(None, "validation", "L1")


def test_l2_holds_out_whole_tasks():
    train_tasks, test_tasks = split_tasks("L2", "train"), split_tasks("L2", "test")
    assert set(test_tasks) == set(L2_HELD_OUT_TASKS) == {
        "power-component", "power-component-renewable-vs-nonrenewable-energy",
        "test-conductivity", "test-conductivity-of-unknown-substances"}
    assert not set(train_tasks) & set(test_tasks) and len(train_tasks) + len(test_tasks) == 30
    train_pairs = split_episodes(None, "train", "L2")
    assert {t for t, _ in train_pairs} == set(train_tasks)
    with pytest.raises(ValueError, match="held-out"):
        split_variations("power-component", "train", "L2")
    with pytest.raises(ValueError, match="held-out"):
        split_variations("boil", "test", "L2")


def test_task_resolution_and_bad_arguments():
    assert resolve_task("4-1") == resolve_task(11) == resolve_task("find-living-thing") == "find-living-thing"
    assert resolve_task("Classification Find a living thing") == "find-living-thing"
    for bad in ["no-such-task", 30, -1, 2.5]:
        with pytest.raises(ValueError, match="task"):
            resolve_task(bad)
    with pytest.raises(ValueError, match="level"):
        ScienceWorldEnv(task="boil", level="L9")
    with pytest.raises(ValueError, match="split"):
        ScienceWorldEnv(task="boil", split="dev")
    with pytest.raises(ValueError, match="simplification"):
        ScienceWorldEnv(task="boil", simplification="hard")
    with pytest.raises(ValueError, match="noElectricalAction"):
        ScienceWorldEnv(task="test-conductivity", simplification="openDoors,noElectricalAction")
    assert ScienceWorldEnv(task="boil", simplification="openDoors,noElectricalAction").java_pid is None


def test_bound_commands_and_normalize_text():
    commands = [f"look at thing{i}" for i in range(50)] + ["go to kitchen", "go to kitchen", "reset task",
                                                          "open door", "focus on x"]
    bounded = bound_commands(commands, 6)
    assert len(bounded) == 6 and bounded == sorted(bounded)
    assert {"go to kitchen", "open door", "focus on x"} <= set(bounded)  # every verb kept
    assert "reset task" not in bound_commands(commands, None)
    assert len(bound_commands(commands, None)) == 53
    assert normalize_text("a☃b", 10) == "a?b"
    assert normalize_text("x" * 20, 10) == "xxxxxxx..."


# ----------------------------------------------------------------------------- primitives

def _trajectory(env, task, variation, actions=None):
    """Play ``actions`` (default: the gold path) on one variation and return the trajectory."""
    plan: list[str] = []

    def choose(info, t):
        if t == 0:
            plan.extend(actions if actions is not None else info["gold_actions"])
        return plan[t] if t < len(plan) else None

    return rollout(env, choose, options={"task": task, "variation": variation, "gold_path": actions is None})


def test_primitives_on_gold_and_on_idle_trajectories(no_admissible):
    env = no_admissible
    primitives = scienceworld_primitives()
    assert [p.name for p in primitives] == ["success", "progress_first", "progress_middle", "progress_last"]
    assert "score rose" in primitives.describe() and "score 100" in primitives.describe()
    gold = primitives.compute(_trajectory(env, "find-living-thing", 5))
    idle = primitives.compute(_trajectory(env, "find-living-thing", 5, ["look around"] * 6))
    assert gold[0] == 1.0 and gold[1:].sum() > 0 and gold[3] > 0
    assert idle.tolist() == [0.0, 0.0, 0.0, 0.0]
    valid = scienceworld_primitives("valid")
    junk = valid.compute(_trajectory(env, "find-living-thing", 5, ["blah"] * 3))
    assert junk.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert valid.compute(_trajectory(env, "find-living-thing", 5))[1:].max() > 0
    assert len(scienceworld_primitives("tags")) == 4



def test_meta_reward_wrapper_uses_the_env_default_primitives(no_admissible):
    from derl_gym.wrappers import MetaRewardWrapper

    assert no_admissible.primitives.names == scienceworld_primitives().names
    env = MetaRewardWrapper(no_admissible, "g1 + 0.5*g2")  # no primitives=: env.unwrapped.primitives
    _, info = env.reset(options={"task": "find-living-thing", "variation": 5, "gold_path": True})
    for action in info["gold_actions"]:
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and info["task_reward"] == 1.0
    values = info["primitive_values"]
    assert values.tolist() == scienceworld_primitives().compute(env.trajectory).tolist()
    assert values[0] == 1.0 and info["meta_reward"] == reward == pytest.approx(1.0 + 0.5 * values[1])

# ----------------------------------------------------------------------------- JVM lifecycle

def test_close_ends_the_jvm_and_admissible_can_be_off():
    env = ScienceWorldEnv(task="find-living-thing", admissible=False, max_admissible=20)
    assert env.java_pid is None  # lazy: nothing started before reset
    _, info = env.reset(seed=1)
    assert info["admissible_commands"] == []
    on_demand = env.admissible_commands()
    assert 0 < len(on_demand) <= 20 and on_demand == sorted(on_demand)
    pid = env.java_pid
    assert pid in java_descendants()
    assert env._jvm.start_seconds < 30
    env.close()
    assert not pid_running(pid) and env.java_pid is None
    env.close()  # idempotent


def test_dead_jvm_is_detected_and_restarted(caplog):
    env = ScienceWorldEnv(task="melt")
    try:
        env.reset()
        old = env.java_pid
        os.kill(old, signal.SIGKILL)
        assert wait_gone([old], timeout=5.0) == []
        with caplog.at_level(logging.WARNING, logger="derl_gym.envs.scienceworld"):
            obs, reward, terminated, truncated, info = env.step("look around")
            assert truncated and not terminated and info["jvm_died"] and reward == 0.0
            obs, info = env.reset()
        assert any("died" in r.getMessage() and str(old) in r.getMessage() for r in caplog.records)
        assert env.java_pid not in (None, old) and env.jvm_restarts == 1
        _, _, _, _, info = env.step("look around")
        assert info["valid_action"] and " is called the " in info["feedback"]
    finally:
        env.close()


def _make_env():
    return ScienceWorldEnv(task="find-living-thing", max_episode_steps=5)


def test_async_vector_env_runs_and_garbage_collection_cleans_up():
    from gymnasium.vector import AsyncVectorEnv

    # shared_memory=False: gymnasium reads Text observations out of shared memory once, at creation
    # (a snapshot, not a view), so text observations must travel through the pipes. context="spawn":
    # a forked worker inherits this process's py4j socket to the module env's JVM, and its garbage
    # collector can write into it, which once left the parent waiting on that JVM forever.
    before = set(java_descendants())  # e.g. the shared module env's JVM
    venv = AsyncVectorEnv([_make_env, _make_env], shared_memory=False, context="spawn")
    try:
        obs, infos = venv.reset(seed=3)
        assert len(obs) == 2 and all(o.startswith("Task Description:") for o in obs)
        for _ in range(6):  # crosses the 5-step truncation: autoreset happens inside the workers
            actions = tuple(cmds[0] for cmds in infos["admissible_commands"])
            obs, rewards, terminated, truncated, infos = venv.step(actions)
        pids = set(java_descendants()) - before
        assert len(pids) == 2
    except BaseException:
        venv.close()
        raise
    del venv  # never closed: garbage collection terminates the workers; their JVMs die with them
    gc.collect()
    assert wait_gone(pids, timeout=15.0) == []


def test_sb3_subproc_vec_env_runs_and_close_cleans_up():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    before = set(java_descendants())
    venv = SubprocVecEnv([_make_env, _make_env], start_method="spawn")  # not fork: see the test above
    try:
        obs = venv.reset()
        assert len(obs) == 2
        obs, rewards, dones, infos = venv.step(["look around", "inventory"])
        assert rewards.tolist() == [0.0, 0.0] and infos[0]["valid_action"] and infos[1]["valid_action"]
        pids = set(java_descendants()) - before
        assert len(pids) == 2
    finally:
        venv.close()
    assert wait_gone(pids, timeout=5.0) == []


# ----------------------------------------------------------------------------- caching, inner loop

def test_admissible_list_is_reused_after_invalid_actions(env):
    env.reset(options={"task": "find-living-thing", "variation": 8})
    jvm = env._jvm
    before = jvm.listings
    _, _, _, _, info = env.step("look around")
    first = info["admissible_commands"]
    assert jvm.listings == before + 1
    _, _, _, _, info = env.step("not a command")
    assert info["admissible_commands"] == first and jvm.listings == before + 1  # nothing happened
    assert info["admissible_commands"] is not first  # a new list each step (callers may mutate theirs)
    _, _, _, _, info = env.step(next(c for c in first if c.startswith("teleport to")))
    assert info["valid_action"] and jvm.listings == before + 2 and info["admissible_commands"] != first


def _template_set(records):
    return sorted((r["template_id"], tuple(r["obj_ids"])) for r in records)


@pytest.mark.parametrize("task", ["find-living-thing", "boil", "power-component"])
def test_helper_lists_exactly_the_simulators_valid_actions_over_random_play(env, task):
    """The JVM-side helper's list = the simulator's, action by action (template and object ids).

    The simulator renders an object that has several names with a random one on each call, so
    strings are compared as (template id, object ids); the counts must match too.
    """
    import json
    import random

    if not env._jvm.helper_active:
        pytest.skip("the JVM-side helper could not be compiled here (no javac)")
    server = env._jvm.server
    rng = random.Random(task)
    rooms = set()
    for variation in (0, 1):
        _, info = env.reset(options={"task": task, "variation": variation})
        for step in range(12):
            choices = [c for c in info["admissible_commands"] if not c.startswith("focus on")]
            if step in (3, 8):  # the helper lists teleports once per episode: check them from other rooms
                choices = [c for c in choices if c.startswith("teleport to")]
            _, _, terminated, truncated, info = env.step(rng.choice(choices))
            if terminated or truncated:
                break
            ours = env._jvm.valid_action_templates()
            theirs = json.loads(str(server.getValidActionObjectCombinationsJSON()))["validActions"]
            assert _template_set(ours) == _template_set(theirs)
            assert len(env._jvm.valid_actions()) == len(theirs)
            rooms.add(env._episode.look.split(".", 1)[0])
    assert len(rooms) >= 3, rooms
    assert len(info["admissible_commands"]) > 10


def test_plain_py4j_path_matches_the_helper_on_a_gold_path(env):
    """jvm_helper=False (the simulator's own methods only) plays a gold path to the same scores."""
    plain = ScienceWorldEnv(task="find-living-thing", jvm_helper=False, max_episode_steps=100)
    try:
        runs = []
        for which in (env, plain):
            _, info = which.reset(options={"task": "find-living-thing", "variation": 6, "gold_path": True})
            trace = [(len(info["admissible_commands"]) > 0, info["score"])]
            for action in info["gold_actions"]:
                _, reward, terminated, truncated, info = which.step(action)
                trace.append((info["valid_action"], info["score"], reward, terminated))
                if terminated or truncated:
                    break
            runs.append(trace)
        assert not plain._jvm.helper_active
        assert runs[0] == runs[1] and runs[0][-1][2] == 1.0
        assert plain.admissible_commands() == sorted(plain.admissible_commands())
    finally:
        plain.close()


def _tiny_spec(total_timesteps: int, eval_episodes: int):
    """The ``scienceworld-tiny`` preset itself, with a test-sized budget."""
    from derl_gym.runtime.presets import get_preset

    return get_preset("scienceworld-tiny", total_timesteps=total_timesteps, eval_episodes=eval_episodes,
                      algo_kwargs={"n_steps": 16, "batch_size": 8, "n_epochs": 1, "learning_rate": 1e-3},
                      policy_kwargs={"hidden_dim": 32})


def test_run_inner_on_scienceworld():
    run_inner = pytest.importorskip("derl_gym.runtime.inner").run_inner
    before = set(java_descendants())
    result = run_inner(_tiny_spec(total_timesteps=32, eval_episodes=2), "g1 + 0.5*g2 + 0.5*g4", eval_splits=["L1"])
    assert result.ok, result.error
    assert 0.0 <= result.score <= 1.0 and result.extra["validation"]["episodes"] == 2
    assert result.env_steps >= 32 and "L1" in result.extra["test"]
    assert wait_gone(set(java_descendants()) - before, timeout=5.0) == []


def test_helper_builds_from_scratch_and_a_bad_cache_falls_back(tmp_path, monkeypatch):
    from derl_gym.envs import scienceworld as sw

    if sw._javac() is None:
        pytest.skip("no javac here")
    assert all(prefix in sw.helper_source() for prefix in sw.INVALID_FEEDBACK)
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path / "cache"))
    built = sw.helper_classpath()
    assert built is not None and built.startswith(str(tmp_path))
    assert os.path.isfile(os.path.join(built, sw.HELPER_CLASS + ".class"))
    assert sw.helper_classpath() == built  # reused, not rebuilt
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path / "file"))
    assert sw.helper_classpath() is None  # unusable cache: logged, the env runs without the helper
