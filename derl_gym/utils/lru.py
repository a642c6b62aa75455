"""One bounded least-recently-used cache class for every process-wide cache in derl-gym.

:class:`LRUCache` is a thread-safe mapping with a maximum number of entries: putting one more
entry than ``maxsize`` evicts the least recently used one. Module-level (process-wide) caches are
created with a ``name`` and registered, so :func:`process_caches` lists them all with their
limits and :func:`cache_stats` reports their sizes and hit rates (a worker's memory stays bounded
by the sum of those limits times the entry sizes documented next to each cache).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, Iterator, TypeVar

__all__ = ["LRUCache", "process_caches", "cache_stats", "clear_process_caches"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_REGISTRY: "OrderedDict[str, LRUCache]" = OrderedDict()
_REGISTRY_LOCK = threading.Lock()


class LRUCache(Generic[K, V]):
    """A thread-safe mapping holding at most ``maxsize`` entries, evicting the least recently used.

    ``get(key)`` returns the value or ``default`` (``None``) and marks the entry as recently used;
    ``put(key, value)`` inserts or replaces it; ``get_or_put(key, factory)`` computes a missing
    value once. ``hits`` / ``misses`` count :meth:`get` outcomes. A ``name`` registers the cache
    as a process-wide one (see :func:`process_caches`); names must be unique. Raises
    ``ValueError`` for ``maxsize < 1``.

    Example:
        >>> from derl_gym.utils.lru import LRUCache
        >>> cache = LRUCache(2)
        >>> cache.put("a", 1); cache.put("b", 2)
        >>> cache.get("a")  # "a" is now the most recently used
        1
        >>> cache.put("c", 3)  # evicts "b"; then "d" evicts "a"
        >>> "b" in cache, cache.get_or_put("d", lambda: 4), sorted(cache)
        (False, 4, ['c', 'd'])
        >>> cache.stats()
        {'size': 2, 'maxsize': 2, 'hits': 1, 'misses': 1}
    """

    def __init__(self, maxsize: int, name: str | None = None, description: str = "") -> None:
        maxsize = int(maxsize)
        if maxsize < 1:
            raise ValueError(f"LRUCache maxsize must be >= 1, got {maxsize}; it bounds the number of entries")
        self._maxsize = maxsize
        self.name = name
        self.description = description
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        if name is not None:
            with _REGISTRY_LOCK:
                if name in _REGISTRY:
                    raise ValueError(f"a process-wide cache named {name!r} already exists; pick another name")
                _REGISTRY[name] = self

    @property
    def maxsize(self) -> int:
        """The maximum number of entries."""
        return self._maxsize

    def resize(self, maxsize: int) -> None:
        """Change the limit to ``maxsize`` (>= 1), evicting the oldest entries beyond it; returns nothing."""
        maxsize = int(maxsize)
        if maxsize < 1:
            raise ValueError(f"LRUCache maxsize must be >= 1, got {maxsize}")
        with self._lock:
            self._maxsize = maxsize
            while len(self._data) > maxsize:
                self._data.popitem(last=False)

    def get(self, key: K, default: Any = None) -> V | Any:
        """Return the value cached for ``key`` (now the most recently used) or ``default``."""
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        """Cache ``value`` under ``key``, evicting the least recently used entry beyond ``maxsize``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def get_or_put(self, key: K, factory: Callable[[], V]) -> V:
        """Return the cached value of ``key``, computing and caching ``factory()`` on a miss."""
        sentinel = _MISSING
        value = self.get(key, sentinel)
        if value is sentinel:
            value = factory()
            self.put(key, value)
        return value

    def clear(self) -> None:
        """Drop every entry and reset the hit/miss counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._data))

    def stats(self) -> dict[str, Any]:
        """Return ``{"size", "maxsize", "hits", "misses"}``."""
        return {"size": len(self._data), "maxsize": self._maxsize, "hits": self.hits, "misses": self.misses}

    def __getstate__(self) -> dict[str, Any]:
        # a cache never travels between processes with its contents; a copy is an empty unnamed cache
        return {"maxsize": self._maxsize, "description": self.description}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["maxsize"], description=state.get("description", ""))  # type: ignore[misc]

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"LRUCache({label}size={len(self._data)}, maxsize={self._maxsize})"


_MISSING = object()


def process_caches() -> dict[str, LRUCache]:
    """Return the registered process-wide caches by name (those created with a ``name``).

    Example:
        >>> import derl_gym.envs.alfworld.engine  # its module-level caches register on import
        >>> from derl_gym.utils.lru import process_caches
        >>> process_caches()["alfworld.logic"].maxsize
        64
    """
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def cache_stats() -> dict[str, dict[str, Any]]:
    """Return :meth:`LRUCache.stats` of every process-wide cache, by name.

    Example:
        >>> import derl_gym.envs.alfworld.engine
        >>> from derl_gym.utils.lru import cache_stats
        >>> sorted(cache_stats()["alfworld.logic"])
        ['hits', 'maxsize', 'misses', 'size']
    """
    return {name: cache.stats() for name, cache in process_caches().items()}


def clear_process_caches() -> None:
    """Clear every process-wide cache; returns nothing.

    Example:
        >>> import derl_gym.envs.alfworld.engine
        >>> from derl_gym.utils.lru import cache_stats, clear_process_caches
        >>> clear_process_caches()
        >>> all(stats["size"] == 0 for stats in cache_stats().values())
        True
    """
    for cache in process_caches().values():
        cache.clear()
