"""Tests of the generator's building blocks: scenes, layout sampling and the task grammar (no planner)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("alfworld")

from derl_gym.envs.alfworld.game_config import TASK_TYPES  # noqa: E402
from derl_gym.envs.alfworld.game_sampling import sample_layout, unique_locations  # noqa: E402
from derl_gym.envs.alfworld.pddl_writer import alfworld_logic, task_grammar  # noqa: E402
from derl_gym.envs.alfworld.scenes import (  # noqa: E402
    LAMP_HOLDERS,
    TOOL_RECEPTACLE,
    Receptacle,
    can_hold,
    floor_plans_for_task,
    format_coord,
    load_scene,
    location_name,
    task_options,
)


def test_location_name_rounds_to_the_grid_and_wraps_the_rotation():
    assert location_name((1.0, -0.5, 90.0, 30.0)) == "loc|4|-2|1|30"
    assert location_name((1.1, 0.0, 360.0, 0.0)) == location_name((1.0, 0.0, 0.0, 0.0))
    assert Receptacle("Desk|+00.00|+00.00|+00.00", "Desk", (0.25, 0.5, 270.0, 30.0)).location == "loc|1|2|3|30"


def test_format_coord_is_signed_fixed_width():
    assert [format_coord(v) for v in (1.25, -0.5, 12.0)] == ["+01.25", "-00.50", "+12.00"]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_task_options_respect_the_receptacle_rules(task_type):
    scene = load_scene(floor_plans_for_task(task_type)[0])
    options = task_options(task_type, scene)
    assert options
    for obj, goal, toggle in options:
        if task_type == "look_at_obj_in_light":
            assert goal == "" and toggle in LAMP_HOLDERS
        else:
            assert can_hold(goal, obj) and goal != TOOL_RECEPTACLE.get(task_type)


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize("seed", [0, 7])
def test_sample_layout_is_deterministic_and_places_objects_where_allowed(task_type, seed):
    scene = load_scene(floor_plans_for_task(task_type)[seed % 2])
    params, receps, objects, pose = sample_layout(task_type, scene, random.Random(seed), 2, 3)
    again = sample_layout(task_type, scene, random.Random(seed), 2, 3)
    assert (params, receps, objects, pose) == again
    assert len({o.id for o in objects}) == len(objects)
    for o in objects:
        assert o.recep in receps
        if o.type in LAMP_HOLDERS:
            assert o.recep.type in LAMP_HOLDERS[o.type]
        else:
            assert can_hold(o.recep.type, o.type), (o.type, o.recep.type)
    targets = [o for o in objects if o.type == params["object_target"]]
    assert len(targets) == (2 if task_type == "pick_two_obj_and_place" else 1)
    assert all(o.recep.type != params["parent_target"] for o in targets)  # not won at reset
    locations = unique_locations(receps, scene, random.Random(seed))
    assert len(set(locations.values())) == len(receps)


def test_task_grammar_fills_the_sentence_without_touching_global_random():
    _, grammar = alfworld_logic()
    traj = {"task_type": "pick_heat_then_place_in_recep",
            "pddl_params": {"object_target": "Apple", "parent_target": "CounterTop", "toggle_target": "",
                            "mrecep_target": "", "object_sliced": False}}
    state = random.getstate()
    full, sentence = task_grammar(traj, grammar, seed=3)
    assert random.getstate() == state
    assert "UNKNOWN GOAL" in grammar and "UNKNOWN GOAL" not in full
    assert "apple" in sentence and "countertop" in sentence and sentence in full
    assert task_grammar(traj, grammar, seed=3) == (full, sentence)
    assert len({task_grammar(traj, grammar, seed=s)[1] for s in range(20)}) > 1  # templates vary with the seed
