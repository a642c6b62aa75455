"""Tests of derl_gym/ALFWorld-v0 (ALFWorldEnv) on a hand-made game file and on generated games."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import derl_gym  # noqa: F401  (registers the ids)
from derl_gym.envs.alfworld.engine import FastEngine, ReferenceEngine, TransitionCache, load_game_file
from derl_gym.envs.alfworld.env import ALFWorldEnv, NOTHING_HAPPENS

DATA = Path(__file__).resolve().parents[2] / "data" / "alfworld"
HANDMADE = DATA / "clean_apple_in_fridge.tw-pddl"
JUNK = ["", " ", "x" * 10_000, "h\u00e9llo \u2603 \U0001f600", "help", "go to the moon", "\n\t", "take", "\x00"]
INFO_KEYS = {"admissible_commands", "won", "lost", "task", "valid_action", "state_changed", "progress",
             "plan_length", "gamefile", "step"}


@pytest.fixture(autouse=True)
def _private_sas_cache(tmp_path_factory, monkeypatch):
    """Keep the on-disk SAS translation cache of these tests out of the user's cache folder."""
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))


@pytest.fixture(scope="module")
def generated_games(tmp_path_factory) -> list[Path]:
    """One generated game of each of the six task types (skipped if the generator is missing)."""
    games = pytest.importorskip("derl_gym.envs.alfworld.games")
    config = games.GeneratorConfig(games_per_task=1, num_receptacles=2, num_distractors=1, seed=0,
                                   split="test_alfworld_env")
    paths = games.ensure_games(config, tmp_path_factory.mktemp("alfworld_games"))
    assert len(paths) == 6
    return paths


def play(env: ALFWorldEnv, seed: int, steps: int, junk_prob: float = 0.2, options=None) -> list:
    """Random play (admissible commands and junk); returns every output, resetting when done."""
    rng = random.Random(seed)
    out = []
    obs, info = env.reset(seed=seed, options=options)
    out.append((obs, info))
    for _ in range(steps):
        if rng.random() < junk_prob:
            action = rng.choice(JUNK)
        else:
            action = rng.choice(info["admissible_commands"])
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((action, obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset(options=options)
            out.append((obs, info))
    return out


def play_walkthrough(env: ALFWorldEnv, options=None) -> list:
    obs, info = env.reset(options=options)
    out = [(obs, info)]
    for command in env.walkthrough:
        out.append(env.step(command))
    return out


# ------------------------------------------------------------------------------------ basics

def test_check_env_passes_direct_and_through_gym_make():
    env = ALFWorldEnv(games=[HANDMADE])
    check_env(env)
    env.close()
    made = gym.make("derl_gym/ALFWorld-v0", games=[str(HANDMADE)])
    check_env(made.unwrapped)
    made.close()


def test_reset_observation_and_info_read_like_alfworld():
    env = ALFWorldEnv(games=[HANDMADE])
    obs, info = env.reset(seed=0)
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "you see a cabinet 1, a countertop 1, a diningtable 1, a fridge 1, a microwave 1, and a sinkbasin 1" in obs
    assert info["task"] == "Your task is to: put a clean apple in fridge."
    assert obs.endswith(info["task"])
    assert set(info) == INFO_KEYS
    assert info["admissible_commands"] == sorted(info["admissible_commands"])
    assert "help" not in info["admissible_commands"]
    assert "go to fridge 1" in info["admissible_commands"] and "look" in info["admissible_commands"]
    assert info["plan_length"] == 7 and info["won"] is False and info["step"] == 0
    assert info["gamefile"] == str(HANDMADE)
    assert env.observation_space.contains(obs)
    env.close()
    ansi = ALFWorldEnv(games=[HANDMADE], render_mode="ansi")
    ansi.reset(seed=0)
    ansi.step("go to fridge 1")
    assert ansi.render() == "> go to fridge 1\nYou arrive at fridge 1. The fridge 1 is closed."
    assert env.render() is None


def test_handmade_game_walkthrough_wins():
    env = gym.make("derl_gym/ALFWorld-v0", games=[str(HANDMADE)])
    obs, info = env.reset(seed=1)
    walkthrough = env.unwrapped.walkthrough
    assert walkthrough == json.loads(HANDMADE.read_text())["walkthrough"]
    lengths = [info["plan_length"]]
    rewards = []
    for i, command in enumerate(walkthrough):
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        rewards.append(reward)
        lengths.append(info["plan_length"])
        assert info["valid_action"] and info["state_changed"] and info["progress"] == 1.0
        assert terminated == (i == len(walkthrough) - 1) and not truncated
    assert obs == "You move the apple 2 to the fridge 1."
    assert rewards == [0.0] * (len(walkthrough) - 1) + [1.0]
    assert info["won"] is True
    assert lengths == list(range(len(walkthrough), -1, -1))
    env.close()


def test_inadmissible_actions_say_nothing_happens_and_count():
    env = ALFWorldEnv(games=[HANDMADE], max_episode_steps=len(JUNK))
    _, info0 = env.reset(seed=0)
    for i, junk in enumerate(JUNK):
        obs, reward, terminated, truncated, info = env.step(junk)
        assert obs == NOTHING_HAPPENS and reward == 0.0 and not terminated
        assert info["valid_action"] is False and info["state_changed"] is False and info["progress"] == 0.0
        assert info["step"] == i + 1
        assert info["admissible_commands"] == info0["admissible_commands"]
        assert truncated == (i == len(JUNK) - 1)
    # whitespace around an admissible command is stripped, as TextWorld does
    env.reset()
    obs, *_ , info = env.step("  go to fridge 1 \n")
    assert info["valid_action"] and obs == "You arrive at fridge 1. The fridge 1 is closed."
    # look/inventory are admissible but do not change the world
    _, *_, info = env.step("look")
    assert info["valid_action"] and not info["state_changed"] and info["progress"] == 0.0
    with pytest.raises(TypeError, match="str"):
        env.step(3)
    env.close()


def test_random_play_with_junk_never_crashes_and_stays_in_spaces(generated_games):
    env = ALFWorldEnv(games=[HANDMADE, *generated_games], max_episode_steps=30, cache=TransitionCache())
    out = play(env, seed=0, steps=2000, junk_prob=0.25)
    steps = [o for o in out if len(o) == 6]
    assert len(steps) == 2000
    resets = [o for o in out if len(o) == 2]
    assert len(resets) >= 2000 // 30
    for o in out:
        obs, info = (o[0], o[1]) if len(o) == 2 else (o[1], o[5])
        assert env.observation_space.contains(obs)
        assert "help" not in info["admissible_commands"] and info["admissible_commands"]
        assert 0.0 <= info["progress"] <= 1.0
    invalid = [s for s in steps if not s[5]["valid_action"]]
    assert invalid and all(s[1] == NOTHING_HAPPENS for s in invalid)
    assert {s[5]["gamefile"] for s in steps} == {str(p) for p in [HANDMADE, *generated_games]}
    env.close()


def test_seeded_game_order_and_game_option(generated_games):
    games = [HANDMADE, *generated_games]
    env_a, env_b = ALFWorldEnv(games=games), ALFWorldEnv(games=games)
    order_a = [env_a.reset(seed=5 if i == 0 else None)[1]["gamefile"] for i in range(14)]
    order_b = [env_b.reset(seed=5 if i == 0 else None)[1]["gamefile"] for i in range(14)]
    assert order_a == order_b
    assert sorted(order_a[:7]) == sorted(str(g) for g in games)  # one pass visits every game once
    assert env_a.reset(options={"game": 3})[1]["gamefile"] == str(games[3])
    assert env_a.reset(options={"game": str(HANDMADE)})[1]["gamefile"] == str(HANDMADE)
    with pytest.raises(ValueError, match="out of range"):
        env_a.reset(options={"game": 99})


# ---------------------------------------------------------------------- cache equivalence

def test_cached_and_uncached_play_identical_on_handmade_game():
    cache = TransitionCache()
    reference = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=3, steps=120)
    cold = play(ALFWorldEnv(games=[HANDMADE], cache=cache), seed=3, steps=120)
    warm = play(ALFWorldEnv(games=[HANDMADE], cache=cache), seed=3, steps=120)
    assert cold == reference
    assert warm == reference
    assert cache.transitions.hits > 0
    # a different action sequence that starts on cached paths and then leaves them (engine replay)
    reference2 = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=4, steps=120)
    assert play(ALFWorldEnv(games=[HANDMADE], cache=cache), seed=4, steps=120) == reference2
    walk_ref = play_walkthrough(ALFWorldEnv(games=[HANDMADE], cache=False))
    assert play_walkthrough(ALFWorldEnv(games=[HANDMADE], cache=cache)) == walk_ref


def test_cached_and_uncached_identical_on_generated_games(generated_games):
    cache = TransitionCache()
    for i, path in enumerate(generated_games):
        options = {"game": str(path)}
        ref_env, fast_env = ALFWorldEnv(games=[path], cache=False), ALFWorldEnv(games=[path], cache=cache)
        assert play(fast_env, seed=i, steps=40, options=options) == play(ref_env, seed=i, steps=40, options=options)
        assert play_walkthrough(fast_env, options) == play_walkthrough(ref_env, options)
        ref_env.close()
        fast_env.close()


def test_tiny_cache_with_evictions_and_game_switches_matches_uncached(generated_games):
    games = [HANDMADE, *generated_games[:3]]
    kwargs = dict(games=games, max_episode_steps=8)
    reference = play(ALFWorldEnv(cache=False, **kwargs), seed=9, steps=120, junk_prob=0.1)
    tiny = TransitionCache(max_states=6, max_transitions=6)
    env = ALFWorldEnv(cache=tiny, **kwargs)
    assert play(env, seed=9, steps=120, junk_prob=0.1) == reference
    assert len(tiny.states) <= 6 and len(tiny.transitions) <= 6
    assert len({o[1]["gamefile"] for o in reference if len(o) == 2}) == len(games)


def test_sas_disk_cache_round_trip_plays_like_textworld(tmp_path, monkeypatch):
    from derl_gym.envs.alfworld import engine

    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path))
    monkeypatch.setenv(engine.SAS_CACHE_ENV, "1")
    game = load_game_file(HANDMADE)
    engine.clear_caches()
    _, sas, sas_replan = engine.get_translation(game)  # translated, written to disk
    files = list((tmp_path / "alfworld" / "sas").glob("*.json.gz"))
    assert len(files) == 1
    engine.clear_caches()
    task, sas2, sas_replan2 = engine.get_translation(load_game_file(HANDMADE))  # read from disk
    assert (sas2, sas_replan2) == (sas, sas_replan)
    assert task.init and task.actions
    fast, ref = FastEngine(), ReferenceEngine()
    fast.load(game)
    ref.load(game)
    assert fast.reset() == ref.reset()
    for command in json.loads(HANDMADE.read_text())["walkthrough"]:
        assert fast.state_info() == ref.state_info()
        assert fast.step(command)[0] == ref.step(command)[0]
    assert fast.state_info() == ref.state_info() and fast.won()
    # a corrupt cache file is ignored (re-translated and rewritten)
    files[0].write_bytes(b"not gzip")
    engine.clear_caches()
    assert engine.get_translation(load_game_file(HANDMADE))[1] == sas
    monkeypatch.setenv(engine.SAS_CACHE_ENV, "0")
    assert engine.sas_cache_dir() is None
    fast.close()
    ref.close()


def test_fast_engine_matches_textworld_pddl_env_state_by_state(generated_games):
    for path in [HANDMADE, *generated_games[:3]]:
        game = load_game_file(path)
        fast, ref = FastEngine(), ReferenceEngine()
        fast.load(game)
        ref.load(game)
        rng = random.Random(7)
        assert fast.reset() == ref.reset()
        for _ in range(25):
            info = fast.state_info()
            assert info == ref.state_info()
            command = rng.choice([c for c in info.commands if c != "help"])
            assert fast.step(command)[0] == ref.step(command)[0]
        key, history = fast.state_key(), list(fast.history)
        fast.replay(history)
        assert fast.state_key() == key and fast.state_info() == ref.state_info()
        fast.close()
        ref.close()


# ------------------------------------------------------------------------- generated games

def test_generated_games_of_all_six_types_win_through_the_env(generated_games):
    env = ALFWorldEnv(games=generated_games)
    seen = set()
    for path in generated_games:
        traj = json.loads((path.parent / "traj_data.json").read_text())
        seen.add(traj["task_type"])
        obs, info = env.reset(options={"game": str(path)})
        assert info["task"].startswith("Your task is to: ")
        assert env.walkthrough
        for command in env.walkthrough:
            obs, reward, terminated, truncated, info = env.step(command)
            assert info["valid_action"] and info["progress"] == 1.0
        assert terminated and reward == 1.0 and info["won"] and info["plan_length"] == 0
    assert len(seen) == 6
    env.close()


def test_official_json_2_1_1_folder_via_data_dir(generated_games, tmp_path):
    root = tmp_path / "json_2.1.1"
    for i, path in enumerate(generated_games):
        trial = path.parent
        for part in ("train", "valid_seen", "valid_unseen"):
            shutil.copytree(trial, root / part / trial.parent.name / trial.name)
    env = ALFWorldEnv(split="test", data_dir=tmp_path, task_types=[1, "pick_two_obj_and_place"])
    names = sorted(Path(g).parts[-3].split("-")[0] for g in env.game_files)
    assert names == ["pick_and_place_simple", "pick_two_obj_and_place"]
    assert all("valid_seen" in g for g in env.game_files)
    obs, info = env.reset(seed=0)
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
    with pytest.raises(ValueError, match="unknown ALFWorld task type"):
        ALFWorldEnv(games=[HANDMADE], task_types=["fly"])


# ------------------------------------------------------------------------- malformed files

@pytest.mark.parametrize("content, match", [
    ("this is not json", "not valid JSON"),
    ("[1, 2]", "JSON list"),
    (json.dumps({"grammar": "g", "pddl_problem": "p"}), "missing the key 'pddl_domain'"),
    (json.dumps({"pddl_domain": "d", "pddl_problem": "p"}), "missing the key 'grammar'"),
    (json.dumps({"pddl_domain": "d", "grammar": "g"}), "missing the key 'pddl_problem'"),
    (json.dumps({"pddl_domain": "d", "grammar": "", "pddl_problem": "p"}), "'grammar' must be a non-empty string"),
])
def test_malformed_game_files_raise_value_error_naming_file_and_key(tmp_path, content, match):
    bad = tmp_path / "broken.tw-pddl"
    bad.write_text(content)
    env = ALFWorldEnv(games=[bad])
    with pytest.raises(ValueError, match=match) as err:
        env.reset(seed=0)
    assert "broken.tw-pddl" in str(err.value)


def test_missing_game_file_is_reported():
    with pytest.raises(FileNotFoundError, match="nowhere.tw-pddl"):
        ALFWorldEnv(games=["/nowhere.tw-pddl"])
