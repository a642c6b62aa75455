"""ALFWorld splits as in DERL / RLVMR: levels L0, L1, L2 with train / validation / test.

=====  ===============================================  ==============================================
level  train (+ validation = deterministic 20% of it)   test
=====  ===============================================  ==============================================
L0     all task types, seen floor plans                 held-out games of the seen floor plans
L1     same as L0                                       unseen floor plans (ALFRED's valid_unseen
                                                        scenes FloorPlan10, 219, 308, 424)
L2     pick_and_place_simple, look_at_obj_in_light,     pick_cool_then_place_in_recep,
       pick_clean_then_place_in_recep,                  pick_two_obj_and_place (seen floor plans,
       pick_heat_then_place_in_recep                    held-out games)
=====  ===============================================  ==============================================

Generated games (default): each (part, task type) is one cached :func:`ensure_games` call, so
L0/L1 share their train games and L2's train games are the L0 train games of its four types.
The part name (``train``, ``test_seen``, ``test_unseen``) is part of every game's seed, so parts
never share a game; a content check drops any test game whose PDDL problem equals a train game's.

Official data: with ``data_dir=`` (or the ``ALFWORLD_DATA`` env var, when it holds games) the
games of an ALFWorld ``json_2.1.1`` folder are used instead: ``train`` -> ``train`` minus the
validation carve-out, ``validation`` -> 20% of ``train``, ``test`` -> ``valid_seen`` (L0, L2) or
``valid_unseen`` (L1). Games are collected like upstream ``AlfredTWEnv.collect_game_files``
(skip ``movable``/``Sliced`` trials, missing game files and games not marked solvable).

Validation is stratified per task type: the 20% (rounded, at least one game when a type has two
or more) with the smallest SHA-256 of ``<task-dir>/<trial>`` go to validation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from derl_gym.envs.alfworld.games import (
    TASK_TYPES,
    UNSEEN_FLOOR_PLANS,
    GeneratorConfig,
    as_generator_config,
    ensure_games,
    floor_plans_for_task,
    seen_floor_plans,
)

logger = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("L0", "L1", "L2")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Task types L2 trains on / tests on (out-of-distribution tasks).
L2_TRAIN_TASKS: tuple[str, ...] = ("pick_and_place_simple", "look_at_obj_in_light",
                                   "pick_clean_then_place_in_recep", "pick_heat_then_place_in_recep")
L2_TEST_TASKS: tuple[str, ...] = ("pick_cool_then_place_in_recep", "pick_two_obj_and_place")
VALIDATION_FRACTION = 0.2

#: Official json_2.1.1 folder used for the test split of each level.
OFFICIAL_TEST_FOLDER: dict[str, str] = {"L0": "valid_seen", "L1": "valid_unseen", "L2": "valid_seen"}


def normalize_task_types(task_types: Iterable[str | int] | str | int | None) -> tuple[str, ...]:
    """Return task-type names from names or upstream ids (1..6 as in ``alfred_tw_env.TASK_TYPES``).

    Args:
        task_types: a name, an id, an iterable of them, or ``None`` (all six types).

    Returns:
        The names in the given order without repeats (all six for ``None``).

    Raises:
        ValueError: naming an unknown entry and the valid names and ids.

    Example:
        >>> normalize_task_types([6, "pick_two_obj_and_place", 1]), len(normalize_task_types(None))
        (('pick_two_obj_and_place', 'pick_and_place_simple'), 6)
        >>> normalize_task_types(7)
        Traceback (most recent call last):
            ...
        ValueError: task type 7 is unknown; use names (...) or ids 1..6
    """
    if task_types is None:
        return TASK_TYPES
    if isinstance(task_types, (str, int)):
        task_types = [task_types]
    out: list[str] = []
    for t in task_types:
        if isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= len(TASK_TYPES):
            name = TASK_TYPES[t - 1]
        elif isinstance(t, str) and t in TASK_TYPES:
            name = t
        else:
            raise ValueError(f"task type {t!r} is unknown; use names {TASK_TYPES} or ids 1..6")
        if name not in out:
            out.append(name)
    return tuple(out)


def _check(level: str, split: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: use one of {LEVELS}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use one of {SPLITS}")


def level_task_types(level: str, split: str, task_types: Iterable[str | int] | None = None) -> tuple[str, ...]:
    """Return the task types of one level and split, after a ``task_types`` filter.

    Args:
        level: ``"L0"``, ``"L1"`` or ``"L2"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        task_types: keep only these (names or ids 1..6); ``None`` keeps all.

    Returns:
        The level's task types for the split (L2 trains on four types and tests on the other two; L0
        and L1 use all six), in :data:`TASK_TYPES` order, that pass the filter.

    Raises:
        ValueError: for an unknown level, split or task type.

    Example:
        >>> level_task_types("L2", "test")
        ('pick_cool_then_place_in_recep', 'pick_two_obj_and_place')
        >>> level_task_types("L2", "train", task_types=[1, 5]), len(level_task_types("L1", "test"))
        (('pick_and_place_simple',), 6)
    """
    _check(level, split)
    wanted = normalize_task_types(task_types)
    if level == "L2":
        base = L2_TEST_TASKS if split == "test" else L2_TRAIN_TASKS
    else:
        base = TASK_TYPES
    return tuple(t for t in base if t in wanted)


def game_task_type(path: str | os.PathLike) -> str:
    """Return the task type of a game file from its task folder's name.

    Args:
        path: a ``.../<task_type>-<Obj>-.../trial_*/game.tw-pddl`` path (the file need not exist).

    Returns:
        The part of the task folder's name before its first ``-``.

    Example:
        >>> game_task_type("train/pick_heat_then_place_in_recep-Egg-None-Fridge-5/trial_T2019_1/game.tw-pddl")
        'pick_heat_then_place_in_recep'
    """
    return Path(path).parent.parent.name.split("-", 1)[0]


def _game_key(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}"


def split_validation(paths: Sequence[Path], fraction: float = VALIDATION_FRACTION) -> tuple[list[Path], list[Path]]:
    """Split games into train and validation: a deterministic, per-task-type ``fraction`` for validation.

    Within each task type the games whose SHA-256 of ``<task-dir>/<trial>`` is smallest go to
    validation (``round(fraction * n)``, at least 1 and at most ``n - 1`` when ``n >= 2``), so the
    carve-out does not depend on the order or location of the files.

    Args:
        paths: ``game.tw-pddl`` paths (only their names are read).
        fraction: the share of each task type's games that goes to validation.

    Returns:
        ``(train, validation)``: two disjoint lists of paths, each sorted.

    Example:
        >>> games = [Path(f"pick_and_place_simple-Apple-None-Fridge-5/trial_{k}/game.tw-pddl") for k in range(10)]
        >>> games.append(Path("look_at_obj_in_light-Book-None-DeskLamp-301/trial_0/game.tw-pddl"))
        >>> train, validation = split_validation(games)
        >>> len(train), len(validation), set(train) & set(validation)   # the lone look game stays in train
        (9, 2, set())
        >>> split_validation(games[::-1]) == (train, validation)     # order does not matter
        True
    """
    by_type: dict[str, list[Path]] = {}
    for p in paths:
        by_type.setdefault(game_task_type(p), []).append(Path(p))
    val: set[Path] = set()
    for group in by_type.values():
        n = len(group)
        k = int(round(fraction * n))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        ranked = sorted(group, key=lambda p: (hashlib.sha256(_game_key(p).encode()).hexdigest(), str(p)))
        val.update(ranked[:k])
    train = sorted((Path(p) for p in paths if Path(p) not in val), key=str)
    return train, sorted(val, key=str)


# --------------------------------------------------------------------------------------
# official data
# --------------------------------------------------------------------------------------
def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """Return the official ``json_2.1.1`` folder to use, or ``None`` to generate games.

    Args:
        data_dir: the ``json_2.1.1`` folder itself or a folder containing ``json_2.1.1`` (like
            ``$ALFWORLD_DATA``); ``~`` and environment variables are expanded. Without it the
            ``ALFWORLD_DATA`` env var is used when it holds games (alfworld sets that variable to an
            empty cache folder on import, so an empty folder means "no official data").

    Returns:
        The folder holding ``train/``, ``valid_seen/`` ... or ``None``.

    Raises:
        FileNotFoundError: when ``data_dir`` is given but holds no such data.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     (Path(root) / "json_2.1.1" / "train").mkdir(parents=True)
        ...     found = resolve_data_dir(root)
        ...     found == Path(root) / "json_2.1.1", resolve_data_dir(found) == found
        (True, True)
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     resolve_data_dir(empty)
        Traceback (most recent call last):
            ...
        FileNotFoundError: data_dir=... holds no ALFWorld json_2.1.1 data ...
    """
    def find(root: Path) -> Path | None:
        for cand in (root, root / "json_2.1.1"):
            if (cand / "train").is_dir() or (cand / "valid_seen").is_dir():
                return cand
        return None

    if data_dir is not None:
        root = Path(os.path.expandvars(os.path.expanduser(str(data_dir))))
        found = find(root)
        if found is None:
            raise FileNotFoundError(f"data_dir={str(data_dir)!r} holds no ALFWorld json_2.1.1 data "
                                    "(expected train/ valid_seen/ valid_unseen/ folders, directly or "
                                    "under json_2.1.1/); pass the right folder or data_dir=None to "
                                    "generate games")
        return found
    env = os.environ.get("ALFWORLD_DATA")
    if env:
        return find(Path(os.path.expanduser(env)))
    return None


def _add_example_game(folder: str, task_dir: str, trial: str, solvable: bool = True) -> None:
    """Write a fake game in the official ``json_2.1.1`` layout (``<folder>/<task dir>/<trial>/`` with a
    ``game.tw-pddl`` marked ``solvable`` and an empty ``traj_data.json``), for this module's examples."""
    game = Path(folder, task_dir, trial, "game.tw-pddl")
    game.parent.mkdir(parents=True)
    game.write_text(json.dumps({"solvable": solvable}))
    (game.parent / "traj_data.json").write_text("{}")


def collect_official_games(folder: str | os.PathLike, task_types: Iterable[str] | None = None) -> list[Path]:
    """Return the playable ``game.tw-pddl`` files under an official ALFWorld split folder.

    Same filters as upstream ``AlfredTWEnv.collect_game_files``: no ``movable``/``Sliced`` trials, the
    game file must exist and be marked ``"solvable": true`` (an unreadable one is skipped with a
    warning); the task type is read from the task folder name.

    Args:
        folder: a split folder such as ``json_2.1.1/train`` (``<task dir>/<trial>/traj_data.json``).
        task_types: keep only these task types; ``None`` keeps all.

    Returns:
        The game paths, sorted.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as train:
        ...     _add_example_game(train, "pick_and_place_simple-Apple-None-Fridge-5", "trial_1")
        ...     _add_example_game(train, "pick_and_place_simple-Apple-None-Fridge-5", "trial_2", solvable=False)
        ...     _add_example_game(train, "pick_and_place_simple-AppleSliced-None-Fridge-5", "trial_1")
        ...     _add_example_game(train, "look_at_obj_in_light-Book-None-DeskLamp-301", "trial_1")
        ...     games = collect_official_games(train)
        ...     looks = collect_official_games(train, task_types=["look_at_obj_in_light"])
        >>> [game.parent.name for game in games], [game.parent.parent.name for game in looks]
        (['trial_1', 'trial_1'], ['look_at_obj_in_light-Book-None-DeskLamp-301'])
    """
    wanted = set(normalize_task_types(task_types))
    out: list[Path] = []
    for traj in sorted(Path(folder).glob("*/*/traj_data.json")):
        root = traj.parent
        if "movable" in str(root) or "Sliced" in str(root):
            continue
        if game_task_type(root / "game.tw-pddl") not in wanted:
            continue
        game = root / "game.tw-pddl"
        if not game.is_file():
            continue
        try:
            data = json.loads(game.read_text())
        except (OSError, ValueError):
            logger.warning("skipping unreadable game file %s", game)
            continue
        if not data.get("solvable"):
            continue
        out.append(game)
    return out


def _official_split(root: Path, level: str, split: str, types: tuple[str, ...]) -> list[Path]:
    if split == "test":
        return collect_official_games(root / OFFICIAL_TEST_FOLDER[level], types)
    train, val = split_validation(collect_official_games(root / "train", types))
    return train if split == "train" else val


# --------------------------------------------------------------------------------------
# generated data
# --------------------------------------------------------------------------------------
def _part_config(cfg: GeneratorConfig, part: str, task_type: str) -> GeneratorConfig | None:
    """Returns the generator config of one (part, task type), or None if no floor plan fits."""
    pool = cfg.floor_plans
    if part == "test_unseen":
        plans = tuple(f for f in (pool or ()) if f in UNSEEN_FLOOR_PLANS) or UNSEEN_FLOOR_PLANS
        n = cfg.test_games_per_task
    else:
        plans = tuple(f for f in pool if f not in UNSEEN_FLOOR_PLANS) if pool else seen_floor_plans()
        n = cfg.games_per_task if part == "train" else cfg.test_games_per_task
    if n is None:
        n = max(1, cfg.games_per_task // 2)
    usable = floor_plans_for_task(task_type, tuple(plans))
    if not usable:
        logger.warning("no floor plan of %s can host %s; the %s split has no such games", plans,
                       task_type, part)
        return None
    return cfg.replace(task_types=(task_type,), floor_plans=usable, games_per_task=n, split=part,
                       test_games_per_task=None)


def _generated_split(cfg: GeneratorConfig, level: str, split: str, types: tuple[str, ...],
                     cache_dir: str | os.PathLike | None) -> list[Path]:
    def part_games(part: str) -> list[Path]:
        out: list[Path] = []
        for t in types:
            pc = _part_config(cfg, part, t)
            if pc is not None and pc.games_per_task > 0:
                out.extend(ensure_games(pc, cache_dir))
        return out

    if split in ("train", "validation"):
        train, val = split_validation(part_games("train"))
        return train if split == "train" else val
    test = part_games("test_unseen" if level == "L1" else "test_seen")
    # content check: a test game must not repeat a training game (it cannot by seeding; cheap)
    train_types = level_task_types(level, "train")
    if set(types) & set(train_types):
        train_problems = set()
        for t in set(types) & set(train_types):
            pc = _part_config(cfg, "train", t)
            if pc is not None and pc.games_per_task > 0:
                for p in ensure_games(pc, cache_dir):
                    train_problems.add(_problem_digest(p))
        kept = [p for p in test if _problem_digest(p) not in train_problems]
        if len(kept) != len(test):
            logger.warning("dropped %d test games that repeat training games", len(test) - len(kept))
        test = kept
    return sorted(test, key=str)


def _problem_digest(path: Path) -> str:
    pddl = path.parent / "initial_state.pddl"
    text = pddl.read_text() if pddl.is_file() else json.loads(path.read_text())["pddl_problem"]
    body = text.split("\n", 1)[1] if "\n" in text else text  # ignore the problem name line
    return hashlib.sha256(body.encode()).hexdigest()


def get_split_games(level: str = "L0", split: str = "train",
                    task_types: Iterable[str | int] | str | None = None,
                    generator: GeneratorConfig | Mapping[str, Any] | str | None = None,
                    data_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the ``game.tw-pddl`` paths of one ALFWorld level and split.

    Args:
        level: ``"L0"`` seen floor plans; ``"L1"`` test on ALFRED's unseen floor plans;
            ``"L2"`` train on pick/look/clean/heat, test on cool/pick-two.
        split: ``"train"``, ``"validation"`` (deterministic 20% of the level's train games,
            disjoint from ``"train"``) or ``"test"``.
        task_types: keep only these task types (names or upstream ids 1..6); ``None`` = all.
        generator: knobs of generated games: a :class:`GeneratorConfig`, a dict of its fields
            (optionally ``{"preset": "tiny", ...}``), a preset name (``"tiny"``, ``"small"``,
            ``"full"``) or ``None`` (defaults). ``games_per_task`` sizes train+validation per
            task type, ``test_games_per_task`` the test split. Its ``task_types`` further
            restrict the generated splits (like ``task_types=``); its ``floor_plans`` restrict
            the seen pool (unseen ones listed there are used for L1's test).
        data_dir: an official ALFWorld ``json_2.1.1`` folder (or ``$ALFWORLD_DATA``) to use
            instead of generated games; see the module docstring for the mapping.
        cache_dir: where generated games are cached (default ``$DERL_GYM_CACHE/alfworld`` or
            ``~/.cache/derl_gym/alfworld``).

    Returns:
        The paths, sorted and deterministic; an empty list means the filter left no task type.

    Raises:
        ValueError: for an unknown level, split or task type.
        FileNotFoundError: when ``data_dir`` holds no official data.

    Example:
        Generated games (the tiny preset, generated on first use and then cached, as in
        :class:`~derl_gym.envs.alfworld.env.ALFWorldEnv`'s example):

        >>> train = get_split_games("L0", "train", generator="tiny")
        >>> validation = get_split_games("L0", "validation", generator="tiny")
        >>> len(train), len(validation), set(train) & set(validation), train[0].name
        (24, 6, set(), 'game.tw-pddl')

        An official ``json_2.1.1`` folder (here a fake one: the files only need the right layout):

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for k in range(5):
        ...         _add_example_game(f"{root}/json_2.1.1/train", "pick_and_place_simple-Apple-None-Fridge-5", f"trial_{k}")
        ...     _add_example_game(f"{root}/json_2.1.1/valid_seen", "pick_and_place_simple-Egg-None-Fridge-5", "trial_0")
        ...     sizes = {split: len(get_split_games("L0", split, data_dir=root)) for split in ("train", "validation", "test")}
        ...     no_type_left = get_split_games("L2", "test", task_types=[1], data_dir=root)
        >>> sizes, no_type_left
        ({'train': 4, 'validation': 1, 'test': 1}, [])
    """
    _check(level, split)
    types = level_task_types(level, split, task_types)
    if not types:
        return []
    root = resolve_data_dir(data_dir)
    if root is not None:
        return _official_split(root, level, split, types)
    cfg = as_generator_config(generator)
    types = tuple(t for t in types if t in cfg.task_types)
    if not types:
        return []
    return _generated_split(cfg, level, split, types, cache_dir)


def describe_splits() -> str:
    """Return a markdown description of the levels and splits (this module's docstring).

    Returns:
        The text, with the table of levels L0, L1, L2 and their train / validation / test games.

    Example:
        >>> text = describe_splits()
        >>> text.splitlines()[0]
        'ALFWorld splits as in DERL / RLVMR: levels L0, L1, L2 with train / validation / test.'
        >>> "valid_unseen" in text
        True
    """
    return __doc__ or ""


__all__ = ["LEVELS", "SPLITS", "L2_TRAIN_TASKS", "L2_TEST_TASKS", "VALIDATION_FRACTION",
           "get_split_games", "split_validation", "normalize_task_types", "level_task_types",
           "resolve_data_dir", "collect_official_games", "game_task_type", "describe_splits"]
