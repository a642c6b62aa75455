"""What the offline ALFWorld game generator makes: task types, :class:`GeneratorConfig` and its presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["GENERATOR_VERSION", "TASK_TYPES", "UNSEEN_FLOOR_PLANS", "GeneratorConfig", "GENERATOR_PRESETS",
           "get_generator_preset", "as_generator_config"]

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


#: ALFRED's unseen (valid_unseen) floor plans: held out from every "seen" split.
UNSEEN_FLOOR_PLANS: tuple[int, ...] = (10, 219, 308, 424)


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
            ``games_per_task`` (at least 1). Not used by
            :func:`~derl_gym.envs.alfworld.generation.write_games` itself.
        max_attempts: resampling attempts per game before giving up (unsolvable samples).

    Example:
        >>> from derl_gym.envs.alfworld.game_config import GeneratorConfig
        >>> cfg = GeneratorConfig(task_types="pick_and_place_simple", games_per_task=2, num_receptacles=1)
        >>> cfg.task_types, cfg.num_games
        (('pick_and_place_simple',), 2)
        >>> cfg.key() == GeneratorConfig.from_dict(cfg.to_dict()).key() != cfg.replace(seed=1).key()
        True
        >>> GeneratorConfig(task_types=("fly",))
        Traceback (most recent call last):
        ...
        ValueError: GeneratorConfig.task_types=('fly',): unknown or empty; use names from ...
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
    """Returns the preset ``name`` from :data:`GENERATOR_PRESETS` with ``overrides`` applied.

    Example:
        >>> from derl_gym.envs.alfworld.game_config import get_generator_preset
        >>> cfg = get_generator_preset("tiny", games_per_task=4)
        >>> cfg.task_types, cfg.games_per_task, cfg.num_receptacles
        (('pick_and_place_simple',), 4, 2)
    """
    if name not in GENERATOR_PRESETS:
        raise KeyError(f"unknown generator preset {name!r}; choose from {sorted(GENERATOR_PRESETS)}")
    return GENERATOR_PRESETS[name].replace(**overrides)


def as_generator_config(generator: "GeneratorConfig | Mapping[str, Any] | str | None",
                        **defaults: Any) -> GeneratorConfig:
    """Returns a :class:`GeneratorConfig` from a config, a dict, a preset name or ``None``.

    ``defaults`` fill in fields that a dict/``None`` does not set.

    Example:
        >>> from derl_gym.envs.alfworld.game_config import as_generator_config
        >>> as_generator_config({"preset": "tiny", "seed": 2}).seed
        2
        >>> as_generator_config(None, games_per_task=3).games_per_task
        3
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
