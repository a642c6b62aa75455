"""A tiny, fast text world for tests: "put the <object> in the <receptacle>".

It follows the derl-gym text-env contract (``gymnasium.spaces.Text`` observation and action
spaces, ``info`` with ``admissible_commands``, ``won``, ``valid_action``, ``state_changed``,
``progress`` and ``task``; reward 1.0 on success; a bad action string gets feedback, never an
exception) so that wrappers, primitives and the inner loop can be tested without ALFWorld.

Importing this module registers it as ``derl_gym_test/ToyText-v0``. Jobs that run in spawned
processes can make it with the env id ``"tests.toy_text_env:derl_gym_test/ToyText-v0"``:
Gymnasium imports the module before the lookup, which registers the id in that process.

Knobs: ``num_locations`` and ``num_objects`` set the size of each game, ``num_games`` how many
distinct games ``reset`` picks from (``game_offset`` shifts the game ids, so two envs with
disjoint offsets are disjoint splits), ``max_episode_steps`` truncates. ``crash_at_step`` /
``crash_at_reset`` make the env raise, to test failure handling. ``global_rng_memo=True`` mimics
engines with process-wide caches whose misses run extra code (so what runs depends on what the
process ran before), as ALFWorld's transition cache does: a miss draws from a generator of its own,
as the ALFWorld engine's first TextWorld import now does (``derl_gym/envs/alfworld/textworld_import.py``);
``global_rng_memo="global"`` draws from ``np.random`` instead, the behaviour that used to need a reseed.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TOY_ENV_ID = "derl_gym_test/ToyText-v0"
#: env id usable from freshly spawned processes (Gymnasium imports the module first)
TOY_ENV_IMPORT_ID = f"tests.toy_text_env:{TOY_ENV_ID}"

_LOCATIONS = ["table", "shelf", "fridge", "drawer", "cabinet", "sofa", "desk", "sink", "bed", "garage"]
_OBJECTS = ["apple", "mug", "book", "key", "pen", "plate", "lamp", "towel"]
_SEEN_STATES: set = set()  # process-wide "cache" used by global_rng_memo


class ToyTextEnv(gym.Env):
    """A deterministic put-X-in-Y text game; returns text observations and task reward 1 on success."""

    metadata = {"render_modes": []}

    def __init__(self, num_locations: int = 4, num_objects: int = 2, num_games: int = 8,
                 game_offset: int = 0, max_episode_steps: int = 20,
                 crash_at_step: int | None = None, crash_at_reset: bool = False,
                 global_rng_memo: bool | str = False) -> None:
        if not 2 <= num_locations <= len(_LOCATIONS):
            raise ValueError(f"num_locations must be in [2, {len(_LOCATIONS)}], got {num_locations}")
        if not 1 <= num_objects <= len(_OBJECTS):
            raise ValueError(f"num_objects must be in [1, {len(_OBJECTS)}], got {num_objects}")
        self.num_locations = num_locations
        self.num_objects = num_objects
        self.num_games = num_games
        self.game_offset = game_offset
        self.max_episode_steps = max_episode_steps
        self.crash_at_step = crash_at_step
        self.crash_at_reset = crash_at_reset
        self.global_rng_memo = global_rng_memo
        self._miss_rng = np.random.default_rng(0)
        charset = string.printable
        self.observation_space = spaces.Text(max_length=4096, charset=charset)
        self.action_space = spaces.Text(max_length=256, charset=charset)
        self._game: dict[str, Any] = {}
        self._steps = 0
        self._total_steps = 0

    @property
    def primitives(self):
        """The default primitive set (``agent_primitives()``: g1 success, g2..g4 mean ``info["progress"]``
        over the thirds), as ALFWorld's; what ``MetaRewardWrapper(env, expr)`` uses."""
        from derl_gym.rewards.primitives import agent_primitives

        return agent_primitives()

    # ------------------------------------------------------------------ game logic
    def _make_game(self, game_id: int) -> dict[str, Any]:
        rng = np.random.default_rng(10_000 + game_id)
        locations = [str(x) for x in rng.choice(_LOCATIONS, size=self.num_locations, replace=False)]
        objects = [str(x) for x in rng.choice(_OBJECTS, size=self.num_objects, replace=False)]
        placed = {obj: str(rng.choice(locations)) for obj in objects}
        target = objects[0]
        goal = str(rng.choice([loc for loc in locations if loc != placed[target]]))
        return {"id": game_id, "locations": locations, "objects": objects, "placed": placed,
                "target": target, "goal": goal}

    def _plan_length(self) -> int:
        game, where = self._game, self._where
        target, goal = game["target"], game["goal"]
        if self._placed.get(target) == goal:
            return 0
        if self._holding == target:
            return (where != goal) + 1
        if self._holding is not None:
            return 1 + 4  # put the wrong object somewhere first
        return (where != self._placed[target]) + 1 + 1 + 1

    def _admissible(self) -> list[str]:
        cmds = [f"go to {loc}" for loc in self._game["locations"] if loc != self._where]
        if self._holding is None:
            cmds += [f"take {obj} from {loc}" for obj, loc in self._placed.items() if loc == self._where]
        else:
            cmds.append(f"put {self._holding} in {self._where}")
        cmds += ["look", f"examine {self._where}"]
        return cmds

    def _describe(self) -> str:
        here = [obj for obj, loc in self._placed.items() if loc == self._where]
        items = ", ".join(f"a {obj}" for obj in here) if here else "nothing"
        return f"You are at the {self._where}. On the {self._where}, you see {items}."

    def _info(self, valid: bool, changed: bool, progress: float) -> dict[str, Any]:
        game = self._game
        return {
            "admissible_commands": self._admissible(),
            "won": self._won,
            "valid_action": valid,
            "state_changed": changed,
            "progress": progress,
            "task": f"put the {game['target']} in the {game['goal']}.",
            "inventory": f"You carry: {self._holding}." if self._holding else "You carry nothing.",
            "game_id": game["id"],
        }

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a game picked with ``np_random``; returns ``(text, info)``."""
        super().reset(seed=seed)
        if self.crash_at_reset:
            raise RuntimeError("ToyTextEnv crash_at_reset=True: simulated engine failure at reset")
        game_id = self.game_offset + int(self.np_random.integers(self.num_games))
        self._game = self._make_game(game_id)
        self._placed = dict(self._game["placed"])
        self._where = self._game["locations"][0]
        if self._where == self._game["goal"]:
            self._where = self._game["locations"][1]
        self._holding: str | None = None
        self._won = False
        self._steps = 0
        self._initial_plan = self._plan_length()
        obs = f"-= Welcome =- Your task is to: {self._info(True, False, 0.0)['task']} {self._describe()}"
        return obs, self._info(True, False, 0.0)

    def step(self, action: str):
        """Apply a command; returns ``(text, reward, terminated, truncated, info)``."""
        self._steps += 1
        self._total_steps += 1
        if self.crash_at_step is not None and self._total_steps >= self.crash_at_step:
            raise RuntimeError(f"ToyTextEnv crash_at_step={self.crash_at_step}: simulated engine failure")
        command = str(action).strip().lower()
        if self.global_rng_memo:
            key = (self._game["id"], self._where, self._holding, tuple(sorted(self._placed.items())), command)
            if key not in _SEEN_STATES:
                _SEEN_STATES.add(key)
                if self.global_rng_memo == "global":
                    np.random.random()  # a cache miss touches the global RNG
                else:
                    self._miss_rng.random()  # a cache miss draws from the engine's own generator
        before = self._plan_length()
        valid, changed = command in self._admissible(), False
        if not valid:
            feedback = "Nothing happens."
        elif command.startswith("go to "):
            self._where = command[len("go to "):]
            feedback, changed = self._describe(), True
        elif command.startswith("take "):
            obj = command[len("take "):].split(" from ")[0]
            self._holding = obj
            self._placed.pop(obj)
            feedback, changed = f"You pick up the {obj} from the {self._where}.", True
        elif command.startswith("put "):
            obj = self._holding
            self._placed[obj] = self._where
            self._holding = None
            feedback, changed = f"You put the {obj} in the {self._where}.", True
        elif command.startswith("examine "):
            feedback = self._describe()
        else:  # look
            feedback = self._describe()
        self._won = self._placed.get(self._game["target"]) == self._game["goal"]
        after = self._plan_length()
        progress = max(0.0, (before - after) / max(self._initial_plan, 1))
        reward = 1.0 if self._won else 0.0
        terminated = self._won
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        return feedback, reward, terminated, truncated, self._info(valid, changed, float(min(progress, 1.0)))


def register_toy_env() -> str:
    """Register :class:`ToyTextEnv` as ``derl_gym_test/ToyText-v0`` (idempotent); returns the id."""
    if TOY_ENV_ID not in gym.registry:
        gym.register(id=TOY_ENV_ID, entry_point="tests.toy_text_env:ToyTextEnv", disable_env_checker=True)
    return TOY_ENV_ID


register_toy_env()
