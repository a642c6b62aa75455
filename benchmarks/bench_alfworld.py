"""Random-policy steps/s of derl_gym/ALFWorld-v0 versus upstream alfworld's AlfredTWEnv.

Both play the same generated games (``derl_gym.envs.alfworld.games.ensure_games``, json_2.1.1
layout) with a random policy over the admissible commands, 50-step episodes, resets included in
the time. Measured:

- ``upstream``: ``alfworld.agents.environment.AlfredTWEnv(config).init_env(batch_size=1)``, the
  TextWorld gym env AlfredTWEnv builds for training (``dqn``: ``won`` + ``admissible_commands`` +
  ``gamefile`` infos, ``AlfredDemangler`` + ``AlfredInfos`` wrappers). It does not run the planner.
- ``upstream_planner``: the same with AlfredTWEnv's planner expert (``dagger`` training with
  ``expert_type: planner``), which, like our env, asks fast-downward for a plan on every step.
- ``ours_uncached``: ``ALFWorldEnv(cache=False)`` (TextWorld ``PddlEnv`` + planner on every step).
- ``ours_cold``: ``ALFWorldEnv`` with an empty transition cache (first pass over the games).
- ``ours_warm``: the same env and cache for a second pass with a different random seed (the
  realistic training case: every game was seen before, so its parsed logic and translation are
  memoised; transitions already seen are cache hits, new ones still go to the engine).
- ``ours_replay``: a third pass repeating the cold pass's seed: every transition is a cache hit
  (upper bound; what repeated evaluation episodes of a deterministic policy see).

The on-disk SAS translation cache is disabled for these passes (``ours_cold`` is a cold process
with nothing cached); ``new_game_reset_s_disk_cache`` then measures a first reset per game in a
fresh in-process state when the disk cache holds the translations (what inner-loop jobs see).

Prints a table and the ratios, writes ``benchmarks/results/bench_alfworld.json``.
Run: ``.venv/bin/python benchmarks/bench_alfworld.py`` (about 1-2 minutes; ``--quick`` for less).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ["DERL_GYM_ALFWORLD_SAS_CACHE"] = "0"  # measure cold translations; re-enabled below
from derl_gym.envs.alfworld.engine import SAS_CACHE_ENV, TransitionCache, clear_caches, get_translation  # noqa: E402
from derl_gym.envs.alfworld.engine import load_game_file  # noqa: E402
from derl_gym.envs.alfworld.env import ALFWorldEnv  # noqa: E402
from derl_gym.envs.alfworld.games import GeneratorConfig, ensure_games  # noqa: E402

MAX_STEPS = 50


def make_games(games_per_task: int, cache_dir: str | None) -> tuple[list[Path], Path]:
    """Return the benchmark's generated games (cached) and their json_2.1.1 split folder."""
    config = GeneratorConfig(games_per_task=games_per_task, num_receptacles=4, num_distractors=2, seed=0,
                             split="bench")
    paths = ensure_games(config, cache_dir)
    return paths, paths[0].parents[2]


def bench_ours(env: ALFWorldEnv, steps: int, seed: int) -> dict:
    """Random play for ``steps`` env steps; returns steps/s and counts (resets included in time).

    Also reports the mean reset time for games this env had not played before in this call
    (``new_game_reset_s``: parse + PDDL->SAS translation on a cold process) and for the others.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    new_resets: list[float] = []
    old_resets: list[float] = []

    def timed_reset(**kwargs):
        t = time.perf_counter()
        obs, info = env.reset(**kwargs)
        (old_resets if info["gamefile"] in seen else new_resets).append(time.perf_counter() - t)
        seen.add(info["gamefile"])
        return obs, info

    t0 = time.perf_counter()
    _, info = timed_reset(seed=seed)
    episodes, wins = 1, 0
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(rng.choice(info["admissible_commands"]))
        wins += int(reward > 0)
        if terminated or truncated:
            _, info = timed_reset()
            episodes += 1
    dt = time.perf_counter() - t0
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"steps": steps, "seconds": dt, "steps_per_s": steps / dt, "episodes": episodes, "wins": wins,
            "new_game_reset_s": mean(new_resets), "seen_game_reset_s": mean(old_resets)}


def upstream_env(data_path: Path, planner: bool):
    """Build the env exactly as AlfredTWEnv does for training (batch_size=1)."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    config = {
        "env": {"goal_desc_human_anns_prob": 0.0, "task_types": [1, 2, 3, 4, 5, 6],
                "domain_randomization": False, "expert_type": "planner" if planner else "handcoded"},
        "dataset": {"data_path": str(data_path), "num_train_games": -1},
        "general": {"training_method": "dagger" if planner else "dqn"},
        "rl": {"training": {"max_nb_steps_per_episode": MAX_STEPS}},
        "dagger": {"training": {"max_nb_steps_per_episode": MAX_STEPS}},
    }
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tw = AlfredTWEnv(config, train_eval="train")
        env = tw.init_env(batch_size=1)
    return env, tw.num_games


def bench_upstream(env, steps: int, seed: int) -> dict:
    """Random play in the upstream batch env (lists of size 1)."""
    rng = random.Random(seed)
    env.seed(seed)
    t0 = time.perf_counter()
    _, infos = env.reset()
    episodes, wins = 1, 0
    for _ in range(steps):
        commands = [c for c in infos["admissible_commands"][0] if c != "help"]
        _, scores, dones, infos = env.step([rng.choice(commands)])
        wins += int(infos["won"][0])
        if dones[0]:
            _, infos = env.reset()
            episodes += 1
    dt = time.perf_counter() - t0
    return {"steps": steps, "seconds": dt, "steps_per_s": steps / dt, "episodes": episodes, "wins": wins}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="steps for ours_cold / ours_warm / ours_replay")
    parser.add_argument("--upstream-steps", type=int, default=500, help="steps for upstream (AlfredTWEnv)")
    parser.add_argument("--slow-steps", type=int, default=250, help="steps for upstream_planner / ours_uncached")
    parser.add_argument("--games-per-task", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="generated-games cache (default: derl_gym's)")
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_alfworld.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.upstream_steps, args.slow_steps = 300, 150, 60

    t_gen = time.perf_counter()
    games, data_path = make_games(args.games_per_task, args.cache_dir)
    t_gen = time.perf_counter() - t_gen
    print(f"{len(games)} generated games in {data_path} (ready in {t_gen:.1f}s)")

    results: dict[str, dict] = {}
    up, n_up = upstream_env(data_path, planner=False)
    assert n_up == len(games), f"upstream AlfredTWEnv found {n_up} games, expected {len(games)}"
    results["upstream"] = bench_upstream(up, args.upstream_steps, seed=0)
    up.close()
    up, _ = upstream_env(data_path, planner=True)
    results["upstream_planner"] = bench_upstream(up, args.slow_steps, seed=0)
    up.close()

    env = ALFWorldEnv(games=games, cache=False, max_episode_steps=MAX_STEPS)
    results["ours_uncached"] = bench_ours(env, args.slow_steps, seed=0)
    env.close()

    clear_caches()  # cold: no parsed logic, translation or transition memoised in this process
    cache = TransitionCache()
    env = ALFWorldEnv(games=games, cache=cache, max_episode_steps=MAX_STEPS)
    results["ours_cold"] = bench_ours(env, args.steps, seed=0)
    cold_stats = cache.stats()
    results["ours_warm"] = bench_ours(env, args.steps, seed=1)
    warm_stats = cache.stats()
    results["ours_replay"] = bench_ours(env, args.steps, seed=0)
    env.close()
    results["ours_cold"]["cache"] = cold_stats
    results["ours_warm"]["cache"] = {k: warm_stats[k] - cold_stats.get(k, 0) if "hits" in k or "misses" in k
                                     else warm_stats[k] for k in warm_stats}
    hits = results["ours_warm"]["cache"]["transition_hits"]
    misses = results["ours_warm"]["cache"]["transition_misses"]
    results["ours_warm"]["transition_hit_rate"] = hits / max(1, hits + misses)

    # first reset of each game with the SAS texts on disk (a new process in a warm cache folder)
    os.environ[SAS_CACHE_ENV] = "1"
    for path in games:
        get_translation(load_game_file(path))  # fills the disk cache if needed
    clear_caches()
    env = ALFWorldEnv(games=games, cache=TransitionCache(), max_episode_steps=MAX_STEPS)
    t = time.perf_counter()
    for i in range(len(games)):
        env.reset(options={"game": i})
    results["ours_cold"]["new_game_reset_s_disk_cache"] = (time.perf_counter() - t) / len(games)
    env.close()

    base = results["upstream"]["steps_per_s"]
    base_planner = results["upstream_planner"]["steps_per_s"]
    ratios = {
        "warm_vs_upstream": results["ours_warm"]["steps_per_s"] / base,
        "replay_vs_upstream": results["ours_replay"]["steps_per_s"] / base,
        "cold_vs_upstream": results["ours_cold"]["steps_per_s"] / base,
        "warm_vs_upstream_planner": results["ours_warm"]["steps_per_s"] / base_planner,
        "cold_vs_upstream_planner": results["ours_cold"]["steps_per_s"] / base_planner,
        "uncached_vs_upstream_planner": results["ours_uncached"]["steps_per_s"] / base_planner,
    }

    print(f"\n{'env':<18}{'steps':>7}{'seconds':>9}{'steps/s':>10}{'episodes':>10}{'wins':>6}")
    for name, r in results.items():
        print(f"{name:<18}{r['steps']:>7}{r['seconds']:>9.2f}{r['steps_per_s']:>10.1f}{r['episodes']:>10}{r['wins']:>6}")
    print(f"\nwarm-cache transition hit rate: {results['ours_warm']['transition_hit_rate']:.1%}")
    cold = results["ours_cold"]
    print(f"ours_cold reset: {cold['new_game_reset_s']:.3f}s for a game not seen before in this process, "
          f"{cold['seen_game_reset_s'] or 0:.4f}s for a seen game, "
          f"{cold['new_game_reset_s_disk_cache']:.3f}s for a new game with the SAS disk cache")
    for name, value in ratios.items():
        print(f"ratio {name:<30} {value:8.2f}x")
    print("(upstream = AlfredTWEnv's training env without planner; *_planner = with the planner expert, "
          "which computes what our info['progress'] needs)")

    report = {
        "benchmark": "bench_alfworld",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_at_end": list(os.getloadavg()),
                    "note": "shared machine; absolute numbers vary with load, ratios are from one run"},
        "games": len(games), "games_per_task": args.games_per_task, "max_episode_steps": MAX_STEPS,
        "policy": "uniform random over admissible commands (no 'help'); resets included",
        "results": results, "ratios": ratios, "goal": ">= 5x (warm vs upstream)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
