"""The TRL GRPO inner trainer (``AgentSpec.algorithm = "grpo"``): a causal LM trained under a Meta-Reward.

The model is a Hugging Face causal LM given by ``agent.algo_kwargs["model"]``: a local folder, a
hub id, or ``"tiny"`` (:mod:`derl_gym.models.tiny`, built offline). bf16 on CUDA, fp32 on CPU;
LoRA through ``peft`` when ``lora_r > 0``; vLLM generation when ``use_vllm`` is set and vLLM is
importable (otherwise a warning and plain ``generate``).

Single turn (GSM8K, MATH). The dataset holds one row per training problem: the problem in the
chat template with the instruction to put the final answer in ``\\boxed{}``, and its index.
``GRPOTrainer(reward_funcs=[MetaRewardFunction])`` (from :mod:`derl_gym.integrations.trl`) samples
``num_generations`` completions per prompt (a GRPO group); the reward function resets a
``MetaRewardWrapper(train env)`` to that problem (``reset(options={"index": i})``), steps it with
the completion's text and returns the wrapper's reward: the Meta-Reward of the math primitives
g1..g4. The env's own reward is kept only for the training curve.

Multi turn (ALFWorld, ScienceWorld). An episode is a conversation: the observation (with the
admissible commands) comes in as a user turn, the model answers in RLVMR-style tags ending with
``<action>...</action>`` (:class:`ActionTagWrapper` hands the env the command, while
``MetaRewardWrapper`` records the whole answer, which the ``tags`` step scorer reads), the env's
feedback comes back as the next user turn, up to the episode limit. TRL's ``rollout_func`` plays
``num_generations`` episodes of the same game from the same initial state (a GRPO group, as in
verl-agent) and returns each **whole conversation as one sample, with the env's tokens masked out
of the loss** (TRL's ``env_mask``); the reward is the trajectory's Meta-Reward. Why whole
conversations rather than one sample per turn: TRL normalises advantages over fixed groups of
``num_generations`` consecutive samples, and episodes have different numbers of turns, so
per-turn samples would not form TRL's groups; with ``env_mask`` each episode is exactly one
group member, the model's own tokens get the episode's advantage, and the env's text is context only.

TRL limitation worked around: ``rollout_func`` receives only the prompts, not the dataset's
other columns, so the game index travels as an extra ``game_index`` field of the prompt's user
message (chat templates ignore unknown keys).

Validation (the meta-optimizer's reward) is greedy pass@1 with the env's *task* reward on
``eval_episodes`` instances of the validation env, never wrapped in a Meta-Reward.

``algo_kwargs`` (all optional): see :data:`DEFAULTS`. ``total_timesteps`` is the number of
training episodes (completions); GRPO steps = ``ceil(total_timesteps / (num_generations *
prompts_per_step))`` unless ``max_steps`` is given.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from derl_gym.agents.inner.registry import InnerTrainer, TrainOutput
from derl_gym.integrations.trl import MetaRewardFunction
from derl_gym.wrappers.action_tags import ActionTagWrapper, extract_action

logger = logging.getLogger(__name__)

__all__ = ["GRPOInnerTrainer", "LMAgent", "MetaRewardFunction", "ActionTagWrapper", "DEFAULTS",
           "MATH_INSTRUCTION", "AGENT_INSTRUCTION", "math_prompt", "extract_action", "grpo_settings"]

MATH_INSTRUCTION = "Solve the problem step by step. Put your final answer in \\boxed{}."
AGENT_INSTRUCTION = ("You are an agent in a text world. Think inside <planning>, <explore> or <reflection> "
                     "tags, then give exactly one command inside <action></action>.")

#: ``algo_kwargs`` of the grpo trainer and their defaults.
DEFAULTS: dict[str, Any] = {
    "model": "tiny",                 # local folder, hub id, or tiny[:k=v,...]
    "num_generations": 4,            # G: completions (episodes) per prompt (game)
    "prompts_per_step": 2,           # prompts (games) per GRPO step
    "max_steps": None,               # GRPO steps (default from total_timesteps)
    "max_completion_length": 64,     # tokens per completion (per turn, multi turn)
    "learning_rate": 1e-5,
    "beta": 0.0,                     # KL coefficient to the reference model
    "temperature": 1.0,
    "lora_r": 0,                     # > 0: train a LoRA adapter (peft) instead of all weights
    "lora_alpha": None,              # default 2 * lora_r
    "lora_dropout": 0.0,
    "use_vllm": False,
    "system_prompt": None,           # default MATH_INSTRUCTION-free system turn (None = no system turn)
    "instruction": None,             # default MATH_INSTRUCTION / AGENT_INSTRUCTION
    "max_turns": None,               # multi turn: turns per episode (default: the env's own limit)
    "eval_batch_size": 16,
    "cold_start": None,              # dict for supervised cold start (see derl_gym.agents.inner.cold_start)
    "grpo_config": None,             # dict passed to GRPOConfig as is (overrides the above)
}


def grpo_settings(agent: Any) -> dict[str, Any]:
    """Return ``DEFAULTS`` updated with ``agent.algo_kwargs``; raises ``ValueError`` naming an unknown key.

    Example:
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> settings = grpo_settings(AgentSpec(algorithm="grpo", algo_kwargs={"num_generations": 8}))
        >>> settings["num_generations"], settings["model"]
        (8, 'tiny')
        >>> grpo_settings(AgentSpec(algorithm="grpo", algo_kwargs={"generations": 8}))
        Traceback (most recent call last):
        ...
        ValueError: unknown grpo algo_kwargs ['generations']; allowed: [...]
    """
    kwargs = dict(agent.algo_kwargs)
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown grpo algo_kwargs {unknown}; allowed: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **kwargs}
    if int(settings["num_generations"]) < 2:
        raise ValueError(f"num_generations={settings['num_generations']}: GRPO needs >= 2 completions per group")
    return settings


def math_prompt(problem: str, instruction: str | None = None, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Return the chat messages of a math problem: optional system turn, then problem + instruction.

    Example:
        >>> math_prompt("What is 6*7?", system_prompt="Be brief.")
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 6*7?\\nSolve the problem step by step. Put your final answer in \\\\boxed{}.'}]
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": f"{problem}\n{instruction or MATH_INSTRUCTION}"})
    return messages


# ActionTagWrapper and extract_action live with the other wrappers (re-exported here)


def is_single_turn(env: gym.Env) -> bool:
    """True for the one-step math envs (GSM8K, MATH), False for multi-turn text worlds.

    Example:
        >>> import json, pathlib
        >>> from derl_gym.envs.math import MATHEnv
        >>> from derl_gym.envs.scienceworld import ScienceWorldEnv
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "one.jsonl")
        ...     _ = path.write_text(json.dumps({"problem": "1 + 1?", "solution": "\\\\boxed{2}"}))
        ...     math_env = MATHEnv(split=str(path))
        >>> is_single_turn(math_env), is_single_turn(ScienceWorldEnv("find-living-thing"))  # no JVM until reset
        (True, False)
    """
    from derl_gym.envs.math import _MathEnv

    return isinstance(env.unwrapped, _MathEnv)


def instance_count(env: gym.Env) -> int:
    """Return how many games (ALFWorld) or (task, variation) episodes (ScienceWorld) ``env`` serves.

    Example:
        >>> from derl_gym.envs.scienceworld import ScienceWorldEnv, split_episodes
        >>> env = ScienceWorldEnv("find-living-thing", split="validation")  # no JVM until reset
        >>> instance_count(env) == len(split_episodes("find-living-thing", "validation"))
        True
    """
    base = env.unwrapped
    if hasattr(base, "game_files"):
        return len(base.game_files)
    if hasattr(base, "episodes"):
        return len(base.episodes)
    raise TypeError(f"{type(base).__name__} is not a supported multi-turn env: the grpo trainer needs "
                    "ALFWorld (game_files) or ScienceWorld (episodes), or a one-step math env")


def instance_options(env: gym.Env, index: int) -> dict[str, Any]:
    """Return the ``reset`` options that start instance ``index`` of ``env`` (see :func:`instance_count`).

    Example:
        >>> from derl_gym.envs.scienceworld import ScienceWorldEnv
        >>> instance_options(ScienceWorldEnv("find-living-thing", split="validation"), 0)
        {'task': 'find-living-thing', 'variation': 4}
    """
    base = env.unwrapped
    if hasattr(base, "game_files"):
        return {"game": int(index)}
    task, variation = base.episodes[int(index)][:2]
    return {"task": task, "variation": int(variation)}


@dataclass
class LMAgent:
    """A trained language-model agent: ``model``, ``tokenizer``, the grpo ``settings`` and ``device``.

    Example:
        >>> from derl_gym.models import load_causal_lm
        >>> model, tokenizer = load_causal_lm("tiny", device="cpu")
        >>> agent = LMAgent(model, tokenizer, settings={"max_completion_length": 8})
        >>> agent.device, type(agent.model).__name__
        ('cpu', 'Qwen2ForCausalLM')
    """

    model: Any
    tokenizer: Any
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


# ------------------------------------------------------------------------------ reward (single turn)
# The single-turn reward function is the TRL integration's (one implementation for derl-gym's own GRPO
# runs and for anyone training elsewhere on a discovered formula): derl_gym.integrations.trl.

# ------------------------------------------------------------------------------ multi turn rollouts

def _observation_text(obs: Any, info: dict[str, Any], max_commands: int = 40) -> str:
    text = str(obs)
    commands = info.get("admissible_commands") or []
    if commands:
        shown = list(commands)[:max_commands]
        text += "\nAdmissible commands: " + ", ".join(shown)
    return text


class EpisodePlayer:
    """Plays language-model episodes on a (wrapped) text-world env, batching generation across episodes.

    ``play(model, games, greedy)`` returns one dict per game index in ``games`` with ``prompt_ids``,
    ``completion_ids``, ``env_mask`` (1 = model token), ``logprobs``, ``reward`` (the env's reward
    summed over the episode: the Meta-Reward under ``MetaRewardWrapper``), ``success`` and ``turns``.

    Example:
        >>> import gymnasium as gym, derl_gym
        >>> from derl_gym.models import load_causal_lm
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> model, tokenizer = load_causal_lm("tiny", device="cpu")
        >>> tokenizer.padding_side = "left"
        >>> settings = {**grpo_settings(AgentSpec(algorithm="grpo")), "max_completion_length": 8, "max_turns": 2}
        >>> make_env = lambda: ActionTagWrapper(gym.make("derl_gym/ScienceWorld-v0", task="find-living-thing",
        ...                                              max_episode_steps=2))
        >>> player = EpisodePlayer(make_env, tokenizer, settings, "cpu")
        >>> episode = player.play(model, [0], greedy=True, seed=0)[0]  # starts one JVM (a few seconds)
        >>> episode["turns"], len(episode["completion_ids"]) == len(episode["env_mask"]) == len(episode["logprobs"])
        (2, True)
        >>> player.close()
    """

    def __init__(self, env_factory: Any, tokenizer: Any, settings: dict[str, Any], device: str) -> None:
        self.env_factory = env_factory
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.envs: list[gym.Env] = []

    def _env(self, i: int) -> gym.Env:
        while len(self.envs) <= i:
            self.envs.append(self.env_factory())
        return self.envs[i]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _user_turn_ids(self, content: str) -> list[int]:
        """Token ids of ``\\n<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n`` via the template."""
        tok = self.tokenizer
        base = [{"role": "user", "content": "x"}]
        full = tok.apply_chat_template(base + [{"role": "assistant", "content": "y"}, {"role": "user", "content": content}],
                                       tokenize=False, add_generation_prompt=True)
        head = tok.apply_chat_template(base + [{"role": "assistant", "content": "y"}], tokenize=False)
        end = head.rfind(tok.eos_token) if tok.eos_token else -1
        if end >= 0:  # the model's turn ends at its eos token; what the template puts after it is env text
            head = head[: end + len(tok.eos_token)]
        suffix = full[len(head):] if full.startswith(head) else f"\n{content}\n"
        return self._ids(suffix)

    def play(self, model: Any, games: Sequence[int], greedy: bool, seed: int | None = None) -> list[dict[str, Any]]:
        import torch

        tok = self.tokenizer
        s = self.settings
        eos_id = tok.eos_token_id
        episodes = []
        for slot, game in enumerate(games):
            env = self._env(slot)
            obs, info = env.reset(options=instance_options(env, int(game)))
            messages = ([{"role": "system", "content": s["system_prompt"]}] if s.get("system_prompt") else [])
            messages.append({"role": "user", "content": f"{s.get('instruction') or AGENT_INSTRUCTION}\n"
                                                        f"{_observation_text(obs, info)}"})
            prompt_ids = list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])
            episodes.append({"env": env, "prompt_ids": prompt_ids, "completion_ids": [], "env_mask": [],
                             "logprobs": [], "reward": 0.0, "success": False, "turns": 0, "done": False})
        limit = s.get("max_turns")
        max_new = int(s["max_completion_length"])
        was_training = model.training
        model.eval()
        try:
            while True:
                active = [e for e in episodes if not e["done"] and (limit is None or e["turns"] < int(limit))]
                if not active:
                    break
                contexts = [e["prompt_ids"] + e["completion_ids"] for e in active]
                width = max(len(c) for c in contexts)
                pad = tok.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=self.device)
                attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=self.device)
                gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": pad, "eos_token_id": eos_id,
                                              "return_dict_in_generate": True, "output_scores": True}
                if greedy:
                    gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                else:
                    gen_kwargs.update(do_sample=True, temperature=float(s["temperature"]), top_k=0, top_p=1.0)
                with torch.no_grad():
                    out = model.generate(input_ids=input_ids, attention_mask=attention, **gen_kwargs)
                new = out.sequences[:, width:]
                scores = torch.stack(out.scores, dim=1).float().log_softmax(-1) if out.scores else None
                for row, e in enumerate(active):
                    ids = new[row].tolist()
                    if eos_id in ids:
                        ids = ids[: ids.index(eos_id) + 1]
                    else:
                        ids = [i for i in ids if i != pad]
                    lps = [float(scores[row, j, t]) for j, t in enumerate(ids)] if scores is not None else [0.0] * len(ids)
                    text = tok.decode([i for i in ids if i != eos_id], skip_special_tokens=True)
                    e["completion_ids"] += ids
                    e["env_mask"] += [1] * len(ids)
                    e["logprobs"] += lps
                    if not ids or ids[-1] != eos_id:  # close the model's turn (context only)
                        e["completion_ids"].append(eos_id)
                        e["env_mask"].append(0)
                        e["logprobs"].append(0.0)
                    obs, reward, terminated, truncated, info = e["env"].step(text)
                    e["reward"] += float(reward)
                    e["turns"] += 1
                    if terminated or truncated or (limit is not None and e["turns"] >= int(limit)):
                        e["done"] = True
                        e["success"] = bool(info.get("won", False)) or float(info.get("task_reward", 0.0)) >= 1.0
                        e["info"] = info
                    else:
                        turn = self._user_turn_ids(_observation_text(obs, info))
                        e["completion_ids"] += turn
                        e["env_mask"] += [0] * len(turn)
                        e["logprobs"] += [0.0] * len(turn)
        finally:
            model.train(was_training)
        for e in episodes:
            if not e["done"]:  # stopped by max_turns before the env ended: score the trajectory so far
                e["success"] = False
                compute = getattr(e["env"], "compute", None)
                if callable(compute) and getattr(e["env"], "mode", "episode") == "episode":
                    e["reward"] = float(compute()[1])
            # the conversation must end on a model token for TRL's truncation check
            while e["env_mask"] and e["env_mask"][-1] == 0:
                e["completion_ids"].pop(); e["env_mask"].pop(); e["logprobs"].pop()
            if not e["completion_ids"]:
                e["completion_ids"], e["env_mask"], e["logprobs"] = [eos_id], [1], [0.0]
        return episodes

    def close(self) -> None:
        """Close every env this player made."""
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                logger.debug("closing an episode env failed", exc_info=True)
        self.envs = []


class _MultiTurnRollout:
    """TRL ``rollout_func``: one episode per (duplicated) prompt; returns ids, masks and rewards."""

    def __init__(self, player: EpisodePlayer) -> None:
        self.player = player
        self.pending: list[float] = []
        self.env_steps = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        games = [int(p[-1]["game_index"]) for p in prompts]
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        episodes = self.player.play(model, games, greedy=False)
        self.pending += [float(e["success"]) for e in episodes]
        self.env_steps += sum(e["turns"] for e in episodes)
        return {"prompt_ids": [e["prompt_ids"] for e in episodes],
                "completion_ids": [e["completion_ids"] for e in episodes],
                "logprobs": [e["logprobs"] for e in episodes],
                "env_mask": [e["env_mask"] for e in episodes],
                "episode_reward": [e["reward"] for e in episodes]}

    def drain(self) -> list[float]:
        out, self.pending = self.pending, []
        return out


def _episode_reward(prompts: Any = None, completions: Any = None, episode_reward: Sequence[float] = (),
                    **kwargs: Any) -> list[float]:
    """TRL reward function of the multi-turn path: the Meta-Reward the rollout recorded per episode."""
    return [float(r) for r in episode_reward]


_episode_reward.__name__ = "meta_reward"


# ------------------------------------------------------------------------------ the trainer

def _vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


class _CurveCallback:
    """Builds the ``(env_steps, mean training task success)`` curve, one point per GRPO step."""

    def __init__(self, source: Any, steps_per_item: int = 1) -> None:
        from transformers import TrainerCallback

        outer = self
        self.curve: list[tuple[int, float]] = []
        self.successes: list[float] = []
        self.env_steps = 0
        self.source = source

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                done = outer.source.drain()
                if done:
                    outer.successes += done
                    outer.env_steps = int(getattr(outer.source, "env_steps", 0)) or len(outer.successes)
                    outer.curve.append((outer.env_steps, float(np.mean(done))))
                return control

        self.callback = Callback()


def _example_spec(data_dir: str, algo_kwargs: dict[str, Any] | None = None, **agent_kwargs: Any) -> Any:
    """Return a GRPO spec with the tiny model on a 10-problem GSM8K written into ``data_dir``, for the examples
    of the LM inner loop (here and in :mod:`~derl_gym.agents.inner.cold_start`).

    ``gsm8k/train.jsonl`` holds "What is i + 1?" for i = 0..9, each answer with a ``<<i+1=...>>`` calculator
    annotation; the spec trains on its 80% ``train`` split and validates on the 20% ``validation`` split.
    ``algo_kwargs`` are added to ``{"model": "tiny"}``, ``agent_kwargs`` go to the ``AgentSpec``.
    """
    import json
    from pathlib import Path

    from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, PrimitiveSpec

    (Path(data_dir) / "gsm8k").mkdir()
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
            for i in range(10)]
    (Path(data_dir) / "gsm8k" / "train.jsonl").write_text("\n".join(map(json.dumps, rows)))

    def env(split: str) -> EnvSpec:
        return EnvSpec("derl_gym/GSM8K-v0", {"split": split, "data_dir": data_dir})

    return InnerLoopSpec(name="demo", train_env=env("train"), validation_env=env("validation"),
                         primitives=PrimitiveSpec("derl_gym.envs.math:math_primitives"),
                         agent=AgentSpec(algorithm="grpo", algo_kwargs={"model": "tiny", **(algo_kwargs or {})},
                                         **agent_kwargs))


class GRPOInnerTrainer(InnerTrainer):
    """An :class:`InnerTrainer` training a causal LM with TRL's ``GRPOTrainer`` (see the module docstring).

    Example:
        >>> from derl_gym.envs.math import math_primitives
        >>> from derl_gym.rewards import MetaReward
        >>> tmp = tempfile.TemporaryDirectory()
        >>> spec = _example_spec(tmp.name, {"max_steps": 1, "max_completion_length": 8}, total_timesteps=8, device="cpu")
        >>> trainer = GRPOInnerTrainer()
        >>> out = trainer.train(spec, MetaReward("g1 + 0.5*g2", 4), math_primitives(), seed=0)  # one GRPO step
        >>> type(out.agent).__name__, out.env_steps, out.extra["grpo_steps"]
        ('LMAgent', 8, 1)
        >>> trainer.evaluate(out.agent, spec, spec.validation_env, episodes=2, seed=0)["episodes"]
        2
        >>> trainer.close(out.agent); tmp.cleanup()
    """

    def _load(self, spec: Any, settings: dict[str, Any], init_model: str | None):
        from derl_gym.models import load_causal_lm, pick_device

        device = pick_device(spec.agent.device)
        source = init_model or settings["model"]
        if init_model and not os.path.exists(init_model):
            raise FileNotFoundError(f"init_model {init_model!r} does not exist; pass a folder written by "
                                    "run_inner(save_model=...)")
        model, tokenizer = load_causal_lm(source, device=device)
        tokenizer.padding_side = "left"
        return model, tokenizer, device

    def train(self, spec: Any, meta_reward: Any, primitives: Any, seed: int,
              init_model: str | None = None) -> TrainOutput:
        """Cold start (optional), then GRPO under ``meta_reward``; returns the :class:`LMAgent` and its curve."""
        from datasets import Dataset
        from transformers.trainer_callback import PrinterCallback, ProgressCallback
        from trl import GRPOConfig, GRPOTrainer

        from derl_gym.wrappers.meta_reward import MetaRewardWrapper

        settings = grpo_settings(spec.agent)
        model, tokenizer, device = self._load(spec, settings, init_model)
        extra: dict[str, Any] = {"model": str(settings["model"]), "device": device}
        if settings.get("cold_start") and not init_model:
            from derl_gym.agents.inner.cold_start import cold_start

            model, info = cold_start(model, tokenizer, spec, settings, seed=seed, device=device)
            extra["cold_start"] = info

        probe = spec.train_env.make()
        single = is_single_turn(probe)
        G, P = int(settings["num_generations"]), int(settings["prompts_per_step"])
        if single:
            wrapped = MetaRewardWrapper(probe, meta_reward, primitives, mode=spec.reward_mode)
            n = probe.unwrapped.num_problems
            rows = []
            for i in range(n):
                obs, _ = probe.reset(options={"index": i})
                rows.append({"prompt": math_prompt(obs, settings["instruction"], settings["system_prompt"]),
                             "problem_index": i})
            reward_fn: Any = MetaRewardFunction(wrapped)
            reward_funcs, rollout, source = [reward_fn], None, reward_fn
        else:
            n = instance_count(probe)
            probe.close()
            factory = _WrappedEnvFactory(spec, meta_reward.text)
            player = EpisodePlayer(factory, tokenizer, settings, device)
            rows = [{"prompt": [{"role": "user", "content": f"game {i}", "game_index": i}]} for i in range(n)]
            rollout = _MultiTurnRollout(player)
            reward_funcs, source = [_episode_reward], rollout
        max_steps = settings["max_steps"] or max(1, math.ceil(int(spec.agent.total_timesteps) / (G * P)))
        use_vllm = bool(settings["use_vllm"])
        if use_vllm and not _vllm_available():
            logger.warning("use_vllm=True but vllm is not importable; generating with transformers instead")
            use_vllm = False
        output_dir = tempfile.mkdtemp(prefix="derl-grpo-")
        config_kwargs: dict[str, Any] = dict(
            output_dir=output_dir, per_device_train_batch_size=G * P, num_generations=G,
            max_completion_length=int(settings["max_completion_length"]),
            max_steps=int(max_steps), learning_rate=float(settings["learning_rate"]), beta=float(settings["beta"]),
            temperature=float(settings["temperature"]), logging_steps=1, report_to="none", save_strategy="no",
            use_cpu=not device.startswith("cuda"), bf16=device.startswith("cuda"), seed=int(seed), data_seed=int(seed),
            disable_tqdm=True, dataloader_num_workers=0, use_vllm=use_vllm, top_k=0,
            gradient_checkpointing=device.startswith("cuda"),  # saves GPU memory; only slows the CPU
        )
        config_kwargs.update(settings.get("grpo_config") or {})
        peft_config = None
        if int(settings["lora_r"] or 0) > 0:
            from peft import LoraConfig

            r = int(settings["lora_r"])
            peft_config = LoraConfig(r=r, lora_alpha=int(settings["lora_alpha"] or 2 * r),
                                     lora_dropout=float(settings["lora_dropout"]), target_modules="all-linear",
                                     task_type="CAUSAL_LM")
        curve = _CurveCallback(source)
        try:
            # transformers 5 deprecates the ``gradient_checkpointing`` name that TRL 1.16 still reads
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
                warnings.filterwarnings("ignore", message=r"You are using 'rollout_func'", category=UserWarning)
                trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=GRPOConfig(**config_kwargs),
                                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                      callbacks=[curve.callback], peft_config=peft_config, rollout_func=rollout)
                for cb in (PrinterCallback, ProgressCallback):
                    trainer.remove_callback(cb)
                start = time.perf_counter()
                trainer.train()
                train_seconds = time.perf_counter() - start
                trained = trainer.model
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)
            if single:
                wrapped.close()
            else:
                player.close()
        successes = curve.successes
        env_steps = int(getattr(source, "env_steps", 0)) or len(successes)
        steps = int(trainer.state.global_step)
        extra.update({
            "train_episodes": len(successes),
            "train_success": float(np.mean(successes)) if successes else 0.0,
            "train_seconds": train_seconds,
            "steps_per_second": env_steps / train_seconds if train_seconds > 0 else 0.0,
            "grpo_steps": steps,
            "grpo_steps_per_second": steps / train_seconds if train_seconds > 0 else 0.0,
            "mean_meta_reward": float(np.mean([h["reward"] for h in trainer.state.log_history if "reward" in h]))
            if any("reward" in h for h in trainer.state.log_history) else 0.0,
        })
        agent = LMAgent(model=trained, tokenizer=tokenizer, settings=settings, device=device)
        return TrainOutput(agent=agent, curve=list(curve.curve), env_steps=env_steps, extra=extra)

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self, agent: LMAgent, spec: Any, env_spec: Any, episodes: int, seed: int) -> dict[str, Any]:
        """Greedy pass@1 with the env's task reward (no Meta-Reward); returns score, episodes, mean_length, env_steps."""
        env = env_spec.make()
        try:
            if is_single_turn(env):
                return self._evaluate_single(agent, env, episodes, seed)
            return self._evaluate_multi(agent, env, env_spec, episodes, seed)
        finally:
            env.close()

    def _evaluate_single(self, agent: LMAgent, env: gym.Env, episodes: int, seed: int) -> dict[str, Any]:
        import torch

        tok, s = agent.tokenizer, agent.settings
        n = min(int(episodes), env.unwrapped.num_problems)
        ids = [p.problem_id for p in env.unwrapped.problems]
        chosen: list[tuple[int, str]] = []
        for k in range(n):
            obs, info = env.reset(seed=seed if k == 0 else None)
            chosen.append((ids.index(info["problem_id"]), obs))
        texts = [tok.apply_chat_template(math_prompt(obs, s.get("instruction"), s.get("system_prompt")),
                                         tokenize=False, add_generation_prompt=True) for _, obs in chosen]
        answers: list[str] = []
        model = agent.model
        was_training = model.training
        model.eval()
        batch = max(1, int(s.get("eval_batch_size") or 16))
        try:
            for start in range(0, len(texts), batch):
                enc = tok(texts[start:start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(agent.device) for k, v in enc.items()}
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=int(s["max_completion_length"]), do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            model.train(was_training)
        successes, lengths = [], []
        for (index, _), answer in zip(chosen, answers):
            env.reset(options={"index": index})
            _, reward, _, _, info = env.step(answer)
            successes.append(int(bool(info.get("won", False)) or float(reward) >= 1.0))
            lengths.append(1)
        return {"score": float(np.mean(successes)) if successes else 0.0, "episodes": len(successes),
                "mean_length": 1.0 if lengths else 0.0, "env_steps": len(lengths)}

    def _evaluate_multi(self, agent: LMAgent, env: gym.Env, env_spec: Any, episodes: int, seed: int) -> dict[str, Any]:
        n_games = instance_count(env)
        order = [int(i) for i in np.random.default_rng(seed).permutation(n_games)]
        games = [order[k % n_games] for k in range(int(episodes))]
        player = EpisodePlayer(lambda: ActionTagWrapper(env_spec.make()), agent.tokenizer, agent.settings, agent.device)
        try:
            results = []
            batch = max(1, int(agent.settings.get("eval_batch_size") or 16))
            for start in range(0, len(games), batch):
                results += player.play(agent.model, games[start:start + batch], greedy=True)
        finally:
            player.close()
        successes = [int(e["success"]) for e in results]
        lengths = [e["turns"] for e in results]
        return {"score": float(np.mean(successes)) if successes else 0.0, "episodes": len(successes),
                "mean_length": float(np.mean(lengths)) if lengths else 0.0, "env_steps": int(sum(lengths))}

    # -------------------------------------------------------------------------- persistence
    def save(self, agent: LMAgent, path: str) -> str:
        """Save the (LoRA-merged) model and tokenizer with ``save_pretrained`` (safetensors) in folder ``path``."""
        model = agent.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            agent.model = model
        os.makedirs(path, exist_ok=True)
        model.save_pretrained(path)
        agent.tokenizer.save_pretrained(path)
        return path

    def load(self, spec: Any, path: str) -> LMAgent:
        """Return an :class:`LMAgent` for the folder ``path`` written by :meth:`save`."""
        from derl_gym.models import load_causal_lm, pick_device

        if not os.path.isdir(path):
            raise FileNotFoundError(f"no saved language-model agent at {path!r}; pass a folder returned by save()")
        device = pick_device(spec.agent.device)
        model, tokenizer = load_causal_lm(path, device=device)
        tokenizer.padding_side = "left"
        return LMAgent(model=model, tokenizer=tokenizer, settings=grpo_settings(spec.agent), device=device)

    def close(self, agent: LMAgent) -> None:
        """Drop the model and free cached GPU memory."""
        agent.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            logger.debug("emptying the CUDA cache failed", exc_info=True)


class _WrappedEnvFactory:
    """``MetaRewardWrapper(ActionTagWrapper(train env))`` for each multi-turn episode slot."""

    def __init__(self, spec: Any, expression: str) -> None:
        self.spec = spec
        self.expression = expression

    def __call__(self) -> gym.Env:
        from derl_gym.wrappers.meta_reward import MetaRewardWrapper

        env = ActionTagWrapper(self.spec.train_env.make())
        return MetaRewardWrapper(env, self.expression, self.spec.primitives.build(), mode=self.spec.reward_mode)
