"""Small shared utilities: :class:`~derl_gym.utils.lru.LRUCache`, the one bounded cache class."""

from derl_gym.utils.lru import LRUCache, cache_stats, clear_process_caches, process_caches

__all__ = ["LRUCache", "cache_stats", "clear_process_caches", "process_caches"]
