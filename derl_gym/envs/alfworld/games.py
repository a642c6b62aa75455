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

This module is a facade: it re-exports the generator's public API from the modules that do the
work, one job each (import from them directly in new code):

- :mod:`~derl_gym.envs.alfworld.game_config`: task types, :class:`GeneratorConfig`, presets;
- :mod:`~derl_gym.envs.alfworld.scenes`: what each floor plan offers (receptacles, objects, poses);
- :mod:`~derl_gym.envs.alfworld.game_sampling`: one game's layout (receptacles, objects, agent start);
- :mod:`~derl_gym.envs.alfworld.pddl_writer`: the PDDL problem and the grammar with the task sentence;
- :mod:`~derl_gym.envs.alfworld.solver`: planner walkthrough, replayed to a win in ``PddlEnv``;
- :mod:`~derl_gym.envs.alfworld.game_builder`: one solvable game (sample, write, solve, resample);
- :mod:`~derl_gym.envs.alfworld.generation`: a config's games, in worker processes, written to disk;
- :mod:`~derl_gym.envs.alfworld.game_cache`: the locked, manifest-checked disk cache (:func:`ensure_games`).
"""

from __future__ import annotations

from derl_gym.envs.alfworld.game_builder import GeneratedGame, generate_game
from derl_gym.envs.alfworld.game_cache import MANIFEST, default_cache_dir, ensure_games
from derl_gym.envs.alfworld.game_config import (
    GENERATOR_PRESETS,
    GENERATOR_VERSION,
    TASK_TYPES,
    UNSEEN_FLOOR_PLANS,
    GeneratorConfig,
    as_generator_config,
    get_generator_preset,
)
from derl_gym.envs.alfworld.generation import iter_games, save_game, write_games
from derl_gym.envs.alfworld.pddl_writer import build_pddl_problem, mangle
from derl_gym.envs.alfworld.scenes import (
    LAMP_HOLDERS,
    TASK_OBJECT_PROPERTY,
    TOOL_RECEPTACLE,
    Receptacle,
    Scene,
    available_floor_plans,
    floor_plans_for_task,
    load_scene,
    seen_floor_plans,
)
from derl_gym.envs.alfworld.solver import UnsolvableGame, solve_game

__all__ = [
    "TASK_TYPES", "UNSEEN_FLOOR_PLANS", "GENERATOR_VERSION", "GeneratorConfig", "GENERATOR_PRESETS",
    "get_generator_preset", "as_generator_config", "GeneratedGame", "UnsolvableGame", "generate_game",
    "solve_game", "write_games", "save_game", "iter_games", "ensure_games", "default_cache_dir",
    "available_floor_plans", "seen_floor_plans", "floor_plans_for_task", "load_scene",
    "build_pddl_problem", "mangle",
    # public before the split, re-exported for existing imports
    "MANIFEST", "LAMP_HOLDERS", "TASK_OBJECT_PROPERTY", "TOOL_RECEPTACLE", "Receptacle", "Scene",
]
