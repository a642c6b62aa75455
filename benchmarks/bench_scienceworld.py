"""Benchmark: steps/s of the raw ``scienceworld`` loop vs. ``derl_gym/ScienceWorld-v0``.

Every loop plays random *valid* actions on the same task and variations (load or reset after
``--episode-steps`` steps or when the episode ends) and counts simulator steps per second,
resets included:

- ``raw``: the upstream ``scienceworld.ScienceWorldEnv`` (``load``, ``reset``, ``step``), the next
  action drawn from ``info["valid"]`` that its ``step`` returns (upstream ``step`` always computes
  the valid-action list, the look text, the inventory and the task description);
- ``naive_env``: the obvious Gymnasium wrapper around the upstream API (upstream ``step``, then
  ``get_valid_action_object_combinations`` again for ``admissible_commands``, ``look`` and
  ``inventory`` for the observation): the "before" of this env's per-step trimming;
- ``env``: ``ScienceWorldEnv`` with ``admissible=True`` (the valid-action list once per step);
- ``env_no_admissible``: ``admissible=False``; actions are drawn from the list at the episode's
  start, so later ones are often rejected: this row measures the env's per-step overhead only;
- ``async_2``: ``AsyncVectorEnv`` with 2 worker processes of ``env`` (steps summed over both).

Usage::

    .venv/bin/python benchmarks/bench_scienceworld.py [--steps 300] [--task find-living-thing]

Prints a table with the ratios to ``raw`` and writes ``benchmarks/results/bench_scienceworld.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def bench_raw(task: str, variations: list[int], steps: int, episode_steps: int, seed: int) -> dict[str, Any]:
    """Time the upstream scienceworld loop; returns steps/s and the JVM start time."""
    from scienceworld import ScienceWorldEnv as UpstreamEnv

    rng = random.Random(seed)
    start = time.perf_counter()
    env = UpstreamEnv("", envStepLimit=10**6)
    jvm_seconds = time.perf_counter() - start
    try:
        episode = 0
        env.load(task, variations[episode % len(variations)], "easy")
        _, info = env.reset()
        t0, done_steps, in_episode = time.perf_counter(), 0, 0
        while done_steps < steps:
            _, _, done, info = env.step(rng.choice(info["valid"]))
            done_steps += 1
            in_episode += 1
            if done or in_episode >= episode_steps:
                episode += 1
                env.load(task, variations[episode % len(variations)], "easy")
                _, info = env.reset()
                in_episode = 0
        elapsed = time.perf_counter() - t0
    finally:
        env.close()
    return {"steps": done_steps, "seconds": elapsed, "steps_per_second": done_steps / elapsed,
            "jvm_start_seconds": jvm_seconds, "episodes": episode}


class NaiveScienceWorldEnv:
    """The obvious wrapper around the upstream API (benchmark reference, not library code)."""

    def __init__(self, task: str, variations: list[int]) -> None:
        from scienceworld import ScienceWorldEnv as UpstreamEnv

        self.env = UpstreamEnv("", envStepLimit=10**6)
        self.task, self.variations, self.episode = task, variations, 0

    def reset(self) -> tuple[str, dict[str, Any]]:
        self.env.load(self.task, self.variations[self.episode % len(self.variations)], "easy")
        self.episode += 1
        obs, info = self.env.reset()
        info["admissible_commands"] = sorted(set(self.env.get_valid_action_object_combinations()))
        return "\n\n".join([self.env.taskdescription(), obs, self.env.inventory()]), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, _, done, info = self.env.step(action)
        info["admissible_commands"] = sorted(set(self.env.get_valid_action_object_combinations()))
        text = "\n\n".join([self.env.taskdescription(), obs, self.env.look(), self.env.inventory()])
        return text, float(info["score"] >= 100), done, False, info

    def close(self) -> None:
        self.env.close()


def run_env_loop(env: Any, steps: int, episode_steps: int, seed: int,
                 pick: Callable[[random.Random, dict, list[str]], str],
                 reset_list: Callable[[Any, dict], list[str]]) -> dict[str, Any]:
    """Step a single (Gymnasium-style) env with random actions; returns steps/s and episodes.

    ``reset_list(env, info)`` gives the command list at an episode's start; ``pick`` draws the
    next action from the step's ``info`` or from that list.
    """
    rng = random.Random(seed)
    _, info = env.reset()
    start_list = reset_list(env, info)
    t0, done_steps, in_episode, episodes = time.perf_counter(), 0, 0, 0
    while done_steps < steps:
        _, _, terminated, truncated, info = env.step(pick(rng, info, start_list))
        done_steps += 1
        in_episode += 1
        if terminated or truncated or in_episode >= episode_steps:
            _, info = env.reset()
            start_list = reset_list(env, info)
            in_episode, episodes = 0, episodes + 1
    elapsed = time.perf_counter() - t0
    return {"steps": done_steps, "seconds": elapsed, "steps_per_second": done_steps / elapsed, "episodes": episodes}


def _pick_admissible(rng: random.Random, info: dict, start_list: list[str]) -> str:
    return rng.choice(info["admissible_commands"])


def _pick_start_list(rng: random.Random, info: dict, start_list: list[str]) -> str:
    return rng.choice(start_list)


class _EnvFactory:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __call__(self):
        from derl_gym.envs.scienceworld import ScienceWorldEnv

        return ScienceWorldEnv(**self.kwargs)


def bench_env(task: str, steps: int, episode_steps: int, seed: int, admissible: bool) -> dict[str, Any]:
    """Time ``ScienceWorldEnv`` (single process); returns steps/s, JVM start and first-reset time."""
    from derl_gym.envs.scienceworld import ScienceWorldEnv

    env = ScienceWorldEnv(task=task, split="train", seed=seed, admissible=True,
                          max_episode_steps=episode_steps)
    try:
        t0 = time.perf_counter()
        env.reset()
        first_reset = time.perf_counter() - t0
        jvm_seconds = env._jvm.start_seconds
        env.admissible = admissible
        env.reset(seed=seed)
        if admissible:
            result = run_env_loop(env, steps, episode_steps, seed, _pick_admissible,
                                  lambda e, info: list(info["admissible_commands"]))
        else:
            result = run_env_loop(env, steps, episode_steps, seed, _pick_start_list,
                                  lambda e, info: e.admissible_commands())
    finally:
        env.close()
    result.update(jvm_start_seconds=jvm_seconds, first_reset_seconds=first_reset)
    return result


def bench_naive(task: str, variations: list[int], steps: int, episode_steps: int, seed: int) -> dict[str, Any]:
    """Time the naive upstream wrapper."""
    env = NaiveScienceWorldEnv(task, variations)
    try:
        return run_env_loop(env, steps, episode_steps, seed, _pick_admissible,
                            lambda e, info: list(info["admissible_commands"]))
    finally:
        env.close()


def bench_async(task: str, steps: int, episode_steps: int, seed: int, n_envs: int) -> dict[str, Any]:
    """Time an ``AsyncVectorEnv`` of ``n_envs`` worker processes; steps are summed over the workers."""
    from gymnasium.vector import AsyncVectorEnv

    factory = _EnvFactory(task=task, split="train", admissible=True, max_episode_steps=episode_steps)
    t0 = time.perf_counter()
    venv = AsyncVectorEnv([factory] * n_envs, shared_memory=False)
    try:
        _, infos = venv.reset(seed=seed)
        startup = time.perf_counter() - t0
        rng = random.Random(seed)
        t0, done_steps = time.perf_counter(), 0
        while done_steps < steps:
            actions = tuple(rng.choice(list(c) or ["look around"]) for c in infos["admissible_commands"])
            _, _, _, _, infos = venv.step(actions)
            done_steps += n_envs
        elapsed = time.perf_counter() - t0
    finally:
        venv.close()
    return {"steps": done_steps, "seconds": elapsed, "steps_per_second": done_steps / elapsed,
            "startup_seconds": startup, "n_envs": n_envs}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="simulator steps per configuration")
    parser.add_argument("--task", default="find-living-thing")
    parser.add_argument("--episode-steps", type=int, default=30)
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_scienceworld.json")
    args = parser.parse_args()

    from derl_gym.envs.scienceworld import split_variations

    variations = split_variations(args.task, "train")
    order = list(np.random.default_rng(args.seed).permutation(variations))
    rows: dict[str, dict[str, Any]] = {}
    rows["raw"] = bench_raw(args.task, [int(v) for v in order], args.steps, args.episode_steps, args.seed)
    rows["naive_env"] = bench_naive(args.task, [int(v) for v in order], args.steps, args.episode_steps, args.seed)
    rows["env"] = bench_env(args.task, args.steps, args.episode_steps, args.seed, admissible=True)
    rows["env_no_admissible"] = bench_env(args.task, args.steps, args.episode_steps, args.seed, admissible=False)
    rows[f"async_{args.n_envs}"] = bench_async(args.task, args.steps, args.episode_steps, args.seed, args.n_envs)

    raw = rows["raw"]["steps_per_second"]
    print(f"ScienceWorld '{args.task}', random valid actions, episodes <= {args.episode_steps} steps, "
          f"{args.steps} steps per row; {os.cpu_count()} CPU cores (shared), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'loop':<20}{'steps/s':>10}{'x raw':>8}{'ms/step':>10}")
    for name, row in rows.items():
        row["ratio_to_raw"] = row["steps_per_second"] / raw
        print(f"{name:<20}{row['steps_per_second']:>10.1f}{row['ratio_to_raw']:>8.2f}"
              f"{1000.0 / row['steps_per_second']:>10.2f}")
    print(f"JVM start: upstream {rows['raw']['jvm_start_seconds']:.2f}s, env {rows['env']['jvm_start_seconds']:.2f}s "
          f"(first reset incl. JVM start {rows['env']['first_reset_seconds']:.2f}s); "
          f"{args.n_envs}-process vector env ready in {rows[f'async_{args.n_envs}']['startup_seconds']:.2f}s")
    result = {"benchmark": "scienceworld", "task": args.task, "steps": args.steps,
              "episode_steps": args.episode_steps, "seed": args.seed, "rows": rows,
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "load_average_1min": os.getloadavg()[0]},
              "command": "python benchmarks/bench_scienceworld.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
