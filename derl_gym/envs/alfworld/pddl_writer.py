"""Writes a sampled game's text: the PDDL problem and the grammar with its task sentence."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from derl_gym.envs.alfworld.game_sampling import PlacedObject
from derl_gym.envs.alfworld.scenes import LAMP_HOLDERS, Receptacle, alfworld_constants, can_hold

__all__ = ["alfworld_logic", "mangle", "build_pddl_problem", "task_grammar"]


@lru_cache(maxsize=1)
def alfworld_logic() -> tuple[str, str]:
    """Returns (pddl_domain, grammar) text shipped with alfworld.

    Example:
        >>> from derl_gym.envs.alfworld.pddl_writer import alfworld_logic
        >>> domain, grammar = alfworld_logic()
        >>> "(domain alfred)" in domain, "UNKNOWN GOAL" in grammar
        (True, True)
    """
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def mangle(name: str) -> str:
    """Returns an ALFRED object id in PDDL-safe form (``|`` -> ``_bar_``, ``-`` -> ``_minus_``...).

    Same mapping as alfworld's ``PlannedGameState.fix_pddl_str_chars`` (without the ``#``
    rule, which is only for goal templates).

    Example:
        >>> from derl_gym.envs.alfworld.pddl_writer import mangle
        >>> mangle("Apple|+01.00|-00.50|+02.00")
        'Apple_bar__plus_01_dot_00_bar__minus_00_dot_50_bar__plus_02_dot_00'
    """
    from alfworld.gen.utils.py_util import multireplace

    return multireplace(name, {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_",
                               ",": "_comma_"})


def build_pddl_problem(task_type: str, params: Mapping[str, Any], receps: Sequence[Receptacle],
                       objects: Sequence[PlacedObject], rec_locs: Mapping[str, str], agent_loc: str,
                       problem_name: str) -> str:
    """Returns the PDDL problem text in the layout of ALFWorld's ``initial_state.pddl``.

    Example:
        >>> import random
        >>> from derl_gym.envs.alfworld.game_sampling import sample_layout, unique_locations
        >>> from derl_gym.envs.alfworld.pddl_writer import build_pddl_problem
        >>> from derl_gym.envs.alfworld.scenes import load_scene, location_name
        >>> scene, rng = load_scene(1), random.Random(0)
        >>> params, receps, objects, pose = sample_layout("pick_and_place_simple", scene, rng, 1, 1)
        >>> problem = build_pddl_problem("pick_and_place_simple", params, receps, objects,
        ...                              unique_locations(receps, scene, rng), location_name(pose), "demo")
        >>> problem.splitlines()[:2], "(:goal" in problem, "(pickupable Spoon_bar_" in problem
        (['(define (problem plan_demo)', '(:domain alfred)'], True, True)
    """
    import alfworld.gen.goal_library as glib
    from alfworld.gen.utils.py_util import multireplace

    c = alfworld_constants()
    receptacle_types = sorted(set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES))
    object_types = sorted(set(c.OBJECTS_SET) - set(receptacle_types))
    m = mangle
    locs = sorted(set(rec_locs.values()) | {agent_loc})

    decl = ["agent1 - agent"]
    decl += [f"{t}Type - otype" for t in object_types]
    decl += [f"{t}Type - rtype" for t in receptacle_types]
    decl += [f"        {m(o.id)} - object" for o in sorted(objects, key=lambda o: o.id)]
    decl += [f"        {m(r.id)} - receptacle" for r in receps]
    decl += [f"        {m(loc)} - location" for loc in locs]

    init: list[str] = []
    for r in receps:
        init.append(f"(receptacleType {m(r.id)} {r.type}Type)")
    for o in objects:
        init.append(f"(objectType {m(o.id)} {o.type}Type)")
    otypes_present = sorted({o.type for o in objects})
    for rt in sorted({r.type for r in receps}):
        for ot in otypes_present:
            if can_hold(rt, ot):
                init.append(f"(canContain {rt}Type {ot}Type)")
    lamp_types = set(LAMP_HOLDERS)
    for o in objects:
        if o.type not in lamp_types:
            init.append(f"(pickupable {m(o.id)})")
    for o in objects:
        if o.type in c.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {m(o.id)})")
    for r in receps:
        if r.type in c.OPENABLE_CLASS_SET:
            init.append(f"(openable {m(r.id)})")
    init.append(f"(atLocation agent1 {m(agent_loc)})")
    for prop, pred in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
        init += [f"({pred} {m(o.id)})" for o in objects if o.type in c.VAL_ACTION_OBJECTS[prop]]
    toggle = params.get("toggle_target") or ""
    init += [f"(toggleable {m(o.id)})" for o in objects if toggle and o.type == toggle]
    init += [f"(sliceable {m(o.id)})" for o in objects if o.type in c.VAL_ACTION_OBJECTS["Sliceable"]]
    for o in objects:
        init.append(f"(inReceptacle {m(o.id)} {m(o.recep.id)})")
    for r in receps:
        init.append(f"(receptacleAtLocation {m(r.id)} {m(rec_locs[r.id])})")
    for o in objects:
        init.append(f"(objectAtLocation {m(o.id)} {m(rec_locs[o.recep.id])})")

    goal = glib.gdict[task_type]["pddl"].format(
        obj=params["object_target"], recep=params.get("parent_target") or "",
        toggle=toggle, mrecep=params.get("mrecep_target") or "")
    goal = multireplace(goal, {"#": "-"})  # alfworld's goal templates write "?o # object"

    lines = [f"(define (problem plan_{problem_name})", "(:domain alfred)", "(:objects"]
    lines += decl
    lines += ["        )", "    ", "", "(:init", "", ""]
    lines += ["        " + f for f in init]
    lines += ["        )", "    ", goal.rstrip(), ""]
    return "\n".join(lines)


def task_grammar(traj_data: Mapping[str, Any], grammar: str, seed: int) -> tuple[str, str]:
    """Returns (grammar with the task sentence, task sentence), the sentence drawn from alfworld's templates.

    The same result as alfworld's ``add_task_to_grammar`` with templated descriptions after
    ``random.seed(seed)`` (a template of ``goal_library.gdict[task type (+ "_slice")]`` filled with the
    target names), drawn here from a ``random.Random(seed)`` of its own: Python's global ``random``
    is neither drawn from nor reseeded.

    Example:
        >>> from derl_gym.envs.alfworld.pddl_writer import alfworld_logic, task_grammar
        >>> params = {"object_target": "Apple", "parent_target": "Fridge", "toggle_target": "",
        ...           "mrecep_target": "", "object_sliced": False}
        >>> grammar, sentence = task_grammar({"task_type": "pick_and_place_simple", "pddl_params": params},
        ...                                  alfworld_logic()[1], seed=0)
        >>> "apple" in sentence and "fridge" in sentence, sentence in grammar, "UNKNOWN GOAL" in grammar
        (True, True, False)
    """
    import alfworld.gen.goal_library as glib

    params = traj_data["pddl_params"]
    goal = str(traj_data["task_type"]) + ("_slice" if params["object_sliced"] else "")
    template = random.Random(seed).choice(glib.gdict[goal]["templates"])
    sentence = template.format(obj=params["object_target"].lower(), recep=params["parent_target"].lower(),
                               toggle=params["toggle_target"].lower(), mrecep=params["mrecep_target"].lower())
    new_grammar = grammar.replace("UNKNOWN GOAL", sentence)
    marker = "Your task is to: "
    start = new_grammar.index(marker) + len(marker)
    end = new_grammar.index('."', start)
    return new_grammar, new_grammar[start:end]
