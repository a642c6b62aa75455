"""Generates a config's games in order (optionally in spawned worker processes) and writes them to disk.

The layout is json_2.1.1's, which upstream ``AlfredTWEnv`` reads:
``<out>/<split>/<task_type>-<Obj>-None-<Recep>-<scene>/trial_<id>/{game.tw-pddl,traj_data.json}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from derl_gym.envs.alfworld.game_builder import GeneratedGame, generate_game
from derl_gym.envs.alfworld.game_config import GeneratorConfig
from derl_gym.envs.alfworld.scenes import floor_plans_for_task
from derl_gym.envs.alfworld.solver import make_pddl_env

logger = logging.getLogger(__name__)

__all__ = ["iter_games", "save_game", "write_games"]


def _game_seed(config: GeneratorConfig, task_type: str, index: int) -> int:
    digest = hashlib.sha256(f"{config.seed}-{config.split}-{task_type}-{index}".encode()).hexdigest()
    return int(digest[:8], 16)


def _game_jobs(config: GeneratorConfig) -> list[tuple[Any, ...]]:
    """Returns the ``generate_game`` arguments of every game of ``config``, in order."""
    jobs: list[tuple[Any, ...]] = []
    for task_type in config.task_types:
        plans = floor_plans_for_task(task_type, config.floor_plans)
        if not plans:
            raise ValueError(f"none of floor_plans={config.floor_plans} can host {task_type!r}; "
                             f"usable: {floor_plans_for_task(task_type)}")
        order = list(plans)
        random.Random(f"plans-{config.seed}-{task_type}").shuffle(order)
        for i in range(config.games_per_task):
            fp = order[i % len(order)]  # cycle through a seeded permutation of the floor plans
            jobs.append((task_type, fp, _game_seed(config, task_type, i), config.num_receptacles,
                         config.num_distractors, config.max_attempts))
    return jobs


def _generate_jobs(jobs: Sequence[tuple[Any, ...]]) -> list[GeneratedGame]:
    """Generates a chunk of jobs with one verification env (worker-process entry point)."""
    env = make_pddl_env(policy=True)
    return [generate_game(t, fp, seed, nr, nd, max_attempts=ma, env=env) for t, fp, seed, nr, nd, ma in jobs]


def iter_games(config: GeneratorConfig, workers: int | None = None) -> Iterable[GeneratedGame]:
    """Yields the games of ``config`` in a deterministic order (task type, then index).

    ``workers`` > 1 generates in that many spawned processes (same games, same order); default
    ``$DERL_GYM_GEN_WORKERS`` or 1.

    Example:
        >>> from derl_gym.envs.alfworld.game_config import GeneratorConfig
        >>> from derl_gym.envs.alfworld.generation import iter_games
        >>> cfg = GeneratorConfig(task_types="pick_and_place_simple", games_per_task=1, num_receptacles=1,
        ...                       num_distractors=0)
        >>> [(g.task_type, g.game["solvable"]) for g in iter_games(cfg)]
        [('pick_and_place_simple', True)]
    """
    jobs = _game_jobs(config)
    if workers is None:
        workers = int(os.environ.get("DERL_GYM_GEN_WORKERS", "1") or 1)
    if workers <= 1 or len(jobs) <= 1:
        env = make_pddl_env(policy=True)
        for t, fp, seed, nr, nd, ma in jobs:
            yield generate_game(t, fp, seed, nr, nd, max_attempts=ma, env=env)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    size = max(1, len(jobs) // (4 * workers))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for chunk in pool.map(_generate_jobs, chunks):
            yield from chunk


def save_game(game: GeneratedGame, root: str | os.PathLike) -> Path:
    """Writes ``game`` as ``<root>/<task-dir>/trial_<id>/{game.tw-pddl,traj_data.json}``.

    Returns the path of ``game.tw-pddl``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> from derl_gym.envs.alfworld.generation import save_game
        >>> game = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0,
        ...                      verify=False)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     path = save_game(game, root)
        ...     path.name, sorted(p.name for p in path.parent.iterdir())
        ('game.tw-pddl', ['game.tw-pddl', 'initial_state.pddl', 'traj_data.json'])
    """
    trial = Path(root) / game.task_dir_name / game.trial_name
    trial.mkdir(parents=True, exist_ok=True)
    (trial / "traj_data.json").write_text(json.dumps(game.traj_data, indent=2))
    (trial / "initial_state.pddl").write_text(game.pddl_problem)
    path = trial / "game.tw-pddl"
    path.write_text(json.dumps(game.game))
    return path


def write_games(config: GeneratorConfig, out_dir: str | os.PathLike, workers: int | None = None) -> list[Path]:
    """Generates the games of ``config`` into ``<out_dir>/<config.split>/...`` (json_2.1.1 layout).

    Returns the ``game.tw-pddl`` paths in generation order. Logs games/s. ``workers``: see
    :func:`iter_games` (the games do not depend on it).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from derl_gym.envs.alfworld.game_config import GeneratorConfig
        >>> from derl_gym.envs.alfworld.generation import write_games
        >>> cfg = GeneratorConfig(task_types="pick_and_place_simple", games_per_task=1, num_receptacles=1,
        ...                       num_distractors=0, split="train")
        >>> with tempfile.TemporaryDirectory() as out:
        ...     [p.relative_to(out).parts[0] for p in write_games(cfg, out)]
        ['train']
    """
    root = Path(out_dir) / config.split
    paths: list[Path] = []
    t0 = time.perf_counter()
    for game in iter_games(config, workers):
        paths.append(save_game(game, root))
    dt = time.perf_counter() - t0
    logger.info("generated %d ALFWorld games in %.1fs (%.2f games/s) into %s", len(paths), dt,
                len(paths) / dt if dt > 0 else float("inf"), root)
    return paths
