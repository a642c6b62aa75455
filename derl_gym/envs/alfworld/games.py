"""Offline generator of ALFWorld games (``game.tw-pddl`` + ``traj_data.json``).

ALFWorld's game data (json_2.1.1) cannot be downloaded here, but the installed ``alfworld``
package ships everything a game is made of:

* the PDDL domain ``alfworld/data/alfred.pddl`` and the text grammar ``alfred.twl2``;
* the goal templates (PDDL goal + task sentences) in ``alfworld.gen.goal_library``;
* object/receptacle rules in ``alfworld.gen.constants`` (``VAL_RECEPTACLE_OBJECTS``: which object
  type may be in/on which receptacle type; ``VAL_ACTION_OBJECTS``: cleanable, heatable, ...);
* per floor plan, the object types present (``layouts/FloorPlanN-objects.json``), receptacle
  ids with their interaction poses (``-openable.json``) and the reachable grid (``-layout.npy``).

:func:`generate_game` builds one game from those: it picks a floor plan's real receptacles,
places the task object(s) and distractors only where ``VAL_RECEPTACLE_OBJECTS`` allows, takes the
goal from ``goal_library.gdict`` and writes a PDDL problem in the style of ALFWorld's
``initial_state.pddl``. The task sentence comes from alfworld's own
``add_task_to_grammar(grammar, traj_data)`` (the grammar's ``UNKNOWN GOAL`` is replaced by the
templated description, exactly as ``alfworld-generate`` does). Every game is played in
TextWorld's ``PddlEnv`` (wrapped in alfworld's ``AlfredDemangler``, so names read "apple 1"):
the planner (fast-downward) gives the walkthrough, the walkthrough is replayed and must end
with ``won``; unsolvable samples are rejected and resampled.

:func:`write_games` writes games in the json_2.1.1 layout that upstream ``AlfredTWEnv`` reads
(``<out>/<split>/<task_type>-<Obj>-None-<Recep>-<scene>/trial_<id>/{game.tw-pddl,traj_data.json}``,
with ``"solvable": true`` and the ``"walkthrough"`` in the game file). :func:`ensure_games` caches
them under ``$DERL_GYM_CACHE/alfworld/<config.key()>`` (default ``~/.cache/derl_gym/...``).

Simplifications versus ALFRED's THOR-based generation (documented, deliberate):
receptacle types that a floor plan lists in ``-objects.json`` but that have no entry in
``-openable.json`` (e.g. StoveBurner, Toaster, GarbageCan) get one instance with a synthetic
id and a pose drawn from the floor plan's reachable grid; every receptacle gets its own location;
lamps (look_at_obj_in_light) stand in/on a furniture receptacle of the floor plan so that the
``ToggleObject`` action (which needs ``inReceptacle``) applies; sliced and movable-receptacle
task variants are not generated (upstream ALFWorld skips them too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Bump when the generated content changes, so cached game folders are not reused.
GENERATOR_VERSION = "1"

#: The six ALFWorld task types, in upstream's numbering order (alfred_tw_env.TASK_TYPES 1..6).
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

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

#: ALFRED's unseen (valid_unseen) floor plans: held out from every "seen" split.
UNSEEN_FLOOR_PLANS: tuple[int, ...] = (10, 219, 308, 424)

_STEP = 0.25  # ALFRED grid size (constants.AGENT_STEP_SIZE)


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of the offline ALFWorld game generator.

    Attributes:
        task_types: task types to generate (names from :data:`TASK_TYPES`).
        floor_plans: floor-plan numbers to draw scenes from; ``None`` = every floor plan that
            ships a layout except ALFRED's unseen ones (:data:`UNSEEN_FLOOR_PLANS`). A task type
            only uses the floor plans that support it (e.g. heat needs a Microwave).
        games_per_task: games generated per task type.
        num_receptacles: receptacles added *besides* the ones the task needs (goal receptacle,
            start receptacle(s) of the task object(s), sink/microwave/fridge, the lamp's holder);
            ``None`` = every receptacle of the floor plan. Fewer receptacles = shorter search.
        num_distractors: extra objects (types other than the task object) placed on allowed
            receptacles; they add ``take``/``examine`` commands.
        seed: master seed; generation is deterministic for a given config.
        split: folder name the games are written under (``<out>/<split>/...``); it is also part of
            every game's seed, so two splits of one config never share a game.
        test_games_per_task: games per task type of a generated *test* split
            (:func:`derl_gym.envs.alfworld.splits.get_split_games`); ``None`` = half of
            ``games_per_task`` (at least 1). Not used by :func:`write_games` itself.
        max_attempts: resampling attempts per game before giving up (unsolvable samples).
    """

    task_types: tuple[str, ...] = TASK_TYPES
    floor_plans: tuple[int, ...] | None = None
    games_per_task: int = 10
    num_receptacles: int | None = 6
    num_distractors: int = 3
    seed: int = 0
    split: str = "generated"
    test_games_per_task: int | None = None
    max_attempts: int = 20

    def __post_init__(self) -> None:
        task_types = (self.task_types,) if isinstance(self.task_types, str) else self.task_types
        object.__setattr__(self, "task_types", tuple(task_types))
        if self.floor_plans is not None:
            object.__setattr__(self, "floor_plans", tuple(int(f) for f in self.floor_plans))
        bad = [t for t in self.task_types if t not in TASK_TYPES]
        if bad or not self.task_types:
            raise ValueError(f"GeneratorConfig.task_types={self.task_types!r}: unknown or empty; "
                             f"use names from {TASK_TYPES}")
        if self.games_per_task < 0:
            raise ValueError(f"GeneratorConfig.games_per_task={self.games_per_task} must be >= 0")
        if self.num_receptacles is not None and self.num_receptacles < 0:
            raise ValueError(f"GeneratorConfig.num_receptacles={self.num_receptacles} must be >= 0 "
                             "or None (all receptacles)")
        if self.num_distractors < 0:
            raise ValueError(f"GeneratorConfig.num_distractors={self.num_distractors} must be >= 0")
        if not self.split or "/" in self.split or self.split.startswith("."):
            raise ValueError(f"GeneratorConfig.split={self.split!r} must be a plain folder name")

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of the config (lists for tuples)."""
        d = dataclasses.asdict(self)
        d["task_types"] = list(self.task_types)
        d["floor_plans"] = None if self.floor_plans is None else list(self.floor_plans)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GeneratorConfig":
        """Returns a config from :meth:`to_dict` output (unknown keys raise ``TypeError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"GeneratorConfig.from_dict: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "GeneratorConfig":
        """Returns a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """Returns a stable 16-hex-digit hash of the config and generator version (cache key)."""
        payload = json.dumps({"v": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def num_games(self) -> int:
        """Returns the number of games this config generates."""
        return self.games_per_task * len(self.task_types)


#: Named generator configs. ``tiny``: pick_and_place_simple only, 2 required + 2 extra
#: receptacles, 2 distractors, 30 games (a uniformly random agent wins ~10% of 50-step episodes, a learning agent
#: can within a minute). ``small``: all six types, 20 games each, 4 extra receptacles,
#: 2 distractors. ``full``: all six types, every receptacle of the floor plan, 6 distractors.
GENERATOR_PRESETS: dict[str, GeneratorConfig] = {
    "tiny": GeneratorConfig(task_types=("pick_and_place_simple",), games_per_task=30,
                            num_receptacles=2, num_distractors=2),
    "small": GeneratorConfig(games_per_task=20, num_receptacles=4, num_distractors=2),
    "full": GeneratorConfig(games_per_task=50, num_receptacles=None, num_distractors=6),
}


def get_generator_preset(name: str, **overrides: Any) -> GeneratorConfig:
    """Returns the preset ``name`` from :data:`GENERATOR_PRESETS` with ``overrides`` applied."""
    if name not in GENERATOR_PRESETS:
        raise KeyError(f"unknown generator preset {name!r}; choose from {sorted(GENERATOR_PRESETS)}")
    return GENERATOR_PRESETS[name].replace(**overrides)


def as_generator_config(generator: "GeneratorConfig | Mapping[str, Any] | str | None",
                        **defaults: Any) -> GeneratorConfig:
    """Returns a :class:`GeneratorConfig` from a config, a dict, a preset name or ``None``.

    ``defaults`` fill in fields that a dict/``None`` does not set.
    """
    if isinstance(generator, GeneratorConfig):
        return generator
    if generator is None:
        return GeneratorConfig(**defaults)
    if isinstance(generator, str):
        return get_generator_preset(generator)
    if isinstance(generator, Mapping):
        data = dict(generator)
        if "preset" in data:
            return get_generator_preset(data.pop("preset"), **data)
        return GeneratorConfig.from_dict({**defaults, **data})
    raise TypeError(f"generator={generator!r}: expected GeneratorConfig, dict, preset name or None")


# --------------------------------------------------------------------------------------
# alfworld resources
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _alfworld_logic() -> tuple[str, str]:
    """Returns (pddl_domain, grammar) text shipped with alfworld."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def _constants():
    import alfworld.gen.constants as constants

    return constants


def _layouts_dir() -> Path:
    import alfworld.gen

    return Path(alfworld.gen.__file__).parent / "layouts"


@lru_cache(maxsize=1)
def available_floor_plans() -> tuple[int, ...]:
    """Returns the floor-plan numbers whose layout files ship with alfworld (sorted)."""
    nums = set()
    for p in _layouts_dir().glob("FloorPlan*-objects.json"):
        stem = p.name[len("FloorPlan"):-len("-objects.json")]
        if stem.isdigit() and (_layouts_dir() / f"FloorPlan{stem}-openable.json").exists():
            nums.add(int(stem))
    return tuple(sorted(nums))


def seen_floor_plans() -> tuple[int, ...]:
    """Returns the shipped floor plans minus ALFRED's unseen ones (:data:`UNSEEN_FLOOR_PLANS`)."""
    return tuple(f for f in available_floor_plans() if f not in UNSEEN_FLOOR_PLANS)


def _fmt(v: float) -> str:
    return f"{v:+06.2f}"


def mangle(name: str) -> str:
    """Returns an ALFRED object id in PDDL-safe form (``|`` -> ``_bar_``, ``-`` -> ``_minus_``...).

    Same mapping as alfworld's ``PlannedGameState.fix_pddl_str_chars`` (without the ``#``
    rule, which is only for goal templates).
    """
    from alfworld.gen.utils.py_util import multireplace

    return multireplace(name, {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_",
                               ",": "_comma_"})


@dataclass(frozen=True)
class Receptacle:
    """A static receptacle of a floor plan: ALFRED id, type, interaction pose (x, z, rot, horizon)."""

    id: str
    type: str
    pose: tuple[float, float, float, float]
    synthetic: bool = False

    @property
    def location(self) -> str:
        """Returns the ALFRED location name ``loc|gx|gz|rot|horizon`` of the pose."""
        return _loc_name(self.pose)


def _loc_name(pose: Sequence[float]) -> str:
    x, z, rot, hor = pose
    return "loc|%d|%d|%d|%d" % (int(round(x / _STEP)), int(round(z / _STEP)), int(round(rot / 90)) % 4,
                                int(round(hor)))


@dataclass(frozen=True)
class Scene:
    """What the generator knows about one floor plan."""

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
    c = _constants()
    placeable: set[str] = set()
    for objs in c.VAL_RECEPTACLE_OBJECTS.values():
        placeable |= set(objs)
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    return frozenset(t for t in placeable
                     if t in c.OBJECTS and t not in static and "Sliced" not in t)


@lru_cache(maxsize=None)
def load_scene(floor_plan: int) -> Scene:
    """Returns the :class:`Scene` of ``floor_plan`` read from alfworld's layout files."""
    c = _constants()
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
        coords = f"{_fmt(x)}|{_fmt(y)}|{_fmt(z)}"
        if rtype in ("SinkBasin", "BathtubBasin"):
            rid = f"{rtype[:-len('Basin')]}|{coords}|{rtype}"
        else:
            rid = f"{rtype}|{coords}"
        receptacles.append(Receptacle(rid, rtype, (x, z, 90.0 * rng.randrange(4), 30.0), synthetic=True))
    pickup = _pickupable_types()
    obj_types = tuple(sorted(t for t in types if t in pickup))
    lamps = tuple(sorted(t for t in types if t in LAMP_HOLDERS))
    return Scene(floor_plan, tuple(receptacles), obj_types, lamps, free_points)


def _can_hold(rtype: str, otype: str) -> bool:
    return otype in _constants().VAL_RECEPTACLE_OBJECTS.get(rtype, ())


def _task_options(task_type: str, scene: Scene) -> list[tuple[str, str, str]]:
    """Returns every (object, goal receptacle type, toggle) triple the task admits in ``scene``.

    The object needs a start receptacle in the scene whose type differs from the goal type.
    """
    c = _constants()
    rtypes = sorted(scene.receptacle_types)
    tool = TOOL_RECEPTACLE.get(task_type)
    if tool is not None and tool not in rtypes:
        return []
    prop = TASK_OBJECT_PROPERTY.get(task_type)
    options: list[tuple[str, str, str]] = []
    for obj in scene.object_types:
        if prop is not None and obj not in c.VAL_ACTION_OBJECTS[prop]:
            continue
        holders = [r for r in rtypes if _can_hold(r, obj)]
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
    """Returns the floor plans (of ``floor_plans``, default all seen) that can host ``task_type``."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r}: use one of {TASK_TYPES}")
    pool = seen_floor_plans() if floor_plans is None else floor_plans
    return tuple(f for f in pool if _task_options(task_type, load_scene(f)))


# --------------------------------------------------------------------------------------
# one game
# --------------------------------------------------------------------------------------
@dataclass
class GeneratedGame:
    """One generated ALFWorld game.

    Attributes:
        task_type, floor_plan, seed: what it was generated from.
        pddl_problem: the PDDL problem text (ALFWorld ``initial_state.pddl`` style).
        game: the ``game.tw-pddl`` JSON dict (pddl_domain, grammar with the task sentence,
            pddl_problem, solvable, walkthrough).
        traj_data: the ``traj_data.json`` dict (task_type, pddl_params, scene, turk_annotations...).
        walkthrough: planner commands that win the game (demangled names, e.g. "take apple 1 from
            countertop 2").
        task: the task sentence ("put a clean apple in fridge").
    """

    task_type: str
    floor_plan: int
    seed: int
    pddl_problem: str
    game: dict[str, Any]
    traj_data: dict[str, Any]
    walkthrough: list[str]
    task: str

    @property
    def task_dir_name(self) -> str:
        """Returns ALFRED's task folder name ``<task_type>-<Obj>-None-<Recep>-<scene>``."""
        p = self.traj_data["pddl_params"]
        recep = p["parent_target"] or p["toggle_target"]
        mrecep = p["mrecep_target"] or "None"
        return f"{self.task_type}-{p['object_target']}-{mrecep}-{recep}-{self.floor_plan}"

    @property
    def trial_name(self) -> str:
        """Returns the trial folder name (``trial_<id>``)."""
        return f"trial_{self.traj_data['task_id']}"


class UnsolvableGame(RuntimeError):
    """Raised when a sampled game cannot be won by the planner's walkthrough."""


@dataclass
class _Obj:
    id: str
    type: str
    recep: Receptacle


def _sample_layout(task_type: str, scene: Scene, rng: random.Random, num_receptacles: int | None,
                   num_distractors: int) -> tuple[dict[str, str], list[Receptacle], list[_Obj], tuple[float, ...]]:
    """Returns (pddl_params, receptacles, objects, agent_pose) for one sampled game."""
    options = _task_options(task_type, scene)
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
    objects: list[_Obj] = []
    lamp_recep = None
    if toggle:
        holders = [r for r in scene.receptacles if r.type in LAMP_HOLDERS[toggle]]
        lamp_recep = rng.choice(holders)
        need(lamp_recep)
    # start receptacle(s) of the task object(s): never of the goal type (else won at reset)
    starts = [r for r in scene.receptacles if _can_hold(r.type, obj_type) and r.type != goal_type]
    n_targets = 2 if task_type == "pick_two_obj_and_place" else 1
    target_receps = [rng.choice(starts) for _ in range(n_targets)]
    for r in target_receps:
        need(r)
    others = [r for r in scene.receptacles if r not in required]
    rng.shuffle(others)
    extra = others if num_receptacles is None else others[:num_receptacles]
    receps = sorted(required + extra, key=lambda r: r.id)

    used_ids: set[str] = {r.id for r in scene.receptacles}

    def new_obj(otype: str, recep: Receptacle) -> _Obj:
        while True:
            parts = recep.id.split("|")
            x0, y0, z0 = (float(parts[1]), float(parts[2]), float(parts[3]))
            oid = (f"{otype}|{_fmt(x0 + rng.uniform(-0.4, 0.4))}|{_fmt(y0 + rng.uniform(0.0, 0.3))}|"
                   f"{_fmt(z0 + rng.uniform(-0.4, 0.4))}")
            if oid not in used_ids:
                used_ids.add(oid)
                return _Obj(oid, otype, recep)

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
            holders = [r for r in receps if _can_hold(r.type, otype)]
            if holders:
                objects.append(new_obj(otype, rng.choice(holders)))
                break
    # agent starts in the middle of the room: a reachable point that is no receptacle's location
    taken = {r.location for r in receps}
    for _try in range(100):
        x, z = scene.free_points[rng.randrange(len(scene.free_points))]
        pose = (x, z, 90.0 * rng.randrange(4), 30.0)
        if _loc_name(pose) not in taken:
            break
    params = {"object_target": obj_type, "parent_target": goal_type, "toggle_target": toggle,
              "mrecep_target": "", "object_sliced": False}
    return params, receps, objects, pose


def _unique_locations(receps: list[Receptacle], scene: Scene, rng: random.Random) -> dict[str, str]:
    """Returns receptacle id -> location name, giving receptacles that share a pose their own."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for r in receps:
        loc = r.location
        tries = 0
        while loc in used and tries < 200:
            x, z = scene.free_points[rng.randrange(len(scene.free_points))]
            loc = _loc_name((x, z, r.pose[2], r.pose[3]))
            tries += 1
        used.add(loc)
        out[r.id] = loc
    return out


def build_pddl_problem(task_type: str, params: Mapping[str, Any], receps: Sequence[Receptacle],
                       objects: Sequence[_Obj], rec_locs: Mapping[str, str], agent_loc: str,
                       problem_name: str) -> str:
    """Returns the PDDL problem text in the layout of ALFWorld's ``initial_state.pddl``."""
    import alfworld.gen.goal_library as glib
    from alfworld.gen.utils.py_util import multireplace

    c = _constants()
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
            if _can_hold(rt, ot):
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


def _task_description(traj_data: Mapping[str, Any], grammar: str, seed: int) -> tuple[str, str]:
    """Returns (grammar with the task sentence, task sentence), the sentence drawn from alfworld's templates.

    The same result as alfworld's ``add_task_to_grammar`` with templated descriptions after
    ``random.seed(seed)`` (a template of ``goal_library.gdict[task type (+ "_slice")]`` filled with the
    target names), drawn here from a ``random.Random(seed)`` of its own: Python's global ``random``
    is neither drawn from nor reseeded.
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


def _make_pddl_env(policy: bool):
    """Returns alfworld's ``AlfredDemangler`` around TextWorld's ``PddlEnv`` (names stripped).

    See :func:`derl_gym.envs.alfworld.engine.make_reference_env`: on numbered names ("apple 1") it
    is upstream's env; an unnumbered object reads "desk", so the planner's commands are admissible.
    TextWorld is imported through :func:`~derl_gym.envs.alfworld.textworld_import.import_textworld`.
    """
    from derl_gym.envs.alfworld.engine import make_reference_env
    from derl_gym.envs.alfworld.textworld_import import import_textworld

    infos = import_textworld().EnvInfos(won=True, admissible_commands=True, policy_commands=policy)
    return make_reference_env(infos, shuffle=False)


def solve_game(game: Mapping[str, Any], env: Any = None) -> list[str]:
    """Returns the planner walkthrough of ``game`` after replaying it to a win in ``PddlEnv``.

    ``game`` is a ``.tw-pddl`` dict. Raises :class:`UnsolvableGame` when the planner finds no
    plan, the game is already won at reset, or the replayed plan does not win.
    """
    env = env if env is not None else _make_pddl_env(policy=True)
    inner = env.unwrapped if hasattr(env, "unwrapped") else env
    env.load(dict(game))
    inner.request_infos.policy_commands = True
    state = env.reset()
    inner.request_infos.policy_commands = False  # one planner call per game
    if state["won"]:
        raise UnsolvableGame("game is already won at reset")
    plan = list(state["policy_commands"] or [])
    if not plan:
        raise UnsolvableGame("planner found no plan")
    for cmd in plan:
        if cmd not in state["admissible_commands"]:
            raise UnsolvableGame(f"walkthrough command {cmd!r} is not admissible")
        state, _, done = env.step(cmd)
    if not state["won"]:
        raise UnsolvableGame(f"walkthrough {plan} did not win")
    return plan


def generate_game(task_type: str, floor_plan: int | None = None, seed: int = 0,
                  num_receptacles: int | None = 6, num_distractors: int = 3, *,
                  verify: bool = True, max_attempts: int = 20, env: Any = None) -> GeneratedGame:
    """Returns one solvable :class:`GeneratedGame` of ``task_type`` on ``floor_plan``.

    Args:
        task_type: one of :data:`TASK_TYPES`.
        floor_plan: floor-plan number; ``None`` = drawn (by ``seed``) from the seen floor plans
            that support the task.
        seed: sampling seed; the same arguments give the same game.
        num_receptacles: receptacles besides the required ones (``None`` = all of the scene).
        num_distractors: extra objects of other types.
        verify: play the planner walkthrough in ``PddlEnv`` and require a win (recommended).
        max_attempts: resamples (with derived seeds) before raising :class:`UnsolvableGame`.
        env: optional reusable ``AlfredDemangler(PddlEnv)`` for verification (speed).
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r}: use one of {TASK_TYPES}")
    if floor_plan is None:
        plans = floor_plans_for_task(task_type)
        floor_plan = plans[random.Random(f"fp-{task_type}-{seed}").randrange(len(plans))]
    scene = load_scene(int(floor_plan))
    domain, grammar = _alfworld_logic()
    last_err: Exception | None = None
    for attempt in range(max_attempts):
        rng = random.Random(f"{task_type}-{floor_plan}-{seed}-{attempt}")
        params, receps, objects, pose = _sample_layout(task_type, scene, rng, num_receptacles,
                                                       num_distractors)
        rec_locs = _unique_locations(receps, scene, rng)
        agent_loc = _loc_name(pose)
        if agent_loc in set(rec_locs.values()):
            last_err = UnsolvableGame("no free start location")
            continue
        digest = hashlib.sha256(f"{task_type}-{floor_plan}-{seed}-{attempt}".encode()).hexdigest()[:12]
        task_id = f"G{GENERATOR_VERSION}_{seed}_{digest}"
        problem = build_pddl_problem(task_type, params, receps, objects, rec_locs, agent_loc, task_id)
        traj_data: dict[str, Any] = {
            "task_id": task_id,
            "task_type": task_type,
            "pddl_params": params,
            "scene": {"floor_plan": f"FloorPlan{floor_plan}", "scene_num": int(floor_plan),
                      "random_seed": int(seed), "init_action": {}, "object_poses": [],
                      "object_toggles": [], "dirty_and_empty": False},
            "repeat_idx": 0,
        }
        full_grammar, task = _task_description(traj_data, grammar, rng.randrange(2**31))
        traj_data["turk_annotations"] = {"anns": [{"task_desc": task[0].upper() + task[1:] + ".",
                                                   "high_descs": [], "votes": [],
                                                   "assignment_id": "derl_gym_template"}]}
        game = {"pddl_domain": domain, "grammar": full_grammar, "pddl_problem": problem,
                "solvable": None, "walkthrough": None}
        if verify:
            try:
                walkthrough = solve_game(game, env)
            except UnsolvableGame as err:
                logger.debug("rejected %s FloorPlan%s seed=%s attempt=%d: %s", task_type, floor_plan,
                             seed, attempt, err)
                last_err = err
                continue
        else:
            walkthrough = []
        game["solvable"] = bool(verify)
        game["walkthrough"] = walkthrough
        traj_data["walkthrough"] = list(walkthrough)
        traj_data["derl_gym"] = {"generator_version": GENERATOR_VERSION, "seed": int(seed),
                                 "attempt": attempt, "num_receptacles": num_receptacles,
                                 "num_distractors": num_distractors, "task": task,
                                 "receptacles": [r.id for r in receps],
                                 "objects": {o.id: o.recep.id for o in objects}}
        return GeneratedGame(task_type, int(floor_plan), int(seed), problem, game, traj_data,
                             list(walkthrough), task)
    raise UnsolvableGame(f"no solvable {task_type} game on FloorPlan{floor_plan} with seed={seed} "
                         f"after {max_attempts} attempts (last error: {last_err}); try another "
                         "seed or floor plan")


# --------------------------------------------------------------------------------------
# many games on disk
# --------------------------------------------------------------------------------------
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
    env = _make_pddl_env(policy=True)
    return [generate_game(t, fp, seed, nr, nd, max_attempts=ma, env=env) for t, fp, seed, nr, nd, ma in jobs]


def iter_games(config: GeneratorConfig, workers: int | None = None) -> Iterable[GeneratedGame]:
    """Yields the games of ``config`` in a deterministic order (task type, then index).

    ``workers`` > 1 generates in that many spawned processes (same games, same order); default
    ``$DERL_GYM_GEN_WORKERS`` or 1.
    """
    jobs = _game_jobs(config)
    if workers is None:
        workers = int(os.environ.get("DERL_GYM_GEN_WORKERS", "1") or 1)
    if workers <= 1 or len(jobs) <= 1:
        env = _make_pddl_env(policy=True)
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


MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """Returns the cache root: ``$DERL_GYM_CACHE/alfworld`` or ``~/.cache/derl_gym/alfworld``."""
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
    processes (see :func:`iter_games`).
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


__all__ = [
    "TASK_TYPES", "UNSEEN_FLOOR_PLANS", "GENERATOR_VERSION", "GeneratorConfig", "GENERATOR_PRESETS",
    "get_generator_preset", "as_generator_config", "GeneratedGame", "UnsolvableGame", "generate_game",
    "solve_game", "write_games", "save_game", "iter_games", "ensure_games", "default_cache_dir",
    "available_floor_plans", "seen_floor_plans", "floor_plans_for_task", "load_scene",
    "build_pddl_problem", "mangle",
]
