"""Keeps generated games in a disk cache: one folder per ``GeneratorConfig.key()``, a manifest, a file lock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from derl_gym.envs.alfworld.game_config import GENERATOR_VERSION, GeneratorConfig
from derl_gym.envs.alfworld.generation import write_games

__all__ = ["MANIFEST", "default_cache_dir", "ensure_games"]

MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """Returns the cache root: ``$DERL_GYM_CACHE/alfworld`` or ``~/.cache/derl_gym/alfworld``.

    Example:
        >>> from derl_gym.envs.alfworld.game_cache import default_cache_dir
        >>> default_cache_dir().name
        'alfworld'
    """
    base = os.environ.get("DERL_GYM_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "derl_gym") / "alfworld"


def _read_manifest(folder: Path, config: GeneratorConfig) -> list[Path] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != config.key():
        return None
    paths = [folder / p for p in data.get("games", [])]
    if len(paths) != config.num_games or not all(p.is_file() for p in paths):
        return None
    return paths


def ensure_games(config: GeneratorConfig, cache_dir: str | os.PathLike | None = None,
                 workers: int | None = None) -> list[Path]:
    """Returns the cached ``game.tw-pddl`` paths of ``config``, generating them if needed.

    Games live in ``<cache_dir or default_cache_dir()>/<config.key()>/<config.split>/...``. A
    ``manifest.json`` is written last (atomically), so an interrupted generation is redone
    from scratch on the next call; a complete folder is reused without generating anything.
    Parallel callers of one config wait for the first one (file lock). ``workers``: generation
    processes (see :func:`~derl_gym.envs.alfworld.generation.iter_games`).

    Example:
        >>> import tempfile
        >>> from derl_gym.envs.alfworld.game_cache import MANIFEST, ensure_games
        >>> from derl_gym.envs.alfworld.game_config import GeneratorConfig
        >>> cfg = GeneratorConfig(task_types="pick_and_place_simple", games_per_task=1, num_receptacles=1,
        ...                       num_distractors=0)
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     first = ensure_games(cfg, cache)          # generates
        ...     again = ensure_games(cfg, cache)          # reads the manifest, generates nothing
        ...     first == again, (first[0].parents[3] / MANIFEST).is_file()
        (True, True)
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / config.key()
    cached = _read_manifest(folder, config)
    if cached is not None:
        return cached
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one generator per config at a time: parallel workers wait for the first one's games
    with _file_lock(folder.parent / f".{config.key()}.lock"):
        cached = _read_manifest(folder, config)
        if cached is not None:
            return cached
        for stale in folder.parent.glob(f".{config.key()}-*"):  # left by a killed generation
            shutil.rmtree(stale, ignore_errors=True)
        return _generate_into(config, folder, workers)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Holds an exclusive ``flock`` on ``path`` (no-op where ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _generate_into(config: GeneratorConfig, folder: Path, workers: int | None) -> list[Path]:
    """Generates ``config`` in a temporary sibling folder and renames it to ``folder``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{config.key()}-", dir=folder.parent))
    try:
        paths = write_games(config, tmp, workers)
        rel = [str(p.relative_to(tmp)) for p in paths]
        manifest = {"key": config.key(), "config": config.to_dict(), "games": rel,
                    "generator_version": GENERATOR_VERSION}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if folder.exists():  # incomplete leftover or a concurrent writer
            cached = _read_manifest(folder, config)
            if cached is not None:
                return cached
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # a concurrent process finished first
            cached = _read_manifest(folder, config)
            if cached is None:
                raise
            return cached
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [folder / r for r in rel]
