"""Solves a game: the planner's walkthrough, replayed to a win in TextWorld's ``PddlEnv``."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["UnsolvableGame", "make_pddl_env", "solve_game"]


class UnsolvableGame(RuntimeError):
    """Raised when a sampled game cannot be won by the planner's walkthrough.

    Example:
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> generate_game("pick_and_place_simple", 1, seed=0, max_attempts=0)
        Traceback (most recent call last):
        ...
        derl_gym.envs.alfworld.solver.UnsolvableGame: no solvable pick_and_place_simple game on FloorPlan1 ...
    """


def make_pddl_env(policy: bool) -> Any:
    """Returns alfworld's ``AlfredDemangler`` around TextWorld's ``PddlEnv`` (names stripped).

    See :func:`derl_gym.envs.alfworld.engine.make_reference_env`: on numbered names ("apple 1") it
    is upstream's env; an unnumbered object reads "desk", so the planner's commands are admissible.
    TextWorld is imported through :func:`~derl_gym.envs.alfworld.textworld_import.import_textworld`.

    Example:
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> from derl_gym.envs.alfworld.solver import make_pddl_env
        >>> game = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0)
        >>> env = make_pddl_env(policy=False)
        >>> env.load(game.game)
        >>> state = env.reset()
        >>> state["won"], "look" in state["admissible_commands"]
        (False, True)
    """
    from derl_gym.envs.alfworld.engine import make_reference_env
    from derl_gym.envs.alfworld.textworld_import import import_textworld

    infos = import_textworld().EnvInfos(won=True, admissible_commands=True, policy_commands=policy)
    return make_reference_env(infos, shuffle=False)


def solve_game(game: Mapping[str, Any], env: Any = None) -> list[str]:
    """Returns the planner walkthrough of ``game`` after replaying it to a win in ``PddlEnv``.

    ``game`` is a ``.tw-pddl`` dict. Raises :class:`UnsolvableGame` when the planner finds no
    plan, the game is already won at reset, or the replayed plan does not win.

    Example:
        >>> from derl_gym.envs.alfworld.game_builder import generate_game
        >>> from derl_gym.envs.alfworld.solver import solve_game
        >>> game = generate_game("pick_and_place_simple", 1, seed=0, num_receptacles=1, num_distractors=0,
        ...                      verify=False)
        >>> plan = solve_game(game.game)
        >>> plan[0].startswith("go to"), plan[-1].startswith("move")
        (True, True)
    """
    env = env if env is not None else make_pddl_env(policy=True)
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
