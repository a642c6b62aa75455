"""Samples one game's layout on a floor plan: receptacles, task objects, distractors and the agent's start."""

from __future__ import annotations

import random
from dataclasses import dataclass

from derl_gym.envs.alfworld.scenes import (
    LAMP_HOLDERS,
    TOOL_RECEPTACLE,
    Receptacle,
    Scene,
    can_hold,
    format_coord,
    location_name,
    task_options,
)

__all__ = ["PlacedObject", "sample_layout", "unique_locations"]


@dataclass
class PlacedObject:
    """An object placed in a sampled game: its ALFRED id, its type and the receptacle it starts in/on.

    Example:
        >>> import random
        >>> from derl_gym.envs.alfworld.game_sampling import sample_layout
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> _, _, objects, _ = sample_layout("pick_and_place_simple", load_scene(1), random.Random(0), 1, 1)
        >>> [(o.type, o.recep.type) for o in objects]
        [('Spoon', 'Drawer'), ('Cup', 'CounterTop')]
    """

    id: str
    type: str
    recep: Receptacle


def sample_layout(task_type: str, scene: Scene, rng: random.Random, num_receptacles: int | None,
                  num_distractors: int) -> tuple[dict[str, str], list[Receptacle], list[PlacedObject],
                                                 tuple[float, ...]]:
    """Returns (pddl_params, receptacles, objects, agent_pose) for one sampled game.

    Example:
        >>> import random
        >>> from derl_gym.envs.alfworld.game_sampling import sample_layout
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> params, receps, objects, pose = sample_layout("pick_and_place_simple", load_scene(1), random.Random(0),
        ...                                               num_receptacles=1, num_distractors=1)
        >>> params["object_target"], params["parent_target"], [r.type for r in receps]
        ('Spoon', 'CounterTop', ['Cabinet', 'CounterTop', 'Drawer'])
    """
    options = task_options(task_type, scene)
    if not options:
        raise ValueError(f"floor plan {scene.floor_plan} cannot host task {task_type!r}; use "
                         f"floor_plans_for_task({task_type!r}) to pick one that can")
    obj_type, goal_type, toggle = options[rng.randrange(len(options))]
    by_type: dict[str, list[Receptacle]] = {}
    for r in scene.receptacles:
        by_type.setdefault(r.type, []).append(r)

    required: list[Receptacle] = []

    def need(r: Receptacle) -> None:
        if r not in required:
            required.append(r)

    if goal_type:
        need(rng.choice(by_type[goal_type]))
    tool = TOOL_RECEPTACLE.get(task_type)
    if tool:
        need(rng.choice(by_type[tool]))
    objects: list[PlacedObject] = []
    lamp_recep = None
    if toggle:
        holders = [r for r in scene.receptacles if r.type in LAMP_HOLDERS[toggle]]
        lamp_recep = rng.choice(holders)
        need(lamp_recep)
    # start receptacle(s) of the task object(s): never of the goal type (else won at reset)
    starts = [r for r in scene.receptacles if can_hold(r.type, obj_type) and r.type != goal_type]
    n_targets = 2 if task_type == "pick_two_obj_and_place" else 1
    target_receps = [rng.choice(starts) for _ in range(n_targets)]
    for r in target_receps:
        need(r)
    others = [r for r in scene.receptacles if r not in required]
    rng.shuffle(others)
    extra = others if num_receptacles is None else others[:num_receptacles]
    receps = sorted(required + extra, key=lambda r: r.id)

    used_ids: set[str] = {r.id for r in scene.receptacles}

    def new_obj(otype: str, recep: Receptacle) -> PlacedObject:
        while True:
            parts = recep.id.split("|")
            x0, y0, z0 = (float(parts[1]), float(parts[2]), float(parts[3]))
            oid = (f"{otype}|{format_coord(x0 + rng.uniform(-0.4, 0.4))}|"
                   f"{format_coord(y0 + rng.uniform(0.0, 0.3))}|{format_coord(z0 + rng.uniform(-0.4, 0.4))}")
            if oid not in used_ids:
                used_ids.add(oid)
                return PlacedObject(oid, otype, recep)

    for r in target_receps:
        objects.append(new_obj(obj_type, r))
    if toggle and lamp_recep is not None:
        objects.append(new_obj(toggle, lamp_recep))
    # distractors: other object types, only where allowed, never making the goal true
    pool = [t for t in scene.object_types if t != obj_type]
    for _ in range(num_distractors):
        for _try in range(20):
            if not pool:
                break
            otype = rng.choice(pool)
            holders = [r for r in receps if can_hold(r.type, otype)]
            if holders:
                objects.append(new_obj(otype, rng.choice(holders)))
                break
    # agent starts in the middle of the room: a reachable point that is no receptacle's location
    taken = {r.location for r in receps}
    for _try in range(100):
        x, z = scene.free_points[rng.randrange(len(scene.free_points))]
        pose = (x, z, 90.0 * rng.randrange(4), 30.0)
        if location_name(pose) not in taken:
            break
    params = {"object_target": obj_type, "parent_target": goal_type, "toggle_target": toggle,
              "mrecep_target": "", "object_sliced": False}
    return params, receps, objects, pose


def unique_locations(receps: list[Receptacle], scene: Scene, rng: random.Random) -> dict[str, str]:
    """Returns receptacle id -> location name, giving receptacles that share a pose their own.

    Example:
        >>> import random
        >>> from derl_gym.envs.alfworld.game_sampling import sample_layout, unique_locations
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> scene = load_scene(1)
        >>> _, receps, _, _ = sample_layout("pick_and_place_simple", scene, random.Random(0), 4, 0)
        >>> locations = unique_locations(receps, scene, random.Random(0))
        >>> sorted(locations) == sorted(r.id for r in receps), len(set(locations.values())) == len(receps)
        (True, True)
    """
    out: dict[str, str] = {}
    used: set[str] = set()
    for r in receps:
        loc = r.location
        tries = 0
        while loc in used and tries < 200:
            x, z = scene.free_points[rng.randrange(len(scene.free_points))]
            loc = location_name((x, z, r.pose[2], r.pose[3]))
            tries += 1
        used.add(loc)
        out[r.id] = loc
    return out
