"""Where the time of one inner run goes: cProfile of ``run_inner`` broken down by phase and component.

Profiles one :func:`derl_gym.runtime.inner.run_inner` on ``alfworld-tiny`` (``--preset alfworld-l2``
takes several minutes more) with formula ``g1`` and prints, then writes
``benchmarks/results/profile_inner[_<label>].{json,md}``, a breakdown of the wall time into:

- **phases** (one ``cProfile.Profile`` per phase; entering a phase switches the active profiler, so
  phases never overlap): ``rollout`` (``SB3Trainer.train`` minus the PPO update: collecting
  experience), ``ppo_update`` (``MaskablePPO.train``: minibatch forward/backward and Adam),
  ``evaluation`` (``SB3Trainer.evaluate``: validation episodes), ``setup`` (the rest of
  ``run_inner``: building envs, the model, imports);
- **components** inside the rollout and evaluation phases, from cProfile cumulative times of the
  functions that delimit them (exclusive: nested components are subtracted from their parent):
  ``env`` (``ALFWorldEnv.step/reset``: engine and transition cache), ``gym_wrappers``
  (``TimeLimit``, ``OrderEnforcing``, ``PassiveEnvChecker`` around it), ``meta_reward``
  (``MetaRewardWrapper``: trajectory and primitives), ``text_encoding``
  (``TextActionWrapper._encode``: hashing texts, candidate rows, features), ``text_wrapper_other``
  (the rest of ``TextActionWrapper.step/reset``), ``vec_env`` (SB3's ``DummyVecEnv``: copying
  observations, resets), ``action_masks`` (SB3 asking the wrapper for masks), ``policy_forward``
  (the policy on the rollout path; ``predict`` in evaluation), ``sb3_rollout_other`` (buffer,
  callbacks, tensor conversion: the rest of ``collect_rollouts``).

Figures under cProfile are inflated for Python-heavy code (every call is counted), so the shares
matter more than the seconds; ``--no-profile`` measures plain wall time per phase instead.

    .venv/bin/python benchmarks/profile_inner.py                     # alfworld-tiny, ~2-4 min
    .venv/bin/python benchmarks/profile_inner.py --label before       # keep a named copy
    .venv/bin/python benchmarks/profile_inner.py --preset alfworld-l2 # minutes more
    .venv/bin/python benchmarks/profile_inner.py --total-timesteps 4000   # quick look
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")

PHASES = ("setup", "rollout", "ppo_update", "evaluation")


class PhaseProfiler:
    """One cProfile.Profile per phase; :meth:`wrap` makes a function run under its phase's profiler."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.profiles = {name: cProfile.Profile() for name in PHASES}
        self.wall = {name: 0.0 for name in PHASES}
        #: process CPU seconds per phase (less sensitive than wall time to other work on the machine)
        self.cpu = {name: 0.0 for name in PHASES}
        self._stack: list[tuple[str, float]] = []
        self._cpu_since = 0.0

    def _charge_cpu(self) -> None:
        now = time.process_time()
        if self._stack:
            self.cpu[self._stack[-1][0]] += now - self._cpu_since
        self._cpu_since = now

    def _switch(self, name: str | None) -> None:
        if not self.enabled:
            return
        if self._stack:
            self.profiles[self._stack[-1][0]].disable()
        if name is not None:
            self.profiles[name].enable()

    def enter(self, name: str) -> None:
        self._charge_cpu()
        now = time.perf_counter()
        if self._stack:
            outer, since = self._stack[-1]
            self.wall[outer] += now - since
        self._switch(None)
        if self.enabled:
            self.profiles[name].enable()
        self._stack.append((name, now))

    def leave(self) -> None:
        self._charge_cpu()
        now = time.perf_counter()
        name, since = self._stack.pop()
        self.wall[name] += now - since
        if self.enabled:
            self.profiles[name].disable()
        if self._stack:
            outer, _ = self._stack[-1]
            self._stack[-1] = (outer, now)
            if self.enabled:
                self.profiles[outer].enable()

    def wrap(self, fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.enter(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        return wrapper


def _cum(stats: pstats.Stats, match: Callable[[str, str], bool]) -> float:
    """Sum of cumulative times of the functions ``match(filename, funcname)`` selects.

    Recursive or mutually nested matches would be double counted; the selectors below pick
    functions that do not call one another (e.g. ``ALFWorldEnv.step`` never calls ``reset``).
    """
    total = 0.0
    for (filename, _line, funcname), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if match(filename, funcname):
            total += ct
    return total


def _own(stats: pstats.Stats, path_part: str) -> float:
    """Sum of own times (tottime) of the functions whose file path contains ``path_part``."""
    return sum(tt for (filename, _l, _f), (_cc, _nc, tt, _ct, _c) in stats.stats.items()  # type: ignore[attr-defined]
               if path_part in filename)


def _in(path_part: str, *names: str) -> Callable[[str, str], bool]:
    norm = path_part.replace("/", os.sep)
    return lambda filename, funcname: norm in filename and funcname in names


def _cum_at(stats: pstats.Stats, path_part: str, funcname: str, line: int) -> float:
    """Cumulative time of the one function defined at ``path_part:line`` named ``funcname``."""
    norm = path_part.replace("/", os.sep)
    return sum(ct for (filename, lineno, name), (_cc, _nc, _tt, ct, _c) in stats.stats.items()  # type: ignore[attr-defined]
               if norm in filename and name == funcname and lineno == line)


def _policy_forward_line() -> int:
    import inspect

    from derl_gym.agents.inner.policy import ActionScoringPolicy

    return inspect.getsourcelines(ActionScoringPolicy.forward)[1]


def components(stats: pstats.Stats, phase: str) -> dict[str, float]:
    """Return exclusive seconds per component of ``phase`` (see the module docstring)."""
    env = _cum(stats, _in("derl_gym/envs/alfworld/env.py", "step", "reset"))
    # gym.make's wrappers around ALFWorldEnv nest one another: count their own time (tottime)
    gym_wrappers = _own(stats, "gymnasium" + os.sep)
    meta = _cum(stats, _in("derl_gym/wrappers/meta_reward.py", "step", "reset"))
    text = _cum(stats, _in("derl_gym/wrappers/text_actions.py", "step", "reset"))
    # _encode calls _encode_fast (the cached path): count the outer one only
    encode = _cum(stats, _in("derl_gym/wrappers/text_actions.py", "_encode"))
    masks = _cum(stats, _in("stable_baselines3/common/vec_env/dummy_vec_env.py", "env_method"))
    if phase == "rollout":
        outer = _cum(stats, _in("sb3_contrib/ppo_mask/ppo_mask.py", "collect_rollouts"))
        # ActionScoringPolicy.forward (the inline fast path) falls back to the parent's: count the outer one
        policy = (_cum_at(stats, "derl_gym/agents/inner/policy.py", "forward", _policy_forward_line())
                  or _cum(stats, _in("sb3_contrib/common/maskable/policies.py", "forward")))
        vec_step = _cum(stats, _in("stable_baselines3/common/vec_env/dummy_vec_env.py", "step_wait", "reset"))
    else:
        outer = _cum(stats, _in("derl_gym/agents/inner/sb3_trainer.py", "evaluate"))
        policy = _cum(stats, _in("stable_baselines3/common/base_class.py", "predict"))
        policy += _cum(stats, _in("derl_gym/agents/inner/trainer.py", "_batched_choose"))
        vec_step = text  # evaluation steps the wrapper directly
    below_text = meta if meta > 0 else (env + gym_wrappers)
    out = {
        "env": env,
        "gym_wrappers": gym_wrappers,
        "meta_reward": max(0.0, meta - env - gym_wrappers) if meta > 0 else 0.0,
        "text_encoding": encode,
        "text_wrapper_other": max(0.0, text - encode - below_text),
        "vec_env": max(0.0, vec_step - text) if phase == "rollout" else 0.0,
        "action_masks": masks,
        "policy_forward": policy,
    }
    out["sb3_rollout_other" if phase == "rollout" else "eval_loop_other"] = max(
        0.0, outer - sum(v for k, v in out.items()
                         if k in ("env", "gym_wrappers", "meta_reward", "text_encoding", "text_wrapper_other",
                                  "vec_env", "action_masks", "policy_forward")))
    return out


def top_functions(stats: pstats.Stats, n: int = 25) -> list[dict[str, Any]]:
    """Return the ``n`` functions with the largest own time (tottime)."""
    rows = []
    for (filename, line, funcname), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}({funcname})",
                     "path": filename.split("site-packages/")[-1].split("/work/main/")[-1],
                     "calls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    return rows[:n]


def run(preset: str, formula: str, seed: int, total_timesteps: int | None, profile: bool,
        eval_episodes: int | None, n_envs: int | None = None) -> dict[str, Any]:
    """Profile one run_inner; return the breakdown as a dict."""
    import derl_gym.agents.inner.sb3_trainer as sb3_trainer
    from sb3_contrib import MaskablePPO

    from derl_gym.runtime.inner import run_inner
    from benchmarks._common import preset_with_n_envs

    overrides: dict[str, Any] = {}
    if total_timesteps is not None:
        overrides["total_timesteps"] = total_timesteps
    if eval_episodes is not None:
        overrides["eval_episodes"] = eval_episodes
    spec = preset_with_n_envs(preset, n_envs, **overrides)  # the same rollout size per update
    spec.prepare()

    prof = PhaseProfiler(enabled=profile)
    originals = (sb3_trainer.SB3Trainer.train, sb3_trainer.SB3Trainer.evaluate, MaskablePPO.train)
    sb3_trainer.SB3Trainer.train = prof.wrap(originals[0], "rollout")
    sb3_trainer.SB3Trainer.evaluate = prof.wrap(originals[1], "evaluation")
    MaskablePPO.train = prof.wrap(originals[2], "ppo_update")
    try:
        start = time.perf_counter()
        prof.enter("setup")
        try:
            result = run_inner(spec, formula, seed=seed)
        finally:
            prof.leave()
        wall = time.perf_counter() - start
    finally:
        sb3_trainer.SB3Trainer.train, sb3_trainer.SB3Trainer.evaluate, MaskablePPO.train = originals
    if not result.ok:
        raise RuntimeError(f"run_inner failed: {result.error}")

    phases = {name: prof.wall[name] for name in PHASES}
    breakdown: dict[str, dict[str, float]] = {}
    tops: dict[str, list] = {}
    if profile:
        for name in PHASES:
            stats = pstats.Stats(prof.profiles[name], stream=io.StringIO())
            if name in ("rollout", "evaluation"):
                breakdown[name] = components(stats, name)
            tops[name] = top_functions(stats, 20)
        merged = pstats.Stats(prof.profiles["rollout"], stream=io.StringIO())
        for name in PHASES[2:]:
            merged.add(prof.profiles[name])
        tops["all"] = top_functions(merged, 30)
    return {"preset": preset, "formula": formula, "seed": seed, "n_envs": spec.agent.n_envs, "env_steps": result.env_steps,
            "validation": result.score, "wall_seconds": wall, "profiled": profile,
            "steps_per_second_reported": result.extra.get("steps_per_second"),
            "phases": phases, "phases_cpu": {name: prof.cpu[name] for name in PHASES}, "components": breakdown, "top_functions": tops,
            "machine": platform.platform(), "python": platform.python_version(),
            "fast_path": os.environ.get("DERL_GYM_INNER_FAST", "1")}


def to_markdown(data: dict[str, Any]) -> str:
    """Return the breakdown as a markdown report."""
    total = sum(data["phases"].values()) or 1.0
    lines = [f"# Profile of one inner run ({data['preset']}, `{data['formula']}`, seed {data['seed']}, "
             f"n_envs {data.get('n_envs', 1)})", "",
             f"{data['env_steps']} env steps, validation {data['validation']:.2f}, wall {data['wall_seconds']:.1f} s"
             f" ({'under cProfile' if data['profiled'] else 'no profiler'}; fast path "
             f"DERL_GYM_INNER_FAST={data['fast_path']}); {data['machine']}.", "",
             "| phase | seconds | share | CPU seconds |", "|---|---|---|---|"]
    cpu = data.get("phases_cpu") or {}
    for name, sec in data["phases"].items():
        lines.append(f"| {name} | {sec:.1f} | {100 * sec / total:.0f}% | {cpu.get(name, float('nan')):.1f} |")
    for phase, comps in data["components"].items():
        phase_total = data["phases"][phase] or 1.0
        lines += ["", f"**{phase}** components (exclusive cProfile cumulative seconds):", "",
                  "| component | seconds | share of phase |", "|---|---|---|"]
        for name, sec in sorted(comps.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {sec:.1f} | {100 * sec / phase_total:.0f}% |")
    if data["top_functions"].get("all"):
        lines += ["", "Top functions by own time (rollout + update + evaluation):", "",
                  "| function | calls | tottime s | cumtime s |", "|---|---|---|---|"]
        for row in data["top_functions"]["all"][:20]:
            lines.append(f"| `{row['path']}:{row['function'].split('(')[-1].rstrip(')')}` | {row['calls']} | "
                         f"{row['tottime']:.2f} | {row['cumtime']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-tiny", help="alfworld-tiny (default) or alfworld-l2 (minutes)")
    parser.add_argument("--formula", default="g1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--n-envs", type=int, default=None,
                        help="envs per worker (n_steps divided to keep the rollout size); default: the preset's")
    parser.add_argument("--no-profile", action="store_true", help="plain wall time per phase, no cProfile")
    parser.add_argument("--label", default="", help="suffix of the output files (e.g. before, after)")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    data = run(args.preset, args.formula, args.seed, args.total_timesteps, not args.no_profile, args.eval_episodes,
               args.n_envs)
    data["label"] = args.label
    text = to_markdown(data)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "profile_inner" + (f"_{args.label}" if args.label else "")
    if args.preset != "alfworld-tiny":
        stem += "_" + args.preset.replace("alfworld-", "")
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str))
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
