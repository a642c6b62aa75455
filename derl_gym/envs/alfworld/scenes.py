"""What each ALFWorld floor plan offers the generator, read from the alfworld package's layout files."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Sequence

import numpy as np

from derl_gym.envs.alfworld.game_config import TASK_TYPES, UNSEEN_FLOOR_PLANS

__all__ = ["TOOL_RECEPTACLE", "TASK_OBJECT_PROPERTY", "LAMP_HOLDERS", "alfworld_constants",
           "available_floor_plans", "seen_floor_plans", "format_coord", "location_name", "Receptacle", "Scene",
           "load_scene", "can_hold", "task_options", "floor_plans_for_task"]

#: Receptacle type a state-changing task needs (the "tool"); it is never the goal receptacle.
TOOL_RECEPTACLE: dict[str, str] = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}

#: Object property (``VAL_ACTION_OBJECTS`` key) the task object must have.
TASK_OBJECT_PROPERTY: dict[str, str] = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}

#: Receptacle types a lamp may stand in/on (first available is preferred by nothing: random).
LAMP_HOLDERS: dict[str, tuple[str, ...]] = {
    "DeskLamp": ("Desk", "SideTable", "Dresser", "Shelf", "DiningTable", "CoffeeTable", "TVStand",
                 "CounterTop"),
    "FloorLamp": ("SideTable", "ArmChair", "Sofa", "Dresser", "Desk", "Shelf", "TVStand",
                  "CoffeeTable", "DiningTable", "Bed"),
}

_STEP = 0.25  # ALFRED grid size (constants.AGENT_STEP_SIZE)


def alfworld_constants() -> ModuleType:
    """Returns alfworld's ``alfworld.gen.constants`` module (object/receptacle rules; imported on first use).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import alfworld_constants
        >>> alfworld_constants().AGENT_STEP_SIZE
        0.25
    """
    import alfworld.gen.constants as constants

    return constants


def _layouts_dir() -> Path:
    import alfworld.gen

    return Path(alfworld.gen.__file__).parent / "layouts"


@lru_cache(maxsize=1)
def available_floor_plans() -> tuple[int, ...]:
    """Returns the floor-plan numbers whose layout files ship with alfworld (sorted).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import available_floor_plans
        >>> plans = available_floor_plans()
        >>> plans[:3], len(plans)
        ((1, 2, 3), 120)
    """
    nums = set()
    for p in _layouts_dir().glob("FloorPlan*-objects.json"):
        stem = p.name[len("FloorPlan"):-len("-objects.json")]
        if stem.isdigit() and (_layouts_dir() / f"FloorPlan{stem}-openable.json").exists():
            nums.add(int(stem))
    return tuple(sorted(nums))


def seen_floor_plans() -> tuple[int, ...]:
    """Returns the shipped floor plans minus ALFRED's unseen ones.

    The unseen ones are :data:`~derl_gym.envs.alfworld.game_config.UNSEEN_FLOOR_PLANS`.

    Example:
        >>> from derl_gym.envs.alfworld.game_config import UNSEEN_FLOOR_PLANS
        >>> from derl_gym.envs.alfworld.scenes import available_floor_plans, seen_floor_plans
        >>> seen = seen_floor_plans()
        >>> set(seen) | set(UNSEEN_FLOOR_PLANS) == set(available_floor_plans()), 10 in seen
        (True, False)
    """
    return tuple(f for f in available_floor_plans() if f not in UNSEEN_FLOOR_PLANS)


def format_coord(v: float) -> str:
    """Returns ``v`` as ALFRED object ids write a coordinate (sign, 2 decimals, width 6: ``+01.25``).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import format_coord
        >>> [format_coord(v) for v in (1.25, -0.5)]
        ['+01.25', '-00.50']
    """
    return f"{v:+06.2f}"


@dataclass(frozen=True)
class Receptacle:
    """A static receptacle of a floor plan: ALFRED id, type, interaction pose (x, z, rot, horizon).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> cabinet = load_scene(1).receptacles[0]
        >>> cabinet.id, cabinet.type, cabinet.location
        ('Cabinet|+00.68|+00.50|-02.20', 'Cabinet', 'loc|0|-5|2|30')
    """

    id: str
    type: str
    pose: tuple[float, float, float, float]
    synthetic: bool = False

    @property
    def location(self) -> str:
        """Returns the ALFRED location name ``loc|gx|gz|rot|horizon`` of the pose."""
        return location_name(self.pose)


def location_name(pose: Sequence[float]) -> str:
    """Returns ALFRED's location name ``loc|gx|gz|rot|horizon`` of a pose ``(x, z, rotation, horizon)``.

    ``gx``/``gz`` are grid cells of 0.25 m, ``rot`` the rotation in quarter turns (0..3).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import location_name
        >>> location_name((1.0, -0.5, 90.0, 30.0))
        'loc|4|-2|1|30'
    """
    x, z, rot, hor = pose
    return "loc|%d|%d|%d|%d" % (int(round(x / _STEP)), int(round(z / _STEP)), int(round(rot / 90)) % 4,
                                int(round(hor)))


@dataclass(frozen=True)
class Scene:
    """What the generator knows about one floor plan.

    Example:
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> kitchen = load_scene(1)
        >>> kitchen.floor_plan, len(kitchen.receptacles), kitchen.object_types[:3], kitchen.lamp_types
        (1, 28, ('Apple', 'Book', 'Bowl'), ())
        >>> "Fridge" in kitchen.receptacle_types
        True
    """

    floor_plan: int
    receptacles: tuple[Receptacle, ...]
    object_types: tuple[str, ...]          # pickupable object types present (placeable somewhere)
    lamp_types: tuple[str, ...]            # DeskLamp / FloorLamp present
    free_points: tuple[tuple[float, float], ...]  # reachable grid points

    @property
    def receptacle_types(self) -> set[str]:
        """Returns the set of receptacle types in the scene."""
        return {r.type for r in self.receptacles}


@lru_cache(maxsize=None)
def _pickupable_types() -> frozenset[str]:
    c = alfworld_constants()
    placeable: set[str] = set()
    for objs in c.VAL_RECEPTACLE_OBJECTS.values():
        placeable |= set(objs)
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    return frozenset(t for t in placeable
                     if t in c.OBJECTS and t not in static and "Sliced" not in t)


@lru_cache(maxsize=None)
def load_scene(floor_plan: int) -> Scene:
    """Returns the :class:`Scene` of ``floor_plan`` read from alfworld's layout files.

    Example:
        >>> from derl_gym.envs.alfworld.scenes import load_scene
        >>> load_scene(1).receptacles[0].type
        'Cabinet'
        >>> load_scene(9999)
        Traceback (most recent call last):
        ...
        ValueError: floor_plan=9999: no layout FloorPlan9999-objects.json in ...
    """
    c = alfworld_constants()
    d = _layouts_dir()
    obj_path = d / f"FloorPlan{floor_plan}-objects.json"
    if not obj_path.exists():
        raise ValueError(f"floor_plan={floor_plan}: no layout {obj_path.name} in {d}; "
                         f"available: {available_floor_plans()}")
    types = set(json.loads(obj_path.read_text()))
    openable = json.loads((d / f"FloorPlan{floor_plan}-openable.json").read_text())
    points = np.load(d / f"FloorPlan{floor_plan}-layout.npy")
    free_points = tuple(sorted((float(x), float(z)) for x, z in points))
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)

    receptacles: list[Receptacle] = []
    for rid, pose in sorted(openable.items()):
        parts = rid.split("|")
        rtype = parts[-1] if len(parts) == 5 else parts[0]
        if rtype in static:
            receptacles.append(Receptacle(rid, rtype, tuple(float(v) for v in pose)))
    present = {r.type for r in receptacles}
    # receptacle types listed for the scene but without a pose: one synthetic instance each
    wanted = {t for t in types if t in static}
    if "Sink" in types:
        wanted.add("SinkBasin")
    if "Bathtub" in types:
        wanted.add("BathtubBasin")
    rng = random.Random(f"scene-{floor_plan}")
    for rtype in sorted(wanted - present):
        x, z = free_points[rng.randrange(len(free_points))]
        y = rng.uniform(0.0, 1.5)
        coords = f"{format_coord(x)}|{format_coord(y)}|{format_coord(z)}"
        if rtype in ("SinkBasin", "BathtubBasin"):
            rid = f"{rtype[:-len('Basin')]}|{coords}|{rtype}"
        else:
            rid = f"{rtype}|{coords}"
        receptacles.append(Receptacle(rid, rtype, (x, z, 90.0 * rng.randrange(4), 30.0), synthetic=True))
    pickup = _pickupable_types()
    obj_types = tuple(sorted(t for t in types if t in pickup))
    lamps = tuple(sorted(t for t in types if t in LAMP_HOLDERS))
    return Scene(floor_plan, tuple(receptacles), obj_types, lamps, free_points)


def can_hold(rtype: str, otype: str) -> bool:
    """Returns whether receptacle type ``rtype`` may hold object type ``otype`` (``VAL_RECEPTACLE_OBJECTS``).

    Example:
        >>> from derl_gym.envs.alfworld.scenes import can_hold
        >>> can_hold("Fridge", "Apple"), can_hold("Fridge", "Laptop")
        (True, False)
    """
    return otype in alfworld_constants().VAL_RECEPTACLE_OBJECTS.get(rtype, ())


def task_options(task_type: str, scene: Scene) -> list[tuple[str, str, str]]:
    """Returns every (object, goal receptacle type, toggle) triple the task admits in ``scene``.

    The object needs a start receptacle in the scene whose type differs from the goal type.

    Example:
        >>> from derl_gym.envs.alfworld.scenes import load_scene, task_options
        >>> task_options("pick_heat_then_place_in_recep", load_scene(1))[:2]
        [('Apple', 'CounterTop', ''), ('Apple', 'Fridge', '')]
        >>> task_options("look_at_obj_in_light", load_scene(1))     # a kitchen without lamps
        []
    """
    c = alfworld_constants()
    rtypes = sorted(scene.receptacle_types)
    tool = TOOL_RECEPTACLE.get(task_type)
    if tool is not None and tool not in rtypes:
        return []
    prop = TASK_OBJECT_PROPERTY.get(task_type)
    options: list[tuple[str, str, str]] = []
    for obj in scene.object_types:
        if prop is not None and obj not in c.VAL_ACTION_OBJECTS[prop]:
            continue
        holders = [r for r in rtypes if can_hold(r, obj)]
        if task_type == "look_at_obj_in_light":
            if not holders:
                continue
            for lamp in scene.lamp_types:
                if any(r in rtypes for r in LAMP_HOLDERS[lamp]):
                    options.append((obj, "", lamp))
            continue
        for goal in holders:
            if goal == tool:
                continue
            if any(r != goal for r in holders):
                options.append((obj, goal, ""))
    return options


@lru_cache(maxsize=None)
def floor_plans_for_task(task_type: str, floor_plans: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Returns the floor plans (of ``floor_plans``, default all seen) that can host ``task_type``.

    Example:
        >>> from derl_gym.envs.alfworld.scenes import floor_plans_for_task
        >>> floor_plans_for_task("look_at_obj_in_light", (1, 2, 301))   # only the bedroom has a lamp
        (301,)
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r}: use one of {TASK_TYPES}")
    pool = seen_floor_plans() if floor_plans is None else floor_plans
    return tuple(f for f in pool if task_options(task_type, load_scene(f)))
