"""``derl_gym/ALFWorld-v0``: ALFWorld text games as a Gymnasium env on TextWorld's PDDL engine.

The env plays ``.tw-pddl`` games (JSON with ``pddl_domain``, ``grammar``, ``pddl_problem``) exactly
as upstream ``alfworld``'s ``AlfredTWEnv`` does (TextWorld ``PddlEnv`` + alfworld's demangler, so
objects read "apple 1", "countertop 2"). Game sources, in order of precedence:

1. ``games=[...]``: explicit ``.tw-pddl`` paths;
2. ``data_dir=`` or the ``ALFWORLD_DATA`` environment variable: an official ALFWorld
   ``json_2.1.1`` folder (games collected like ``AlfredTWEnv.collect_game_files``: a trial with
   ``traj_data.json`` and a solvable ``game.tw-pddl``, filtered by task type; ``train`` minus a 20%
   validation carve-out, ``test`` = ``valid_seen`` or, for L1, ``valid_unseen``);
3. otherwise the project's generated games.

Sources 2 and 3 go through :func:`derl_gym.envs.alfworld.splits.get_split_games`.

Speed: with ``cache=True`` (default) steps go through a process-wide transition cache
(:mod:`derl_gym.envs.alfworld.engine`) keyed on (game, state, command); the engine is touched only
on a cache miss, and is then re-synchronised by replaying planner operators. With ``cache=False``
every step runs TextWorld's own ``PddlEnv`` (and the planner); both give identical results.
"""

from __future__ import annotations

import logging
import os
import string
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from derl_gym.envs.alfworld.engine import (
    GLOBAL_CACHE,
    NO_PLAN,
    FastEngine,
    GameFile,
    ReferenceEngine,
    StateInfo,
    Transition,
    TransitionCache,
    load_game_file,
    normalize_command,
    task_line,
)

from derl_gym.utils.fastpath import StrList, fast_path_enabled

if TYPE_CHECKING:  # pragma: no cover
    from derl_gym.rewards.primitives import PrimitiveSet

logger = logging.getLogger(__name__)

#: upstream alfworld's task-type numbering (``alfred_tw_env.TASK_TYPES``).
TASK_TYPES: dict[int, str] = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}

SPLITS = ("train", "validation", "test")
LEVELS = ("L0", "L1", "L2")

#: printable ASCII (letters, digits, punctuation, space, \t \n \r \x0b \x0c): the spaces' charset.
CHARSET = frozenset(string.printable)
#: maximum observation length; longer texts are truncated.
MAX_OBSERVATION_LENGTH = 8192
#: maximum length of the action space's strings (longer actions are still accepted by ``step``).
MAX_ACTION_LENGTH = 256

NOTHING_HAPPENS = "Nothing happens."


def normalize_task_types(task_types: Sequence[str | int] | str | int | None) -> tuple[str, ...] | None:
    """Return ALFWorld task-type names from names or upstream numbers 1..6.

    Args:
        task_types: a name, a number (as in ``alfred_tw_env.TASK_TYPES``), a sequence of them, or
            ``None`` (all six types).

    Returns:
        The names in the given order without repeats, or ``None`` when ``task_types`` is ``None``.

    Raises:
        ValueError: naming an unknown entry and listing the valid ones, or for an empty sequence.

    Example:
        >>> from derl_gym.envs.alfworld.env import normalize_task_types
        >>> normalize_task_types([2, "pick_and_place_simple", 2]), normalize_task_types(None)
        (('look_at_obj_in_light', 'pick_and_place_simple'), None)
        >>> normalize_task_types("cook")
        Traceback (most recent call last):
            ...
        ValueError: unknown ALFWorld task type 'cook'; use names [...] or numbers [1, 2, 3, 4, 5, 6]
    """
    if task_types is None:
        return None
    if isinstance(task_types, (str, int)):
        task_types = [task_types]
    names = []
    for t in task_types:
        if isinstance(t, (int, np.integer)) and int(t) in TASK_TYPES:
            names.append(TASK_TYPES[int(t)])
        elif isinstance(t, str) and t in TASK_TYPES.values():
            names.append(t)
        else:
            raise ValueError(f"unknown ALFWorld task type {t!r}; use names {list(TASK_TYPES.values())} "
                             f"or numbers {list(TASK_TYPES)}")
    if not names:
        raise ValueError("task_types is empty; pass None for all six ALFWorld task types")
    return tuple(dict.fromkeys(names))


def _to_text(text: str, max_length: int) -> str:
    """Return ``text`` restricted to :data:`CHARSET` (other characters -> '?') and ``max_length``."""
    if len(text) > max_length:
        text = text[:max_length]
    if not (text.isascii() and all(c in CHARSET for c in text)):
        text = "".join(c if c in CHARSET else "?" for c in text)
    return text or " "


class ALFWorldEnv(gym.Env):
    """ALFWorld text games on TextWorld's PDDL engine (``derl_gym/ALFWorld-v0``).

    Observation and action are text (``gymnasium.spaces.Text``, printable ASCII). ``reset`` returns
    the game's intro ("-= Welcome to TextWorld, ALFRED! =- ... Your task is to: ..."); ``step``
    returns the engine's feedback. Reward is the task reward: 1.0 on the step that wins, else 0.0;
    ``terminated`` when won, ``truncated`` after ``max_episode_steps`` steps.

    ``info`` on every reset/step: ``admissible_commands`` (sorted, without "help"), ``won``,
    ``task`` (the "Your task is to: ..." line), ``valid_action`` (the command was admissible; an
    inadmissible one is answered "Nothing happens.", is not sent to the engine, and counts as a
    step), ``state_changed`` (the world facts changed, ignoring the ``checked`` bookkeeping facts that
    look/examine/inventory add), ``plan_length`` (fast-downward's remaining plan length, 0 when won,
    -1 when no plan), ``progress`` (1.0 when ``plan_length`` got shorter with this step, else 0.0),
    ``gamefile``, ``step``, ``lost`` (always False, as in TextWorld).

    Actions: any ``str`` is accepted; whitespace is normalised (runs collapsed to one space, ends
    stripped: ``"go to  desk "`` plays ``"go to desk"``), as are the admissible commands, the object
    names (an unnumbered object reads ``"desk"``, not upstream's ``"desk "``) and
    :attr:`walkthrough`. A non-``str`` action raises ``TypeError`` (text-action wrappers pass strings).

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        level: ``"L0"``, ``"L1"`` or ``"L2"`` (see ``derl_gym.envs.alfworld.splits``).
        task_types: task-type names or upstream numbers 1..6; ``None`` = the level's default.
        games: explicit ``.tw-pddl`` paths (overrides the other sources).
        data_dir: an ALFWorld ``json_2.1.1`` folder (default: ``$ALFWORLD_DATA`` when it holds data).
        generator: a ``GeneratorConfig``, dict or preset name for the generated games.
        max_episode_steps: truncation horizon.
        seed: seeds the game order (same as ``reset(seed=...)`` on the first reset).
        cache: use the transition cache (``True``), a private :class:`TransitionCache`, or not
            (``False``: TextWorld's ``PddlEnv`` on every step).
        render_mode: ``None`` or ``"ansi"`` (``render()`` returns the last command and text).

    Example:
        The offline tiny games (generated on first use, then cached on disk; a few seconds once cached):

        >>> import gymnasium as gym
        >>> import derl_gym
        >>> env = gym.make("derl_gym/ALFWorld-v0", split="train", generator="tiny", max_episode_steps=20)
        >>> obs, info = env.reset(seed=0)
        >>> obs.startswith("-= Welcome to TextWorld, ALFRED! =-"), info["task"].startswith("Your task is to:")
        (True, True)
        >>> obs, reward, terminated, truncated, info = env.step(info["admissible_commands"][0])
        >>> reward, terminated, info["valid_action"]
        (0.0, False, True)
        >>> env.close()
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, split: str = "train", level: str = "L0",
                 task_types: Sequence[str | int] | None = None, games: Sequence[str | os.PathLike] | None = None,
                 data_dir: str | os.PathLike | None = None, generator: Any = None,
                 max_episode_steps: int = 50, seed: int | None = None,
                 cache: bool | TransitionCache = True, render_mode: str | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; choose one of {SPLITS}")
        if level not in LEVELS:
            raise ValueError(f"level={level!r}; choose one of {LEVELS}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} must be >= 1")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r}; supported: None, 'ansi'")
        self.split, self.level = split, level
        self.task_types = normalize_task_types(task_types)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.game_files = self._resolve_games(games, data_dir, generator)
        if not self.game_files:
            raise ValueError("ALFWorldEnv has no games: pass games=[...], data_dir=, or a generator config")

        self.observation_space = spaces.Text(MAX_OBSERVATION_LENGTH, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(MAX_ACTION_LENGTH, min_length=1, charset=CHARSET)

        if cache is True:
            self._cache: TransitionCache | None = GLOBAL_CACHE
        elif isinstance(cache, TransitionCache):
            self._cache = cache
        elif cache is False or cache is None:
            self._cache = None
        else:
            raise TypeError(f"cache={cache!r}: expected True, False or a TransitionCache")
        self._engine: FastEngine | ReferenceEngine | None = None
        self._engine_synced = False  # engine state == episode state (for the fast engine)
        self._seed = seed
        self._order: list[int] = []
        self._cursor = 0
        self._game: GameFile | None = None
        self._state: StateInfo | None = None
        self._history: list[str] = []   # planner operators applied this episode (cached path)
        self._steps = 0
        self._task = ""
        self._last_command: str | None = None
        self._last_text = ""
        self._done = False
        #: fast path ($DERL_GYM_INNER_FAST, default on): admissible commands as a StrList, cheap to
        #: deep-copy (SB3's DummyVecEnv deep-copies every info)
        self._fast = fast_path_enabled()

    # ------------------------------------------------------------------ game sources
    def _resolve_games(self, games, data_dir, generator) -> list[str]:
        if games is not None:
            if isinstance(games, (str, os.PathLike)):
                games = [games]
            paths = [os.fspath(g) for g in games]
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"ALFWorld game files not found: {missing[:5]}; pass existing .tw-pddl paths")
            return paths
        try:
            from derl_gym.envs.alfworld.splits import get_split_games
        except ImportError as err:  # pragma: no cover - depends on the sibling module
            raise ImportError("ALFWorld splits need derl_gym.envs.alfworld.splits; pass games=[...] instead") from err
        # data_dir=None lets splits use $ALFWORLD_DATA when it holds json_2.1.1 data, else generate.
        return [str(p) for p in get_split_games(level=self.level, split=self.split,
                                                task_types=list(self.task_types) if self.task_types else None,
                                                generator=generator, data_dir=data_dir)]

    # ------------------------------------------------------------------ engine plumbing
    def _get_engine(self):
        if self._engine is None:
            self._engine = FastEngine() if self._cache is not None else ReferenceEngine()
        return self._engine

    def _sync_engine(self) -> FastEngine:
        """Bring the fast engine to the episode's current state (load / replay as needed)."""
        engine = self._get_engine()
        if engine.game is None or engine.game.key != self._game.key:
            engine.load(self._game)
            self._engine_synced = False
        if not self._engine_synced or engine.history != self._history:
            engine.replay(self._history)
            self._engine_synced = True
        return engine

    def _pick_game(self, options: Mapping[str, Any] | None) -> str:
        choice = (options or {}).get("game")
        if choice is not None:
            if isinstance(choice, (int, np.integer)):
                if not 0 <= int(choice) < len(self.game_files):
                    raise ValueError(f"options['game']={choice} out of range; this env has "
                                     f"{len(self.game_files)} games (0..{len(self.game_files) - 1})")
                return self.game_files[int(choice)]
            if isinstance(choice, (str, os.PathLike)):
                return os.fspath(choice)
            raise TypeError(f"options['game']={choice!r}: expected a game index or a .tw-pddl path")
        if self._cursor >= len(self._order):
            self._order = [int(i) for i in self.np_random.permutation(len(self.game_files))]
            self._cursor = 0
        path = self.game_files[self._order[self._cursor]]
        self._cursor += 1
        return path

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start the next game (seeded shuffled cycle; ``options={"game": index or path}`` picks one).

        Returns ``(intro text, info)``.
        """
        if seed is None and self._seed is not None and self._np_random is None:
            seed = self._seed
        super().reset(seed=seed)
        if seed is not None:
            self._order, self._cursor = [], 0
        game = load_game_file(self._pick_game(options))
        self._game = game
        self._history = []
        self._steps = 0
        self._done = False
        self._last_command = None

        if self._cache is None:
            engine = self._get_engine()
            if engine.game is None or engine.game.key != game.key:
                engine.load(game)
            intro = engine.reset()
            self._state = engine.state_info()
        else:
            self._cache.ensure_loaded(game.key)
            cached = self._cache.initial.get(game.key)
            state = self._cache.states.get((game.key, cached[0])) if cached is not None else None
            if state is None:
                engine = self._get_engine()
                if engine.game is None or engine.game.key != game.key:
                    engine.load(game)
                intro = engine.reset()
                self._engine_synced = True
                state = engine.state_info()
                self._cache.add_state(game.key, state)
                self._cache.add_initial(game.key, state.state_key, intro)
            else:
                intro = cached[1]
                self._engine_synced = False
            self._state = state
        self._task = task_line(intro)
        self._last_text = _to_text(intro, MAX_OBSERVATION_LENGTH)
        info = self._info(valid=True, changed=False, progress=0.0)
        return self._last_text, info

    def step(self, action: str):
        """Play ``action``; returns ``(feedback, reward, terminated, truncated, info)``."""
        if self._game is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"ALFWorldEnv actions are text (str), got {type(action).__name__}: {action!r:.80}; "
                            "wrap the env in derl_gym.wrappers.TextActionWrapper for discrete actions")
        command = normalize_command(action)
        self._steps += 1
        self._last_command = action
        prev = self._state
        valid = command != "help" and command in prev.commands
        if not valid:
            text, state = NOTHING_HAPPENS, prev
        elif self._cache is None:
            engine = self._engine
            text, _ = engine.step(command)
            state = engine.state_info()
        else:
            text, state = self._cached_step(command)
        self._state = state
        changed = state.world_key != prev.world_key
        shorter = state.plan_length != NO_PLAN and (prev.plan_length == NO_PLAN
                                                     or state.plan_length < prev.plan_length)
        progress = 1.0 if valid and shorter else 0.0
        terminated = bool(state.won)
        reward = 1.0 if terminated and not prev.won else 0.0
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        self._last_text = _to_text(text, MAX_OBSERVATION_LENGTH)
        return self._last_text, reward, terminated, truncated, self._info(valid, changed, progress)

    def _cached_step(self, command: str) -> tuple[str, StateInfo]:
        key = (self._game.key, self._state.state_key, command)
        hit: Transition | None = self._cache.transitions.get(key)
        if hit is not None:
            state = self._cache.states.get((self._game.key, hit.next_state))
            if state is not None:
                self._history.append(hit.operator)
                return hit.feedback, state
        engine = self._sync_engine()
        feedback, operator = engine.step(command)
        self._history.append(operator)
        next_key = engine.state_key()
        state = self._cache.states.get((self._game.key, next_key))
        if state is None:
            state = engine.state_info()
            self._cache.add_state(self._game.key, state)
        self._cache.add_transition(self._game.key, self._state.state_key, command,
                                   Transition(state.state_key, feedback, operator))
        return feedback, state

    def _info(self, valid: bool, changed: bool, progress: float) -> dict[str, Any]:
        state = self._state
        return {
            "admissible_commands": (StrList(state.commands_without_help) if self._fast
                                    else [c for c in state.commands if c != "help"]),
            "won": bool(state.won),
            "lost": False,
            "task": self._task,
            "valid_action": bool(valid),
            "state_changed": bool(changed),
            "progress": float(progress),
            "plan_length": int(state.plan_length),
            "gamefile": self._game.path,
            "step": self._steps,
        }

    def render(self) -> str | None:
        """Return ``"> command\\ntext"`` for ``render_mode="ansi"`` (``None`` otherwise)."""
        if self.render_mode != "ansi":
            return None
        prefix = f"> {self._last_command}\n" if self._last_command is not None else ""
        return prefix + self._last_text

    def close(self) -> None:
        """Release the engine (its fast-downward library copy) and write new cache entries to disk."""
        if self._cache is not None:
            self._cache.flush()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self._engine_synced = False

    # ------------------------------------------------------------------ helpers
    @property
    def primitives(self) -> "PrimitiveSet":
        """The env's default primitive set, ``alfworld_primitives()``: what ``MetaRewardWrapper(env, expr)`` uses.

        g1 ``success`` (``info["won"]``), g2/g3/g4 ``progress_first``/``_middle``/``_last`` (mean of
        ``info["progress"]``, the planner's plan got shorter, over each third of the trajectory).
        A new set on each access; for another one pass ``primitives=`` to the wrapper
        (e.g. ``alfworld_primitives("valid")``).
        """
        from derl_gym.envs.alfworld.primitives import alfworld_primitives

        return alfworld_primitives()

    @property
    def game(self) -> GameFile | None:
        """The game being played (``None`` before the first reset)."""
        return self._game

    @property
    def walkthrough(self) -> list[str] | None:
        """The current game's stored walkthrough (``None`` when the file has none)."""
        return list(self._game.walkthrough) if self._game and self._game.walkthrough is not None else None
