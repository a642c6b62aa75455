"""Tests of the offline ALFWorld game generator (derl_gym.envs.alfworld.games)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from derl_gym.envs.alfworld import game_cache, scenes  # noqa: E402
from derl_gym.envs.alfworld import games as G  # noqa: E402
from derl_gym.envs.alfworld.games import (  # noqa: E402
    TASK_TYPES,
    GeneratorConfig,
    ensure_games,
    generate_game,
    write_games,
)

KNOBS = {"num_receptacles": 2, "num_distractors": 2}


def _play(game: dict, commands: list[str]) -> tuple[dict, dict]:
    """Plays ``commands`` in a fresh upstream env (AlfredDemangler(PddlEnv)); returns (reset, last) states."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs import PddlEnv

    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(won=True, admissible_commands=True)), shuffle=False)
    env.load(game)
    first = state = env.reset()
    for cmd in commands:
        assert cmd in state["admissible_commands"], (cmd, state["admissible_commands"])
        state, _, _ = env.step(cmd)
    return first, state


def _facts(problem: str, pred: str) -> list[tuple[str, ...]]:
    """Returns the arguments of every ``(pred ...)`` fact of the problem's :init section."""
    init = problem.split("(:init", 1)[1].split("(:goal", 1)[0]
    return [tuple(m.split()) for m in re.findall(rf"\({pred} ([^()]+)\)", init)]


@pytest.fixture(scope="module")
def six_games() -> dict[str, G.GeneratedGame]:
    t0 = time.perf_counter()
    out = {t: generate_game(t, None, seed=11, **KNOBS) for t in TASK_TYPES}
    dt = time.perf_counter() - t0
    assert dt < 30, f"generating 6 games took {dt:.1f}s"
    return out


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_every_task_type_generates_and_its_walkthrough_wins(six_games, task_type):
    import alfworld.gen.goal_library as glib

    g = six_games[task_type]
    assert g.task_type == task_type and g.walkthrough and g.game["solvable"] is True
    assert g.game["walkthrough"] == g.walkthrough == g.traj_data["walkthrough"]
    first, last = _play(g.game, g.walkthrough)
    assert not first["won"], "a generated game must not be won at reset"
    assert last["won"]
    # the task sentence is alfworld's own template filled with the pddl params
    p = g.traj_data["pddl_params"]
    allowed = [t.format(obj=p["object_target"].lower(), recep=p["parent_target"].lower(),
                        toggle=p["toggle_target"].lower(), mrecep="") for t in glib.gdict[task_type]["templates"]]
    assert g.task in allowed
    assert f"Your task is to: {g.task}." in first.feedback
    # demangled ALFWorld names ("apple 1"), never raw ids
    assert all("_bar_" not in c for c in first["admissible_commands"])
    assert any(re.fullmatch(r"go to [a-z]+ \d+", c) for c in first["admissible_commands"])


def test_state_changing_tasks_use_their_tool(six_games):
    tools = {"pick_clean_then_place_in_recep": ("clean", "sinkbasin"),
             "pick_heat_then_place_in_recep": ("heat", "microwave"),
             "pick_cool_then_place_in_recep": ("cool", "fridge"),
             "look_at_obj_in_light": ("use", "lamp")}
    for task_type, (verb, tool) in tools.items():
        wt = six_games[task_type].walkthrough
        assert any(c.startswith(verb + " ") and tool in c for c in wt), (task_type, wt)
    two = six_games["pick_two_obj_and_place"]
    assert sum(c.startswith("move ") for c in two.walkthrough) == 2


def test_generation_is_deterministic_for_a_seed():
    a = generate_game("pick_clean_then_place_in_recep", 7, seed=5, **KNOBS)
    b = generate_game("pick_clean_then_place_in_recep", 7, seed=5, **KNOBS)
    c = generate_game("pick_clean_then_place_in_recep", 7, seed=6, **KNOBS)
    assert a.pddl_problem == b.pddl_problem and a.game == b.game and a.traj_data == b.traj_data
    assert a.pddl_problem != c.pddl_problem


def test_objects_only_where_alfworld_constants_allow(six_games):
    import alfworld.gen.constants as C

    for g in six_games.values():
        prob = g.pddl_problem
        otype = {o: t[:-len("Type")] for o, t in _facts(prob, "objectType")}
        rtype = {r: t[:-len("Type")] for r, t in _facts(prob, "receptacleType")}
        placements = _facts(prob, "inReceptacle")
        assert placements
        for o, r in placements:
            if otype[o] in G.LAMP_HOLDERS:  # lamps stand on a furniture receptacle (documented)
                assert rtype[r] in G.LAMP_HOLDERS[otype[o]]
            else:
                assert otype[o] in C.VAL_RECEPTACLE_OBJECTS[rtype[r]], (otype[o], rtype[r])
        # canContain exactly mirrors VAL_RECEPTACLE_OBJECTS for the types present
        for rt, ot in _facts(prob, "canContain"):
            assert ot[:-4] in C.VAL_RECEPTACLE_OBJECTS[rt[:-4]]
        # receptacles are the floor plan's: real ids from the layout, or a type the plan lists
        layouts = scenes._layouts_dir()
        real = {G.mangle(k).lower() for k in json.loads(
            (layouts / f"FloorPlan{g.floor_plan}-openable.json").read_text())}
        listed = set(json.loads((layouts / f"FloorPlan{g.floor_plan}-objects.json").read_text()))
        for r, t in rtype.items():
            assert r.lower() in real or t in listed or t.replace("Basin", "") in listed, (r, t)
        # task objects are types of this floor plan
        assert g.traj_data["pddl_params"]["object_target"] in listed


def test_knobs_set_receptacle_and_object_counts():
    few = generate_game("pick_and_place_simple", 1, seed=3, num_receptacles=1, num_distractors=0)
    many = generate_game("pick_and_place_simple", 1, seed=3, num_receptacles=8, num_distractors=5)
    allr = generate_game("pick_and_place_simple", 1, seed=3, num_receptacles=None, num_distractors=0)
    n = lambda g, pred: len(_facts(g.pddl_problem, pred))  # noqa: E731
    # required = goal + start receptacle (they may coincide with nothing else): 2, plus the knob
    assert n(few, "receptacleType") == 3
    assert n(many, "receptacleType") == 10
    assert n(allr, "receptacleType") == len(G.load_scene(1).receptacles)
    assert n(few, "objectType") == 1
    assert n(many, "objectType") == 6


def test_generator_config_roundtrip_key_and_errors():
    cfg = GeneratorConfig(task_types=("pick_two_obj_and_place",), floor_plans=(7, 8), games_per_task=3)
    again = GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.key() == cfg.key()
    assert cfg.replace(seed=1).key() != cfg.key()
    assert len(cfg.key()) == 16 and cfg.num_games == 3
    with pytest.raises(ValueError, match="task_types"):
        GeneratorConfig(task_types=("fly",))
    with pytest.raises(ValueError, match="num_distractors"):
        GeneratorConfig(num_distractors=-1)
    with pytest.raises(TypeError, match="unknown keys"):
        GeneratorConfig.from_dict({"gamez": 1})
    tiny = G.get_generator_preset("tiny")
    assert tiny.task_types == ("pick_and_place_simple",) and tiny.num_games == 30
    assert G.as_generator_config({"preset": "tiny", "seed": 4}).seed == 4
    with pytest.raises(ValueError, match="cannot host"):
        generate_game("pick_heat_then_place_in_recep", 301, seed=0)  # a bedroom has no microwave


def test_unseen_floor_plans_ship_and_are_held_out():
    assert set(G.UNSEEN_FLOOR_PLANS) <= set(G.available_floor_plans())
    assert not set(G.UNSEEN_FLOOR_PLANS) & set(G.seen_floor_plans())
    for t in TASK_TYPES:
        assert G.floor_plans_for_task(t, G.UNSEEN_FLOOR_PLANS), t


def test_write_games_json_2_1_1_layout_loads_in_upstream_alfworld(tmp_path):
    cfg = GeneratorConfig(task_types=("pick_and_place_simple", "look_at_obj_in_light"), games_per_task=2,
                          num_receptacles=1, num_distractors=1, seed=2, split="train")
    paths = write_games(cfg, tmp_path)
    assert len(paths) == 4
    for p in paths:
        rel = p.relative_to(tmp_path).parts
        assert rel[0] == "train" and p.name == "game.tw-pddl" and rel[2].startswith("trial_")
        m = re.fullmatch(r"([a-z_]+)-([A-Za-z]+)-None-([A-Za-z]+)-(\d+)", rel[1])
        assert m, rel[1]
        traj = json.loads((p.parent / "traj_data.json").read_text())
        game = json.loads(p.read_text())
        assert set(game) >= {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        assert game["solvable"] is True and game["walkthrough"]
        assert traj["task_type"] == m.group(1)
        assert traj["pddl_params"]["object_target"] == m.group(2)
        assert m.group(3) in (traj["pddl_params"]["parent_target"], traj["pddl_params"]["toggle_target"])
        assert traj["scene"]["floor_plan"] == f"FloorPlan{m.group(4)}"
        assert set(traj["pddl_params"]) == {"object_target", "parent_target", "toggle_target",
                                            "mrecep_target", "object_sliced"}
        assert traj["turk_annotations"]["anns"][0]["task_desc"]
        # alfworld's own templating reads this traj_data (as alfworld-generate does) and the
        # game's grammar carries one of its sentences
        from alfworld.agents.utils.misc import get_templated_task_desc
        assert get_templated_task_desc(traj)
        assert f"Your task is to: {traj['derl_gym']['task']}." in game["grammar"]
        assert "UNKNOWN GOAL" not in game["grammar"]
    # upstream AlfredTWEnv's collector finds every game (it filters on task type and 'solvable')
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv
    conf = {"env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2]},
            "dataset": {"data_path": str(tmp_path / "train"), "num_train_games": -1}}
    upstream = AlfredTWEnv(conf, "train")
    assert sorted(map(str, upstream.game_files)) == sorted(map(str, paths))


def test_ensure_games_caches_and_redoes_incomplete(tmp_path, monkeypatch):
    cfg = GeneratorConfig(task_types=("pick_and_place_simple",), games_per_task=2, num_receptacles=1,
                          num_distractors=0, seed=9)
    first = ensure_games(cfg, tmp_path)
    assert len(first) == 2 and all(p.is_file() for p in first)
    assert (tmp_path / cfg.key() / G.MANIFEST).is_file()
    mtimes = [p.stat().st_mtime_ns for p in first]

    def boom(*a, **k):
        raise AssertionError("cache hit must not generate")

    monkeypatch.setattr(game_cache, "write_games", boom)  # the cache generates through it
    second = ensure_games(cfg, tmp_path)
    assert second == first and [p.stat().st_mtime_ns for p in second] == mtimes
    monkeypatch.undo()
    # a killed generation (no manifest) is redone
    (tmp_path / cfg.key() / G.MANIFEST).unlink()
    third = ensure_games(cfg, tmp_path)
    assert [p.relative_to(tmp_path) for p in third] == [p.relative_to(tmp_path) for p in first]
    assert (tmp_path / cfg.key() / G.MANIFEST).is_file()
    # the default cache root follows $DERL_GYM_CACHE
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path / "c"))
    assert G.default_cache_dir() == tmp_path / "c" / "alfworld"


def test_cli_generate(tmp_path, capsys):
    from derl_gym.envs.alfworld.__main__ import main

    assert main(["generate", "--out", str(tmp_path), "--task-types", "pick_cool_then_place_in_recep",
                 "--games-per-task", "1", "--num-receptacles", "1", "--num-distractors", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["games"] == 1
    assert len(list((tmp_path / "generated").glob("*/trial_*/game.tw-pddl"))) == 1


@pytest.mark.slow
def test_bigger_set_all_types_upstream_env_plays_walkthroughs(tmp_path):
    """Generate 5 games per type with all receptacles of the floor plan; upstream env wins each."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    cfg = GeneratorConfig(games_per_task=5, num_receptacles=None, num_distractors=6, seed=1, split="train")
    t0 = time.perf_counter()
    paths = write_games(cfg, tmp_path)
    rate = len(paths) / (time.perf_counter() - t0)
    assert len(paths) == 30 and rate > 0.2
    conf = {"env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6],
                    "domain_randomization": False, "expert_type": "planner"},
            "dataset": {"data_path": str(tmp_path / "train"), "num_train_games": -1},
            "general": {"training_method": "dqn"}, "rl": {"training": {"max_nb_steps_per_episode": 100}}}
    up = AlfredTWEnv(conf, "train")
    env = up.init_env(batch_size=1)
    for _ in range(len(paths)):
        obs, info = env.reset()
        walkthrough = json.loads(Path(info["extra.gamefile"][0]).read_text())["walkthrough"]
        for cmd in walkthrough:
            obs, _, dones, info = env.step([cmd])
        assert info["won"][0], info["extra.gamefile"][0]
    env.close()


def test_parallel_ensure_games_share_one_folder(tmp_path):
    """Two processes asking for the same uncached config get the same files; stale temp dirs go."""
    import concurrent.futures as cf
    import multiprocessing as mp

    cfg = GeneratorConfig(task_types=("pick_and_place_simple",), games_per_task=2, num_receptacles=0,
                          num_distractors=0, seed=21)
    stale = tmp_path / f".{cfg.key()}-killed"
    stale.mkdir()  # what a killed generation leaves behind
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(ensure_games, [cfg, cfg], [tmp_path, tmp_path]))
    assert results[0] == results[1] and len(results[0]) == 2
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [cfg.key()]


def test_generation_does_not_depend_on_the_process_hash_seed():
    import os
    import subprocess
    import sys

    code = ("from derl_gym.envs.alfworld.games import generate_game as g;"
            "import hashlib,sys;x=g('look_at_obj_in_light',None,seed=4,num_receptacles=1,num_distractors=2,"
            "verify=False);sys.stdout.write(hashlib.sha256((x.pddl_problem+x.game['grammar']).encode()).hexdigest())")
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout)
    here = generate_game("look_at_obj_in_light", None, seed=4, num_receptacles=1, num_distractors=2, verify=False)
    import hashlib
    assert outs == {hashlib.sha256((here.pddl_problem + here.game["grammar"]).encode()).hexdigest()}


def test_parallel_generation_gives_the_same_games(tmp_path):
    cfg = GeneratorConfig(task_types=("pick_heat_then_place_in_recep", "pick_two_obj_and_place"), games_per_task=2,
                          num_receptacles=1, num_distractors=1, seed=8)
    serial = write_games(cfg, tmp_path / "a", workers=1)
    parallel = write_games(cfg, tmp_path / "b", workers=2)
    assert [p.relative_to(tmp_path / "a") for p in serial] == [p.relative_to(tmp_path / "b") for p in parallel]
    assert [p.read_text() for p in serial] == [p.read_text() for p in parallel]
