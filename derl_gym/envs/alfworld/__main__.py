"""Command line for the offline ALFWorld game generator.

Examples::

    python -m derl_gym.envs.alfworld generate --out /tmp/alfworld_games --preset tiny
    python -m derl_gym.envs.alfworld generate --out DIR --task-types pick_and_place_simple \\
        look_at_obj_in_light --games-per-task 5 --num-receptacles 4 --num-distractors 2 --seed 1
    python -m derl_gym.envs.alfworld split --level L1 --split test --preset tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Sequence

from derl_gym.envs.alfworld.games import (
    GENERATOR_PRESETS,
    TASK_TYPES,
    GeneratorConfig,
    get_generator_preset,
    write_games,
)


def _config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    cfg = get_generator_preset(args.preset) if args.preset else GeneratorConfig()
    changes = {}
    for name in ("games_per_task", "test_games_per_task", "num_distractors", "seed", "split"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if args.task_types:
        changes["task_types"] = tuple(args.task_types)
    if args.floor_plans:
        changes["floor_plans"] = tuple(args.floor_plans)
    if args.num_receptacles is not None:
        changes["num_receptacles"] = None if args.num_receptacles < 0 else args.num_receptacles
    return cfg.replace(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m derl_gym.envs.alfworld",
                                     description="ALFWorld offline game generator and splits.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_knobs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", choices=sorted(GENERATOR_PRESETS), default=None,
                       help="start from a named generator preset")
        p.add_argument("--task-types", nargs="+", choices=TASK_TYPES, default=None)
        p.add_argument("--floor-plans", nargs="+", type=int, default=None)
        p.add_argument("--games-per-task", type=int, default=None)
        p.add_argument("--test-games-per-task", type=int, default=None,
                       help="games per task type of a generated test split")
        p.add_argument("--num-receptacles", type=int, default=None,
                       help="receptacles besides the required ones (-1 = all of the floor plan)")
        p.add_argument("--num-distractors", type=int, default=None)
        p.add_argument("--seed", type=int, default=None)

    gen = sub.add_parser("generate", help="write games in the json_2.1.1 layout")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--split", default=None, help="sub-folder name (default: 'generated')")
    gen.add_argument("--workers", type=int, default=None,
                     help="generation processes (default $DERL_GYM_GEN_WORKERS or 1)")
    add_knobs(gen)

    spl = sub.add_parser("split", help="print the game files of a split (generating if needed)")
    spl.add_argument("--level", default="L0", choices=("L0", "L1", "L2"))
    spl.add_argument("--split", default="train", choices=("train", "validation", "test"))
    spl.add_argument("--data-dir", default=None, help="official json_2.1.1 folder instead")
    spl.add_argument("--cache-dir", default=None)
    add_knobs(spl)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "generate":
        cfg = _config_from_args(args)
        t0 = time.perf_counter()
        paths = write_games(cfg, args.out, args.workers)
        dt = time.perf_counter() - t0
        summary = {"games": len(paths), "seconds": round(dt, 2),
                   "games_per_s": round(len(paths) / dt, 2) if dt > 0 else None,
                   "out": str(args.out), "config": cfg.to_dict()}
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        return 0
    from derl_gym.envs.alfworld.splits import get_split_games

    split_name, args.split = args.split, None  # --split here is train/validation/test
    generator = _config_from_args(args)
    paths = get_split_games(level=args.level, split=split_name, task_types=args.task_types,
                            generator=generator, data_dir=args.data_dir, cache_dir=args.cache_dir)
    for p in paths:
        sys.stdout.write(f"{p}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
