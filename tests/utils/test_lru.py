"""LRUCache: bounded, least recently used evicted first, registry of process-wide caches."""

from __future__ import annotations

import copy
import pickle

import pytest

from derl_gym.utils.fastpath import StrList
from derl_gym.utils.lru import LRUCache, cache_stats, process_caches


def test_lru_evicts_least_recently_used_and_counts_hits():
    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == "A"          # a is now the most recent
    cache.put("d", "D")                   # evicts b, the least recently used
    assert len(cache) == 3 and "b" not in cache and cache.get("b") is None
    assert cache.get("b", "missing") == "missing"
    assert cache.stats() == {"size": 3, "maxsize": 3, "hits": 1, "misses": 2}
    assert cache.get_or_put("e", lambda: "E") == "E" and len(cache) == 3 and "c" not in cache
    cache.resize(1)
    assert list(cache) == ["e"]
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        LRUCache(0)


def test_named_caches_are_registered_once_and_copies_are_empty():
    cache = LRUCache(2, name="test_lru.unique_name")
    assert process_caches()["test_lru.unique_name"] is cache
    with pytest.raises(ValueError, match="already exists"):
        LRUCache(2, name="test_lru.unique_name")
    cache.put("k", 1)
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone) == 0 and clone.maxsize == 2 and clone.name is None


def test_every_process_wide_cache_stays_within_its_limit():
    import derl_gym.envs.alfworld.engine  # noqa: F401  (creates the ALFWorld caches)
    import derl_gym.wrappers.text_actions  # noqa: F401

    caches = process_caches()
    expected = {"alfworld.game_files", "alfworld.logic", "alfworld.translations", "alfworld.command_texts",
                "alfworld.grammar_parses", "alfworld.grammar_queries", "alfworld.transition_cache.states",
                "alfworld.transition_cache.transitions", "alfworld.transition_cache.initial",
                "text_actions.content_words"}
    assert expected <= set(caches)
    for name in expected:  # overfill each (shrunk to keep the test small), then restore
        cache = caches[name]
        limit = cache.maxsize
        cache.resize(5)
        try:
            for i in range(20):
                cache.put(("test_lru", name, i), i)
            assert len(cache) == 5, name
            assert cache_stats()[name]["size"] <= cache_stats()[name]["maxsize"]
        finally:
            for i in range(20):
                cache._data.pop(("test_lru", name, i), None)
            cache.resize(limit)


def test_strlist_deepcopy_is_an_equal_independent_strlist():
    original = StrList(["go to desk 1", "take cd 1 from desk 1"])
    clone = copy.deepcopy({"admissible_commands": original})["admissible_commands"]
    assert clone == original and clone is not original and isinstance(clone, StrList)
    clone.append("look")
    assert len(original) == 2
    assert pickle.loads(pickle.dumps(original)) == original
