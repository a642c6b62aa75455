"""ALFWorld games from outside the project: objects without numeric suffixes ("desk", "cd").

Upstream's demangler names such objects ``"desk "``, so its admissible commands and its planner's
walkthrough carry trailing and double spaces that TextWorld's stripped input never matches. The env
normalises whitespace everywhere; these tests play such a game (cached and uncached) and check that
numbered games keep their exact texts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from derl_gym.envs.alfworld.engine import (  # noqa: E402
    FastEngine,
    ReferenceEngine,
    TransitionCache,
    load_game_file,
    normalize_command,
)
from derl_gym.envs.alfworld.env import NOTHING_HAPPENS, ALFWorldEnv  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "alfworld"
PLAIN = DATA / "look_at_cd_under_desklamp.tw-pddl"
NUMBERED = DATA / "clean_apple_in_fridge.tw-pddl"
HAND_WALKTHROUGH = ["go to bed", "take cd from bed", "go to desk", "use desklamp"]


@pytest.fixture(autouse=True)
def _private_sas_cache(tmp_path_factory, monkeypatch):
    """Keep the on-disk SAS translation cache of these tests out of the user's cache folder."""
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))


def _normal(text: str) -> bool:
    return text == text.strip() and "  " not in text and text == normalize_command(text)


def _play(env: ALFWorldEnv, commands: list[str]) -> list:
    obs, info = env.reset(seed=0)
    out = [(obs, info)]
    for command in commands:
        out.append(env.step(command))
    return out


def test_normalize_command_collapses_and_strips():
    assert normalize_command("  go to  desk ") == "go to desk"
    assert normalize_command("take cd\t from\n bed ") == "take cd from bed"
    assert normalize_command("go to fridge 1") == "go to fridge 1"
    assert normalize_command("   ") == ""


def test_fixture_walkthrough_is_upstreams_spaced_spelling():
    # the file keeps fast-downward's walkthrough as upstream writes it; loading normalises it
    raw = json.loads(PLAIN.read_text())["walkthrough"]
    assert raw != [normalize_command(c) for c in raw]
    assert any(c.endswith(" ") for c in raw) and any("  " in c for c in raw)
    assert list(load_game_file(PLAIN).walkthrough) == [normalize_command(c) for c in raw] == HAND_WALKTHROUGH


@pytest.mark.parametrize("cache", [True, False])
def test_unnumbered_game_commands_are_normal_and_walkthrough_wins(cache):
    env = ALFWorldEnv(games=[PLAIN], cache=TransitionCache() if cache else False)
    obs, info = env.reset(seed=0)
    assert "you see a bed, a desk, and a drawer." in obs
    assert info["task"] == "Your task is to: look at cd under the desklamp."
    assert env.walkthrough == HAND_WALKTHROUGH
    rewards = []
    for i, command in enumerate(env.walkthrough):
        assert info["admissible_commands"] and all(_normal(c) for c in info["admissible_commands"])
        assert command in info["admissible_commands"]
        obs, reward, terminated, truncated, info = env.step(command)
        rewards.append(reward)
        assert info["valid_action"] and info["progress"] == 1.0, (command, obs)
        assert terminated == (i == len(HAND_WALKTHROUGH) - 1) and not truncated
    assert obs == "You turn on the desklamp."
    assert rewards == [0.0, 0.0, 0.0, 1.0]
    assert info["won"] is True and info["plan_length"] == 0
    env.close()


@pytest.mark.parametrize("cache", [True, False])
def test_actions_with_extra_spaces_play_like_normal_ones(cache):
    spaced = ["go to  bed ", "  take cd  from bed", "go to desk\t", " use   desklamp  "]
    normal = _play(ALFWorldEnv(games=[PLAIN], cache=TransitionCache() if cache else False), HAND_WALKTHROUGH)
    env = ALFWorldEnv(games=[PLAIN], cache=TransitionCache() if cache else False)
    assert _play(env, spaced) == normal
    assert normal[-1][1] == 1.0 and normal[-1][2] is True and normal[-1][4]["won"]
    # a numbered game accepts extra spaces too and still rejects what is not a command
    numbered = ALFWorldEnv(games=[NUMBERED], cache=TransitionCache() if cache else False)
    numbered.reset(seed=0)
    obs, _, _, _, info = numbered.step("go to   countertop 1 ")
    assert info["valid_action"] and obs.startswith("You arrive at countertop 1.")
    obs, _, _, _, info = numbered.step("go to countertop1")
    assert obs == NOTHING_HAPPENS and not info["valid_action"]


def test_transition_cache_keys_on_the_normalised_action():
    cache = TransitionCache()
    first = _play(ALFWorldEnv(games=[PLAIN], cache=cache), HAND_WALKTHROUGH)
    entries, hits = len(cache.transitions), cache.transitions.hits
    assert entries == len(HAND_WALKTHROUGH)
    second = _play(ALFWorldEnv(games=[PLAIN], cache=cache), ["go to  bed ", "take cd  from bed ",
                                                               " go to desk", "use desklamp   "])
    assert second == first
    assert len(cache.transitions) == entries  # no entry keyed on a spaced spelling
    assert cache.transitions.hits == hits + len(HAND_WALKTHROUGH)


def test_fast_engine_matches_reference_engine_on_unnumbered_game():
    game = load_game_file(PLAIN)
    fast, ref = FastEngine(), ReferenceEngine()
    fast.load(game)
    ref.load(game)
    assert fast.reset() == ref.reset()
    rng = random.Random(5)
    for _ in range(30):
        info = fast.state_info()
        assert info == ref.state_info()
        assert all(_normal(c) for c in info.commands)
        command = rng.choice([c for c in info.commands if c != "help"])
        assert fast.step(command)[0] == ref.step(command)[0]
    fast.close()
    ref.close()


def test_cached_and_uncached_random_play_identical_with_spaced_and_junk_actions():
    def play(env: ALFWorldEnv) -> list:
        rng = random.Random(11)
        obs, info = env.reset(seed=11)
        out = [(obs, info)]
        for _ in range(60):
            r = rng.random()
            command = rng.choice(info["admissible_commands"])
            if r < 0.3:
                command = "  " + command.replace(" ", "   ") + " "
            elif r < 0.4:
                command = rng.choice(["", "  ", "go to", "use desk lamp", "help"])
            obs, reward, terminated, truncated, info = env.step(command)
            out.append((command, obs, reward, terminated, truncated, info))
            if terminated or truncated:
                obs, info = env.reset()
                out.append((obs, info))
        return out

    reference = play(ALFWorldEnv(games=[PLAIN], cache=False, max_episode_steps=15))
    assert play(ALFWorldEnv(games=[PLAIN], cache=TransitionCache(), max_episode_steps=15)) == reference
    assert any(o[3] for o in reference if len(o) == 6) or any(o[4] for o in reference if len(o) == 6)


def test_numbered_game_texts_unchanged():
    # normalisation is a no-op on numbered games: the stored walkthrough and commands are exact
    raw = json.loads(NUMBERED.read_text())["walkthrough"]
    assert list(load_game_file(NUMBERED).walkthrough) == raw
    env = ALFWorldEnv(games=[NUMBERED])
    obs, info = env.reset(seed=0)
    assert "you see a cabinet 1, a countertop 1, a diningtable 1" in obs
    assert all(_normal(c) for c in info["admissible_commands"])
    env.close()


def test_solve_game_gives_a_normalised_winning_walkthrough_for_unnumbered_game():
    from derl_gym.envs.alfworld.games import solve_game

    data = json.loads(PLAIN.read_text())
    assert solve_game(data) == HAND_WALKTHROUGH
