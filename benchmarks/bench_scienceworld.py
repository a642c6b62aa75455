"""Benchmark: steps/s of the raw ``scienceworld`` loop vs. ``derl_gym/ScienceWorld-v0``.

Every loop plays random *valid* actions on the same task and variations (a new episode after
``--episode-steps`` steps or when the episode ends) and counts simulator steps per second,
resets included:

- ``raw``: the upstream ``scienceworld.ScienceWorldEnv`` (``load``, ``reset``, ``step``), the next
  action drawn from ``info["valid"]`` that its ``step`` returns (upstream ``step`` always computes
  the valid-action list, the look text, the inventory and the task description);
- ``naive_env``: the obvious Gymnasium wrapper around the upstream API (upstream ``step``, then
  ``get_valid_action_object_combinations`` again for ``admissible_commands``, ``look`` and
  ``inventory`` for the observation): the "before" of this env's per-step trimming;
- ``env``: ``ScienceWorldEnv`` with ``admissible=True`` (the valid-action list once per state), its
  JVM-side helper on (one py4j call per step: step, score, look, inventory and the valid actions,
  listed without the universe-wide referent table);
- ``env_plain_py4j``: the same env with ``jvm_helper=False`` (the simulator's own methods, one py4j
  call each, the list joined on the JVM side; Nagle off on the sockets as in ``env``);
- ``env_no_admissible``: ``admissible=False``; actions are drawn from the list at the episode's
  start (``env.admissible_commands()``), so later ones are often rejected: this row measures the
  env's own per-step cost without the simulator's valid-action listing;
- ``async_N``: ``AsyncVectorEnv`` with N worker processes of ``env`` (steps summed over workers).

The machine is shared, so the single-process loops are run in ``--rounds`` interleaved rounds on
persistent simulators and each row reports its best round (the least disturbed one) and the median.

Before the rows, a **profile** plays random valid actions on one simulator and times, per step and
in the same states: the JVM step call alone (``PythonInterface.step``, the floor of every loop), the
upstream extras (score, completed, moves, look, inventory, task description), the upstream
valid-action listing (the JVM call, then py4j's per-element iteration), the same list joined on the
JVM side with and without Nagle's algorithm on the socket, the helper's listing, and the helper's
whole step; and, inside ``env.step``, the JVM call against the Python post-processing.

Usage::

    .venv/bin/python benchmarks/bench_scienceworld.py [--steps 300] [--rounds 3] [--task find-living-thing]

Prints a table with the ratios to ``raw`` and writes ``benchmarks/results/bench_scienceworld.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


class RawLoop:
    """The upstream scienceworld loop (benchmark reference)."""

    def __init__(self, task: str, variations: list[int], episode_steps: int, seed: int) -> None:
        from scienceworld import ScienceWorldEnv as UpstreamEnv

        start = time.perf_counter()
        self.env = UpstreamEnv("", envStepLimit=10**6)
        self.start_seconds = time.perf_counter() - start
        self.task, self.variations, self.episode_steps = task, variations, episode_steps
        self.rng, self.episode = random.Random(seed), 0
        self._new_episode()

    def _new_episode(self) -> None:
        self.env.load(self.task, self.variations[self.episode % len(self.variations)], "easy")
        self.episode += 1
        _, self.info = self.env.reset()
        self.in_episode = 0

    def run(self, steps: int) -> float:
        """Play ``steps`` steps; return the elapsed seconds."""
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, done, self.info = self.env.step(self.rng.choice(self.info["valid"]))
            self.in_episode += 1
            if done or self.in_episode >= self.episode_steps:
                self._new_episode()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.env.close()


class NaiveScienceWorldEnv:
    """The obvious Gymnasium-style wrapper around the upstream API (benchmark reference, not library code)."""

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


class EnvLoop:
    """Random actions on a Gymnasium-style env; ``reset_list(env, info)`` gives an episode's start list."""

    def __init__(self, env: Any, episode_steps: int, seed: int, pick: Callable[[random.Random, dict, list[str]], str],
                 reset_list: Callable[[Any, dict], list[str]]) -> None:
        self.env, self.episode_steps, self.pick, self.reset_list = env, episode_steps, pick, reset_list
        self.rng = random.Random(seed)
        self._new_episode()

    def _new_episode(self) -> None:
        _, self.info = self.env.reset()
        self.start_list = self.reset_list(self.env, self.info)
        self.in_episode = 0

    def run(self, steps: int) -> float:
        """Play ``steps`` steps; return the elapsed seconds."""
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, self.info = self.env.step(self.pick(self.rng, self.info, self.start_list))
            self.in_episode += 1
            if terminated or truncated or self.in_episode >= self.episode_steps:
                self._new_episode()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.env.close()


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


def profile_breakdown(task: str, variations: list[int], steps: int, seed: int) -> dict[str, Any]:
    """Time each part of a step on one simulator over ``steps`` random valid actions; return ms per step.

    Every listing is timed in the same state (listing does not change it); the env part times
    ``ScienceWorldEnv.step`` and, inside it, the helper's JVM call.
    """
    from derl_gym.envs.scienceworld import ScienceWorldEnv

    env = ScienceWorldEnv(task=task, split="train", seed=seed, admissible=True, max_episode_steps=10**6)
    parts: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = call()
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return value

    try:
        env.reset(options={"task": task, "variation": variations[0]})
        jvm = env._jvm
        server, join = jvm.server, jvm._join
        gateway_server = jvm._gateway.java_gateway_server
        field = jvm._gateway.jvm.java.lang.Class.forName("py4j.GatewayServer").getDeclaredField("connections")
        field.setAccessible(True)
        sockets = field.get(gateway_server)

        def nagle(on: bool) -> None:
            for i in range(sockets.size()):
                sockets.get(i).getSocket().setTcpNoDelay(not on)

        rng = random.Random(seed)
        commands = jvm.valid_actions()
        n = sizes = 0
        episode = 0
        while n < steps:
            if n % 20 == 0:  # a fresh episode now and then (random play fails tasks by focusing)
                episode += 1
                server.load(task, variations[episode % len(variations)], "easy", False)
                server.step("look around")
                commands = jvm.valid_actions()
            action = rng.choice([c for c in commands if not c.startswith("focus on") and c != "reset task"])
            timed("jvm_step_call", lambda: server.step(action))
            timed("upstream_extras", lambda: (server.getScore(), server.getCompleted(), server.getNumMoves(),
                                              server.freeActionLook(), server.freeActionInventory(),
                                              server.freeActionTaskDesc()))
            listing = timed("upstream_listing_jvm", server.getValidActionObjectCombinations)
            timed("upstream_listing_iteration", lambda: [str(c) for c in listing])
            del listing
            timed("joined_listing_nodelay", lambda: str(join("\n", server.getValidActionObjectCombinations())))
            nagle(True)
            timed("joined_listing_nagle", lambda: str(join("\n", server.getValidActionObjectCombinations())))
            nagle(False)
            commands = timed("helper_listing", jvm.valid_actions)
            sizes += len(commands)
            n += 1
        # an episode start: upstream load + reset (as the raw loop) against env.reset (one helper call)
        resets = max(2, steps // 10)
        for i in range(resets):
            variation = variations[i % len(variations)]
            timed("upstream_load_and_reset", lambda: (server.load(task, variation, "easy", False), server.reset(),
                                                      server.getValidActionObjectCombinations()))
            timed("env_reset", lambda: env.reset(options={"task": task, "variation": variation}))
        # the helper's whole step (step + score + look + inventory + listing) and env.step around it
        env.reset(options={"task": task, "variation": variations[0]})
        real_step = jvm.step

        def counted_step(*args: Any) -> Any:
            return timed("env_jvm_call", lambda: real_step(*args))

        jvm.step = counted_step  # type: ignore[method-assign]
        info = env._info
        for i in range(steps):
            choices = [c for c in info["admissible_commands"] if not c.startswith("focus on") and c != "reset task"]
            _, _, terminated, truncated, info = timed("env_step_total", lambda: env.step(rng.choice(choices)))
            if terminated or truncated or i % 20 == 19:
                _, info = env.reset(options={"task": task, "variation": variations[i % len(variations)]})
        jvm.step = real_step  # type: ignore[method-assign]
    finally:
        env.close()
    ms = {name: 1000.0 * seconds / (resets if name in ("upstream_load_and_reset", "env_reset") else steps)
          for name, seconds in parts.items()}
    ms["env_python_postprocessing"] = ms["env_step_total"] - ms["env_jvm_call"]
    ms["upstream_step_estimate"] = (ms["jvm_step_call"] + ms["upstream_extras"] + ms["upstream_listing_jvm"]
                                    + ms["upstream_listing_iteration"])
    ms["mean_valid_actions"] = sizes / steps
    return ms


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
    parser.add_argument("--steps", type=int, default=300, help="simulator steps per configuration (all rounds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="find-living-thing")
    parser.add_argument("--episode-steps", type=int, default=30)
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-steps", type=int, default=60, help="steps of the per-part profile (0: skip)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_scienceworld.json")
    args = parser.parse_args()

    from derl_gym.envs.scienceworld import ScienceWorldEnv, split_variations

    variations = [int(v) for v in np.random.default_rng(args.seed).permutation(split_variations(args.task, "train"))]
    profile = profile_breakdown(args.task, variations, args.profile_steps, args.seed) if args.profile_steps else {}
    loops: dict[str, Any] = {}
    extra: dict[str, dict[str, Any]] = {}
    loops["raw"] = RawLoop(args.task, variations, args.episode_steps, args.seed)
    extra["raw"] = {"jvm_start_seconds": loops["raw"].start_seconds}
    loops["naive_env"] = EnvLoop(NaiveScienceWorldEnv(args.task, variations), args.episode_steps, args.seed,
                                 _pick_admissible, lambda e, info: list(info["admissible_commands"]))
    for name, admissible, helper in (("env", True, True), ("env_plain_py4j", True, False),
                                     ("env_no_admissible", False, True)):
        env = ScienceWorldEnv(task=args.task, split="train", seed=args.seed, admissible=admissible,
                              max_episode_steps=args.episode_steps, jvm_helper=helper)
        t0 = time.perf_counter()
        if admissible:
            loops[name] = EnvLoop(env, args.episode_steps, args.seed, _pick_admissible,
                                  lambda e, info: list(info["admissible_commands"]))
        else:
            loops[name] = EnvLoop(env, args.episode_steps, args.seed, _pick_start_list,
                                  lambda e, info: e.admissible_commands())
        extra[name] = {"first_reset_seconds": time.perf_counter() - t0, "jvm_start_seconds": env._jvm.start_seconds}

    per_round = max(1, args.steps // args.rounds)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    try:
        for _ in range(args.rounds):
            for name, loop in loops.items():
                rates[name].append(per_round / loop.run(per_round))
    finally:
        for loop in loops.values():
            loop.close()

    rows: dict[str, dict[str, Any]] = {}
    for name, values in rates.items():
        rows[name] = {"steps": per_round * args.rounds, "rounds": values, "steps_per_second": max(values),
                      "median_steps_per_second": statistics.median(values), **extra.get(name, {})}
    rows[f"async_{args.n_envs}"] = bench_async(args.task, args.steps, args.episode_steps, args.seed, args.n_envs)

    raw, raw_median = rows["raw"]["steps_per_second"], rows["raw"]["median_steps_per_second"]
    print(f"ScienceWorld '{args.task}', random valid actions, episodes <= {args.episode_steps} steps, "
          f"{args.steps} steps per row in {args.rounds} interleaved rounds (best round; median); "
          f"{os.cpu_count()} CPU cores (shared), load average {os.getloadavg()[0]:.1f}")
    print(f"{'loop':<20}{'steps/s':>10}{'x raw':>8}{'ms/step':>10}{'median':>10}{'x raw':>8}")
    for name, row in rows.items():
        row["ratio_to_raw"] = row["steps_per_second"] / raw
        median = row.get("median_steps_per_second", row["steps_per_second"])
        row["median_ratio_to_raw"] = median / raw_median
        print(f"{name:<20}{row['steps_per_second']:>10.1f}{row['ratio_to_raw']:>8.2f}"
              f"{1000.0 / row['steps_per_second']:>10.2f}{median:>10.1f}{row['median_ratio_to_raw']:>8.2f}")
    if profile:
        print(f"profile, ms per step over {args.profile_steps} random valid actions "
              f"({profile['mean_valid_actions']:.0f} valid actions on average):")
        labels = {
            "jvm_step_call": "JVM step call alone (PythonInterface.step): the floor",
            "upstream_extras": "upstream extras (score, completed, moves, look, inventory, task)",
            "upstream_listing_jvm": "upstream valid-action listing, JVM call",
            "upstream_listing_iteration": "upstream listing, py4j per-element iteration",
            "upstream_step_estimate": "= upstream step (sum of the four above)",
            "joined_listing_nagle": "listing joined on the JVM side, Nagle on (answer > 8 KiB)",
            "joined_listing_nodelay": "listing joined on the JVM side, TCP_NODELAY",
            "helper_listing": "helper listing (no universe-wide referent table)",
            "env_jvm_call": "env.step: the helper's one JVM call (step + all + listing)",
            "env_python_postprocessing": "env.step: Python post-processing",
            "env_step_total": "env.step total",
            "upstream_load_and_reset": "episode start, upstream (load + reset + listing), ms per episode",
            "env_reset": "episode start, env.reset (one helper call), ms per episode",
        }
        for key, label in labels.items():
            print(f"  {label:<66}{profile[key]:>8.2f}")
        floor = profile["upstream_step_estimate"] / profile["jvm_step_call"]
        print(f"  ratio bound if a step cost only the JVM step call: {floor:.2f}x the upstream step")
    async_row = rows[f"async_{args.n_envs}"]
    print(f"JVM start: upstream {rows['raw']['jvm_start_seconds']:.2f}s, env {rows['env']['jvm_start_seconds']:.2f}s "
          f"(first reset incl. JVM start {rows['env']['first_reset_seconds']:.2f}s); "
          f"{args.n_envs}-process vector env ready in {async_row['startup_seconds']:.2f}s")
    result = {"benchmark": "scienceworld", "task": args.task, "steps": args.steps, "rounds": args.rounds,
              "episode_steps": args.episode_steps, "seed": args.seed, "rows": rows,
              "profile_ms_per_step": profile,
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "load_average_1min": os.getloadavg()[0]},
              "command": "python benchmarks/bench_scienceworld.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    markdown = args.out.with_suffix(".md")
    markdown.write_text(_markdown(result))
    print(f"wrote {args.out} and {markdown}")
    return result


def _markdown(result: dict[str, Any]) -> str:
    """Return the result as a markdown report (rows table, then the per-part profile)."""
    lines = [f"# ScienceWorld steps/s: `{result['command']}`", "",
             f"Task `{result['task']}`, random valid actions, episodes <= {result['episode_steps']} steps; "
             f"{result['machine']['cpu_count']} CPU cores (shared), load average "
             f"{result['machine']['load_average_1min']:.1f}. Best round (median in brackets).", "",
             "| loop | steps/s | x raw | ms/step | median steps/s | median x raw |", "|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        median = row.get("median_steps_per_second", row["steps_per_second"])
        lines.append(f"| {name} | {row['steps_per_second']:.1f} | {row['ratio_to_raw']:.2f} | "
                     f"{1000.0 / row['steps_per_second']:.1f} | {median:.1f} | {row['median_ratio_to_raw']:.2f} |")
    profile = result.get("profile_ms_per_step") or {}
    if profile:
        lines += ["", f"Profile, ms per step ({profile['mean_valid_actions']:.0f} valid actions on average):", "",
                  "| part | ms/step |", "|---|---|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in profile.items() if name != "mean_valid_actions"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
