"""Learning check of the language-model inner agent (TRL GRPO through run_inner), CPU, tiny models.

Two checks, several seeds, before/after figures:

- ``gsm8k``: does GRPO move the model the way the Meta-Reward says? The tiny model is first partly
  cold-started (SFT on 64 GSM8K train solutions, cached; a random model never writes a whole
  ``\boxed{...}``, so GRPO would see no signal). For each seed it is then trained on ``gsm8k-lm-tiny`` under ``g2`` (weights the ``\\boxed{}`` format primitive) and under
  ``g3`` (ignores it); the rate of each primitive on sampled answers (temperature 1, validation
  problems) is measured before and after. Expected: g2's rate rises under ``g2`` and not under ``g3``.
- ``alfworld``: on ``alfworld-lm-tiny``, the cold-started tiny LM (SFT on the games' walkthroughs,
  cached) after GRPO against the same model before GRPO (the same pipeline with learning rate 0)
  and against a uniformly random admissible-command policy, all by greedy validation success.

Writes ``benchmarks/results/bench_lm_learning.json`` and ``.md`` (``bench_lm_learning_<check>.*`` when one
check runs) and prints them. Both checks with 3 seeds take about 10 minutes on a busy 2-core machine
(gsm8k ~5 min, alfworld ~5 min including a ~2 min cold start the first time, then cached).

    .venv/bin/python benchmarks/bench_lm_learning.py                       # both, seeds 0 1 2
    .venv/bin/python benchmarks/bench_lm_learning.py --checks gsm8k --seeds 0
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derl_gym.runtime.inner import run_inner  # noqa: E402
from derl_gym.runtime.presets import get_preset  # noqa: E402


def _agent(spec, **algo):
    return spec.agent.__class__(**{**spec.agent.__dict__, "algo_kwargs": {**spec.agent.algo_kwargs, **algo}})


def primitive_rates(model_path: str, spec, problems: int, samples: int, seed: int) -> list[float]:
    """Return the mean of each math primitive over ``samples`` sampled answers to ``problems`` validation problems."""
    import torch

    from derl_gym.agents.inner.trl_trainer import math_prompt
    from derl_gym.envs.math import math_primitives
    from derl_gym.models import load_causal_lm
    from derl_gym.rewards.primitives import Step, Trajectory

    model, tok = load_causal_lm(model_path, device="cpu")
    tok.padding_side = "left"
    env = spec.validation_env.make()
    prims = math_primitives()
    torch.manual_seed(seed)
    values = []
    n = min(problems, env.unwrapped.num_problems)
    for i in range(n):
        obs, info0 = env.reset(options={"index": i})
        text = tok.apply_chat_template(math_prompt(obs), tokenize=False, add_generation_prompt=True)
        enc = tok([text] * samples, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=int(spec.agent.algo_kwargs["max_completion_length"]),
                                 do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for answer in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True):
            env.reset(options={"index": i})
            _, r, term, trunc, info = env.step(answer)
            values.append(prims.compute(Trajectory(obs, info0, [Step(answer, obs, r, term, trunc, info, info0)])))
    env.close()
    return [float(v) for v in np.mean(values, axis=0)]


def check_gsm8k(seeds, steps: int, problems: int, samples: int, cold_start: dict, lr: float, length: int) -> dict:
    base = get_preset("gsm8k-lm-tiny")
    g, p = base.agent.algo_kwargs["num_generations"], base.agent.algo_kwargs["prompts_per_step"]
    spec = base.replace(eval_episodes=4, agent=base.agent.__class__(
        **{**base.agent.__dict__, "total_timesteps": steps * g * p,
           "algo_kwargs": {**base.agent.algo_kwargs, "cold_start": cold_start, "learning_rate": lr,
                           "max_completion_length": length}}))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # "before" = the cold-started model itself (the same pipeline with learning rate 0)
        frozen = run_inner(spec.replace(agent=_agent(spec, learning_rate=0.0)), "g2", seed=0, save_model=f"{tmp}/before")
        if not frozen.ok:
            raise RuntimeError(frozen.error)
        before = primitive_rates(f"{tmp}/before", spec, problems, samples, seed=12345)
        for seed in seeds:
            for formula in ("g2", "g3"):
                start = time.perf_counter()
                path = f"{tmp}/{formula}-{seed}"
                result = run_inner(spec, formula, seed=seed, save_model=path)
                if not result.ok:
                    raise RuntimeError(result.error)
                after = primitive_rates(path, spec, problems, samples, seed=12345)
                rows.append({"seed": seed, "formula": formula, "before": before, "after": after,
                             "train_seconds": result.extra["train_seconds"], "grpo_steps": result.extra["grpo_steps"],
                             "mean_meta_reward": result.extra["mean_meta_reward"],
                             "wall_seconds": time.perf_counter() - start})
                print(f"gsm8k seed {seed} {formula}: g2 {before[1]:.3f} -> {after[1]:.3f}, "
                      f"g3 {before[2]:.3f} -> {after[2]:.3f}", flush=True)
    return {"steps": steps, "problems": problems, "samples": samples, "cold_start": cold_start, "learning_rate": lr,
            "max_completion_length": length, "cold_start_info": frozen.extra.get("cold_start"), "rows": rows}


def random_policy(spec, episodes: int, seed: int) -> float:
    """Return the uniformly random admissible-command policy's success on the validation games of ``spec``."""
    from derl_gym.agents.inner.trl_trainer import instance_count, instance_options

    env = spec.validation_env.make()
    rng = np.random.default_rng(seed)
    order = [int(i) for i in np.random.default_rng(seed + 100_003).permutation(instance_count(env))]
    wins = []
    for k in range(episodes):
        _, info = env.reset(options=instance_options(env, order[k % len(order)]))
        while True:
            _, _, term, trunc, info = env.step(str(rng.choice(info["admissible_commands"])))
            if term or trunc:
                wins.append(bool(info.get("won")))
                break
    env.close()
    return float(np.mean(wins))


def check_alfworld(seeds, steps: int, episodes: int, cold_start: dict, model: str = "tiny",
                   turns: int | None = None) -> dict:
    from derl_gym.runtime.spec import EnvSpec

    base = get_preset("alfworld-lm-tiny", model=model)
    if turns:
        longer = lambda e: EnvSpec(e.env_id, {**e.kwargs, "max_episode_steps": int(turns)})  # noqa: E731
        base = base.replace(train_env=longer(base.train_env), validation_env=longer(base.validation_env))
    g = base.agent.algo_kwargs["num_generations"] * base.agent.algo_kwargs["prompts_per_step"]
    formula = "g1 + 0.5*(g2 + g3 + g4)/3"
    rows = []
    for seed in seeds:
        spec = base.replace(eval_episodes=episodes, agent=base.agent.__class__(
            **{**base.agent.__dict__, "total_timesteps": steps * g,
               "algo_kwargs": {**base.agent.algo_kwargs, "cold_start": cold_start}}))
        frozen = spec.replace(agent=_agent(spec, learning_rate=0.0))
        start = time.perf_counter()
        before = run_inner(frozen, formula, seed=seed)
        after = run_inner(spec, formula, seed=seed)
        if not (before.ok and after.ok):
            raise RuntimeError(before.error or after.error)
        rnd = random_policy(spec, episodes, seed)
        rows.append({"seed": seed, "random": rnd, "cold_start": before.score, "cold_start_grpo": after.score,
                     "train_success": after.extra["train_success"], "mean_meta_reward": after.extra["mean_meta_reward"],
                     "cold_start_info": {k: v for k, v in after.extra.get("cold_start", {}).items() if k != "losses"},
                     "wall_seconds": time.perf_counter() - start})
        print(f"alfworld seed {seed}: random {rnd:.3f}, cold start {before.score:.3f}, "
              f"cold start + GRPO {after.score:.3f}", flush=True)
    return {"steps": steps, "episodes": episodes, "formula": formula, "cold_start": cold_start, "model": model,
            "turns": turns or base.train_env.kwargs["max_episode_steps"], "rows": rows}


def _ms(values):
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values) if len(values) > 1 else 0.0:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", nargs="+", default=["gsm8k", "alfworld"], choices=["gsm8k", "alfworld"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gsm8k-steps", type=int, default=32)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--gsm8k-cold-start", default='{"examples": 64, "epochs": 10, "learning_rate": 0.003, '
                        '"max_length": 384}', help="JSON cold_start settings of the gsm8k check (a partial SFT that "
                        "leaves the boxed format at ~15%%)")
    parser.add_argument("--gsm8k-lr", type=float, default=2e-4)
    parser.add_argument("--gsm8k-length", type=int, default=96, help="completion tokens")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--alfworld-steps", type=int, default=12)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--alfworld-model", default="tiny", help="e.g. tiny:layers=4,hidden=128 (slower, stronger)")
    parser.add_argument("--alfworld-turns", type=int, default=None, help="episode limit (default: the preset's 6)")
    parser.add_argument("--cold-start", default='{"examples": 64, "epochs": 3, "learning_rate": 0.003}',
                        help="JSON cold_start settings of the alfworld check")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    payload: dict = {"platform": platform.platform(), "torch": torch.__version__, "args": vars(args)}
    lines = ["# bench_lm_learning (tiny Qwen2 model, CPU, TRL GRPO through run_inner)", ""]
    if "gsm8k" in args.checks:
        res = payload["gsm8k"] = check_gsm8k(args.seeds, args.gsm8k_steps, args.problems, args.samples,
                                             json.loads(args.gsm8k_cold_start), args.gsm8k_lr, args.gsm8k_length)
        lines += [f"## GSM8K: primitive rates on sampled answers ({res['problems']} validation problems x "
                  f"{res['samples']} samples), {res['steps']} GRPO steps, seeds {args.seeds}", "",
                  "| formula | g2 boxed before | g2 boxed after | g3 steps before | g3 steps after |", "|---|---|---|---|---|"]
        for formula in ("g2", "g3"):
            rows = [r for r in res["rows"] if r["formula"] == formula]
            lines.append(f"| `{formula}` | {_ms([r['before'][1] for r in rows])} | {_ms([r['after'][1] for r in rows])} | "
                         f"{_ms([r['before'][2] for r in rows])} | {_ms([r['after'][2] for r in rows])} |")
        lines.append("")
    if "alfworld" in args.checks:
        res = payload["alfworld"] = check_alfworld(args.seeds, args.alfworld_steps, args.episodes,
                                                   json.loads(args.cold_start), args.alfworld_model, args.alfworld_turns)
        rows = res["rows"]
        lines += [f"## alfworld-lm-tiny: greedy validation success ({res['episodes']} episodes, {res['turns']} turns), "
                  f"model `{res['model']}`, formula `{res['formula']}`, {res['steps']} GRPO steps, seeds {args.seeds}", "",
                  "| random policy | cold start (before GRPO) | cold start + GRPO |", "|---|---|---|",
                  f"| {_ms([r['random'] for r in rows])} | {_ms([r['cold_start'] for r in rows])} | "
                  f"{_ms([r['cold_start_grpo'] for r in rows])} |", ""]
    payload["wall_seconds"] = time.perf_counter() - start
    lines.append(f"wall time {payload['wall_seconds']:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_lm_learning" + ("" if len(set(args.checks)) == 2 else f"_{args.checks[0]}")
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{stem}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
