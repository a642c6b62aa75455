"""Tests of the ALFWorld splits (derl_gym.envs.alfworld.splits)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from derl_gym.envs.alfworld import splits as S  # noqa: E402
from derl_gym.envs.alfworld.games import TASK_TYPES, UNSEEN_FLOOR_PLANS, GeneratorConfig, write_games  # noqa: E402
from derl_gym.envs.alfworld.splits import get_split_games, split_validation  # noqa: E402

GEN = {"games_per_task": 5, "test_games_per_task": 1, "num_receptacles": 1, "num_distractors": 1, "seed": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("alfworld_cache")


@pytest.fixture(scope="module")
def all_splits(cache) -> dict[tuple[str, str], list[Path]]:
    return {(lvl, sp): get_split_games(lvl, sp, generator=GEN, cache_dir=cache)
            for lvl in S.LEVELS for sp in S.SPLITS}


def _floor_plan(p: Path) -> int:
    return int(p.parent.parent.name.rsplit("-", 1)[1])


def _problem(p: Path) -> str:
    return json.loads(p.read_text())["pddl_problem"].split("\n", 1)[1]


def test_sizes_and_validation_is_20_percent_per_type(all_splits):
    for lvl in S.LEVELS:
        n_types = 4 if lvl == "L2" else 6
        train, val = all_splits[(lvl, "train")], all_splits[(lvl, "validation")]
        assert len(train) == 4 * n_types and len(val) == 1 * n_types
        assert {S.game_task_type(p) for p in val} == {S.game_task_type(p) for p in train}
        n_test_types = 2 if lvl == "L2" else 6
        assert len(all_splits[(lvl, "test")]) == GEN["test_games_per_task"] * n_test_types


def test_splits_are_disjoint_by_file_and_content(all_splits):
    for lvl in S.LEVELS:
        parts = [all_splits[(lvl, sp)] for sp in S.SPLITS]
        files = [set(map(str, p)) for p in parts]
        contents = [set(map(_problem, p)) for p in parts]
        for i in range(3):
            for j in range(i + 1, 3):
                assert not files[i] & files[j], (lvl, i, j)
                assert not contents[i] & contents[j], (lvl, i, j)


def test_level_definitions(all_splits):
    seen_train = all_splits[("L0", "train")]
    assert all_splits[("L1", "train")] == seen_train  # L0 and L1 share training games
    assert all(_floor_plan(p) not in UNSEEN_FLOOR_PLANS for p in seen_train)
    assert all(_floor_plan(p) not in UNSEEN_FLOOR_PLANS for p in all_splits[("L0", "test")])
    assert all(_floor_plan(p) in UNSEEN_FLOOR_PLANS for p in all_splits[("L1", "test")])
    assert {S.game_task_type(p) for p in all_splits[("L0", "test")]} == set(TASK_TYPES)
    assert {S.game_task_type(p) for p in all_splits[("L1", "test")]} == set(TASK_TYPES)
    assert {S.game_task_type(p) for p in all_splits[("L2", "train")]} == set(S.L2_TRAIN_TASKS)
    assert {S.game_task_type(p) for p in all_splits[("L2", "validation")]} == set(S.L2_TRAIN_TASKS)
    assert {S.game_task_type(p) for p in all_splits[("L2", "test")]} == set(S.L2_TEST_TASKS)
    # L2's training games are the L0 training games of its four task types
    assert all_splits[("L2", "train")] == [p for p in seen_train if S.game_task_type(p) in S.L2_TRAIN_TASKS]


def test_deterministic_and_cached(all_splits, cache, monkeypatch):
    from derl_gym.envs.alfworld import game_cache

    def boom(*a, **k):
        raise AssertionError("a second call must not generate")

    monkeypatch.setattr(game_cache, "write_games", boom)  # the cache generates through it
    for key, paths in all_splits.items():
        assert get_split_games(*key, generator=GeneratorConfig(**GEN), cache_dir=cache) == paths


def test_task_type_filter(all_splits, cache):
    picks = get_split_games("L0", "train", task_types=["pick_and_place_simple", 6], generator=GEN, cache_dir=cache)
    assert picks == [p for p in all_splits[("L0", "train")]
                     if S.game_task_type(p) in ("pick_and_place_simple", "pick_two_obj_and_place")]
    assert get_split_games("L2", "train", task_types=["pick_two_obj_and_place"], generator=GEN, cache_dir=cache) == []
    with pytest.raises(ValueError, match="unknown"):
        get_split_games("L0", "train", task_types=["fly"], generator=GEN, cache_dir=cache)
    with pytest.raises(ValueError, match="level"):
        get_split_games("L9", "train")
    with pytest.raises(ValueError, match="split"):
        get_split_games("L0", "dev")


def test_split_validation_is_order_independent():
    paths = [Path(f"/x/{t}-Apple-None-Fridge-{i}/trial_{i}/game.tw-pddl") for t in TASK_TYPES[:2] for i in range(50)]
    train, val = split_validation(paths)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    shuffled = list(paths)
    random.Random(1).shuffle(shuffled)
    moved = [Path("/elsewhere") / p.relative_to("/x") for p in shuffled]
    _, val2 = split_validation(moved)
    assert sorted(p.relative_to("/elsewhere") for p in val2) == sorted(p.relative_to("/x") for p in val)


def test_official_data_dir_mapping(tmp_path, all_splits, monkeypatch):
    root = tmp_path / "json_2.1.1"
    sources = {"train": all_splits[("L0", "train")] + all_splits[("L0", "validation")],
               "valid_seen": all_splits[("L0", "test")], "valid_unseen": all_splits[("L1", "test")]}
    for folder, paths in sources.items():
        for p in paths:
            dst = root / folder / p.parent.parent.name / p.parent.name
            shutil.copytree(p.parent, dst)
    # add what upstream skips: a movable-receptacle trial and an unsolvable game
    skip = root / "train" / "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-7" / "trial_x"
    shutil.copytree(all_splits[("L0", "train")][0].parent, skip)
    bad_src = all_splits[("L0", "train")][1].parent
    bad = root / "train" / (bad_src.parent.name + "b") / "trial_y"
    shutil.copytree(bad_src, bad)
    data = json.loads((bad / "game.tw-pddl").read_text())
    data["solvable"] = False
    (bad / "game.tw-pddl").write_text(json.dumps(data))

    n_train = len(all_splits[("L0", "train")]) + len(all_splits[("L0", "validation")])
    for data_dir in (root, tmp_path):  # the json_2.1.1 folder or its parent
        train = get_split_games("L0", "train", data_dir=data_dir)
        val = get_split_games("L0", "validation", data_dir=data_dir)
        assert len(train) + len(val) == n_train and not set(train) & set(val)
        assert all("movable" not in str(p) for p in train + val)
    assert {p.parent.name for p in get_split_games("L0", "test", data_dir=root)} == \
        {p.parent.name for p in all_splits[("L0", "test")]}
    assert {p.parent.name for p in get_split_games("L1", "test", data_dir=root)} == \
        {p.parent.name for p in all_splits[("L1", "test")]}
    assert {S.game_task_type(p) for p in get_split_games("L2", "test", data_dir=root)} == set(S.L2_TEST_TASKS)
    # $ALFWORLD_DATA is used when it holds data
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    assert get_split_games("L1", "test") == get_split_games("L1", "test", data_dir=root)
    with pytest.raises(FileNotFoundError, match="json_2.1.1"):
        get_split_games("L0", "train", data_dir=tmp_path / "nothing")


def test_tiny_generator_preset_works(cache):
    gen = {"preset": "tiny", "games_per_task": 5, "test_games_per_task": 1}
    train = get_split_games("L0", "train", generator=gen, cache_dir=cache)
    val = get_split_games("L0", "validation", generator=gen, cache_dir=cache)
    test = get_split_games("L1", "test", task_types=["pick_and_place_simple"], generator=gen, cache_dir=cache)
    # the preset's task_types (pick_and_place_simple only) restrict the generated splits
    assert len(train) == 4 and len(val) == 1 and len(test) == 1
    assert {S.game_task_type(p) for p in train + val + test} == {"pick_and_place_simple"}
    assert get_split_games("L2", "test", generator=gen, cache_dir=cache) == []


def test_cli_split_prints_the_split(all_splits, cache, capsys):
    from derl_gym.envs.alfworld.__main__ import main

    args = ["split", "--level", "L2", "--split", "test", "--cache-dir", str(cache)]
    for key in ("games_per_task", "test_games_per_task", "num_receptacles", "num_distractors", "seed"):
        args += ["--" + key.replace("_", "-"), str(GEN[key])]
    assert main(args) == 0
    printed = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == all_splits[("L2", "test")]
