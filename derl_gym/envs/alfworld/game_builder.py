"""Builds one solvable game: sample a layout, write its PDDL and task sentence, solve it; resample on failure."""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from derl_gym.envs.alfworld.game_config import GENERATOR_VERSION, TASK_TYPES
from derl_gym.envs.alfworld.game_sampling import sample_layout, unique_locations
from derl_gym.envs.alfworld.pddl_writer import alfworld_logic, build_pddl_problem, task_grammar
from derl_gym.envs.alfworld.scenes import floor_plans_for_task, load_scene, location_name
from derl_gym.envs.alfworld.solver import UnsolvableGame, solve_game

logger = logging.getLogger(__name__)

__all__ = ["GeneratedGame", "generate_game"]


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

    Example:
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> game = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0,
        ...                      verify=False)
        >>> game.task_dir_name.startswith("pick_and_place_simple-"), game.trial_name.startswith("trial_G1_0_")
        (True, True)
        >>> sorted(game.game)
        ['grammar', 'pddl_domain', 'pddl_problem', 'solvable', 'walkthrough']
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

    Example:
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> game = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0)
        >>> game.game["solvable"], game.walkthrough == game.game["walkthrough"], game.task.startswith("put")
        (True, True, True)
        >>> same = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0)
        >>> same.task == game.task and same.pddl_problem == game.pddl_problem   # deterministic
        True
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r}: use one of {TASK_TYPES}")
    if floor_plan is None:
        plans = floor_plans_for_task(task_type)
        floor_plan = plans[random.Random(f"fp-{task_type}-{seed}").randrange(len(plans))]
    scene = load_scene(int(floor_plan))
    domain, grammar = alfworld_logic()
    last_err: Exception | None = None
    for attempt in range(max_attempts):
        rng = random.Random(f"{task_type}-{floor_plan}-{seed}-{attempt}")
        params, receps, objects, pose = sample_layout(task_type, scene, rng, num_receptacles,
                                                      num_distractors)
        rec_locs = unique_locations(receps, scene, rng)
        agent_loc = location_name(pose)
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
        full_grammar, task = task_grammar(traj_data, grammar, rng.randrange(2**31))
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
