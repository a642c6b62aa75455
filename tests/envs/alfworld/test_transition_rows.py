"""The transition cache's disk rows: entries are built on lookup and survive LRU evictions."""

from __future__ import annotations

import pytest

from derl_gym.envs.alfworld.engine import TransitionCache
from derl_gym.envs.alfworld.env import ALFWorldEnv
from tests.envs.alfworld.test_alfworld_env import HANDMADE, play


@pytest.fixture(autouse=True)
def _private_cache_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))


def test_evicted_states_come_back_from_disk_rows_without_the_engine(tmp_path):
    reference = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=4, steps=120)
    first = ALFWorldEnv(games=[HANDMADE], cache=TransitionCache(folder=tmp_path))
    assert play(first, seed=4, steps=120) == reference
    first.close()  # writes the game's file
    # tables far smaller than the states played: every entry is evicted many times over
    tiny = TransitionCache(folder=tmp_path, max_states=2, max_transitions=2)
    env = ALFWorldEnv(games=[HANDMADE], cache=tiny)
    assert play(env, seed=4, steps=120) == reference
    assert env._engine is None  # each lookup was answered from the rows read from disk
    assert len(tiny.states) <= 2 and len(tiny.transitions) <= 2
    assert tiny.transitions.misses == 0 and tiny.transitions.hits >= 60
    assert tiny.stats()["file_rows"] > 4


def test_row_bound_drops_rows_and_play_still_matches(tmp_path):
    reference = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=6, steps=80)
    first = ALFWorldEnv(games=[HANDMADE], cache=TransitionCache(folder=tmp_path))
    play(first, seed=6, steps=80)
    first.close()
    cache = TransitionCache(folder=tmp_path, max_states=2, max_transitions=2, max_file_rows=1)
    cache._keep_rows("other-game", {"states": [["00", "00", [], False, 1]], "transitions": []})
    env = ALFWorldEnv(games=[HANDMADE], cache=cache)
    assert play(env, seed=6, steps=80) == reference
    assert "other-game" not in cache._rows  # the older game's rows were dropped for the newer one


def test_malformed_rows_are_misses_not_crashes(tmp_path):
    cache = TransitionCache(folder=tmp_path)
    cache._keep_rows("g", {"states": [["ab", "not hex", ["go"], False, 1]],
                           "transitions": [["ab", "go", "zz", "text", "op"]]})
    assert cache.states.get(("g", bytes.fromhex("ab"))) is None
    assert cache.transitions.get(("g", bytes.fromhex("ab"), "go")) is None
    cache._keep_rows("h", {"states": [3]})  # a row that is not a list: the file is ignored
    assert "h" not in cache._rows
