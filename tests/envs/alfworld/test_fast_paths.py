"""ALFWorld fast paths: the on-disk transition cache, prefix replay and bounded memos play like TextWorld."""

from __future__ import annotations

import gzip
import json

import pytest

from derl_gym.envs.alfworld import engine
from derl_gym.envs.alfworld.engine import TransitionCache
from derl_gym.envs.alfworld.env import ALFWorldEnv
from tests.envs.alfworld.test_alfworld_env import HANDMADE, generated_games, play  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _private_cache_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl_gym_cache"))


def test_disk_backed_cache_replays_without_the_engine_and_matches_uncached(tmp_path):
    reference = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=3, steps=150)
    first = TransitionCache(folder=tmp_path)
    env = ALFWorldEnv(games=[HANDMADE], cache=first)
    assert play(env, seed=3, steps=150) == reference
    env.close()  # flushes the journal
    files = list(tmp_path.glob("*.json.gz"))
    assert len(files) == 1
    with gzip.open(files[0], "rt") as f:
        stored = json.load(f)
    assert stored["version"] == engine.TRANSITION_FILE_VERSION and stored["states"] and stored["transitions"]
    # a new process (a new cache object on the same folder): every transition comes from disk
    second = TransitionCache(folder=tmp_path)
    env2 = ALFWorldEnv(games=[HANDMADE], cache=second)
    assert play(env2, seed=3, steps=150) == reference
    assert second.transitions.misses == 0 and second.transitions.hits > 0
    assert env2._engine is None  # the engine was never needed
    # leaving the stored paths still plays like TextWorld and adds to the file
    assert play(env2, seed=8, steps=150) == play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=8, steps=150)
    env2.close()
    with gzip.open(files[0], "rt") as f:
        assert len(json.load(f)["states"]) >= len(stored["states"])


def test_corrupt_or_foreign_transition_files_are_ignored(tmp_path):
    cache = TransitionCache(folder=tmp_path)
    env = ALFWorldEnv(games=[HANDMADE], cache=cache)
    env.reset(seed=0)
    env.close()
    path = next(tmp_path.glob("*.json.gz"))
    path.write_bytes(b"not gzip at all")
    reference = play(ALFWorldEnv(games=[HANDMADE], cache=False), seed=1, steps=40)
    assert play(ALFWorldEnv(games=[HANDMADE], cache=TransitionCache(folder=tmp_path)), seed=1, steps=40) == reference
    with gzip.open(path, "wt") as f:
        json.dump({"version": -1, "states": [["zz"]]}, f)
    assert play(ALFWorldEnv(games=[HANDMADE], cache=TransitionCache(folder=tmp_path)), seed=1, steps=40) == reference


def test_old_and_fast_paths_play_identically(generated_games, monkeypatch):  # noqa: F811
    games = [HANDMADE, *generated_games[:2]]
    monkeypatch.setenv("DERL_GYM_INNER_FAST", "0")
    old = play(ALFWorldEnv(games=games, cache=TransitionCache(max_states=40, max_transitions=40),
                           max_episode_steps=10), seed=5, steps=100)
    monkeypatch.setenv("DERL_GYM_INNER_FAST", "1")
    fast_env = ALFWorldEnv(games=games, cache=TransitionCache(max_states=40, max_transitions=40),
                           max_episode_steps=10)
    assert play(fast_env, seed=5, steps=100) == old


def test_grammar_memos_stay_bounded_while_playing(generated_games, monkeypatch):  # noqa: F811
    reference = play(ALFWorldEnv(games=generated_games[:2], cache=False), seed=2, steps=60)
    engine.clear_caches()
    limits = {name: memo.maxsize for name, memo in (("parse", engine._PARSE_MEMO), ("query", engine._QUERY_MEMO))}
    engine._PARSE_MEMO.resize(8)
    engine._QUERY_MEMO.resize(8)
    try:
        got = play(ALFWorldEnv(games=generated_games[:2], cache=TransitionCache()), seed=2, steps=60)
        assert got == reference
        assert len(engine._PARSE_MEMO) <= 8 and len(engine._QUERY_MEMO) <= 8
        assert engine._PARSE_MEMO.misses > 8  # it did evict and re-parse
    finally:
        engine._PARSE_MEMO.resize(limits["parse"])
        engine._QUERY_MEMO.resize(limits["query"])
