"""Supervised cold start of language-model inner agents (TRL ``SFTTrainer``) on expert trajectories.

Expert data comes from the training env itself:

- GSM8K / MATH: the train problems' reference solutions (GSM8K's ``<<48/2=24>>`` calculator notes
  removed and the ``#### 72`` line written as ``\\boxed{72}``; MATH solutions already box the answer);
- ALFWorld: every game's stored walkthrough, played through the env to collect the observations;
- ScienceWorld: the simulator's gold action sequence (``reset(options={"gold_path": True})``).

Each expert action becomes one prompt-completion sample (the conversation so far -> the expert's
answer in RLVMR tags), so the loss covers only the expert's tokens (TRL's completion-only loss).
The fine-tuned model is cached under ``cache_dir()/cold-start/<key>``, where the key hashes the
model, the cold-start settings, the train env spec and the library versions, not the formula or
the inner seed: every inner run of a preset starts from the same cold-started model.

``algo_kwargs["cold_start"]`` (a dict; ``True`` means all defaults): ``examples`` (expert
instances, default 64), ``epochs`` (2), ``learning_rate`` (1e-4), ``batch_size`` (8),
``max_length`` (1024 tokens), ``seed`` (0), ``cache`` (True).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["cold_start", "expert_samples", "COLD_START_DEFAULTS"]

COLD_START_DEFAULTS: dict[str, Any] = {"examples": 64, "epochs": 2, "learning_rate": 1e-4, "batch_size": 8,
                                       "max_length": 1024, "seed": 0, "cache": True}

_CALC = re.compile(r"<<[^<>]*>>")


def gsm8k_expert_answer(solution: str) -> str:
    """Return a GSM8K reference solution in the agents' format: calculator notes removed, ``\\boxed{}`` answer.

    Example:
        >>> print(gsm8k_expert_answer("48 / 2 = <<48/2=24>>24 clips in May.\\n48 + 24 = <<48+24=72>>72\\n#### 72"))
        48 / 2 = 24 clips in May.
        48 + 24 = 72
        The answer is \\boxed{72}.
    """
    text = _CALC.sub("", solution)
    match = re.search(r"####\s*(.+?)\s*$", text.strip())
    if match:
        text = text[: match.start()].rstrip() + f"\nThe answer is \\boxed{{{match.group(1).replace(',', '')}}}."
    return text.strip()


def _settings(raw: Any) -> dict[str, Any]:
    raw = {} if raw is True else dict(raw or {})
    unknown = sorted(set(raw) - set(COLD_START_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown cold_start settings {unknown}; allowed: {sorted(COLD_START_DEFAULTS)}")
    return {**COLD_START_DEFAULTS, **raw}


def _tagged(command: str, step: int) -> str:
    """The expert's answer: a short RLVMR reasoning tag, then the command (walkthrough steps make progress,
    so ``<planning>`` is the tag the ``tags`` scorer rewards for them)."""
    return f"<planning>next</planning> <action>{command}</action>"


def expert_samples(spec: Any, settings: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Return up to ``limit`` expert instances of ``spec.train_env`` as prompt-completion samples.

    Example:
        >>> from derl_gym.agents.inner.trl_trainer import _example_spec, grpo_settings
        >>> with tempfile.TemporaryDirectory() as data_dir:   # GSM8K answers like "0 + 1 = <<0+1=1>>1\\n#### 1"
        ...     spec = _example_spec(data_dir)
        ...     samples = expert_samples(spec, grpo_settings(spec.agent), limit=3)
        >>> len(samples), samples[0]["completion"][0]["content"]   # the calculator annotation is dropped
        (3, '0 + 1 = 1\\nThe answer is \\\\boxed{1}.')
    """
    from derl_gym.agents.inner.trl_trainer import (AGENT_INSTRUCTION, _observation_text, instance_count,
                                                   instance_options, is_single_turn, math_prompt)

    env = spec.train_env.make()
    samples: list[dict[str, Any]] = []
    try:
        if is_single_turn(env):
            base = env.unwrapped
            for i, problem in enumerate(base.problems[:limit]):
                obs, _ = env.reset(options={"index": i})
                answer = (gsm8k_expert_answer(problem.solution) if base.dataset == "gsm8k" else problem.solution.strip())
                if not answer:
                    continue
                samples.append({"prompt": math_prompt(obs, settings.get("instruction"), settings.get("system_prompt")),
                                "completion": [{"role": "assistant", "content": answer}]})
            return samples
        instruction = settings.get("instruction") or AGENT_INSTRUCTION
        for i in range(min(limit, instance_count(env))):
            options = instance_options(env, i)
            is_sciworld = "variation" in options
            obs, info = env.reset(options={**options, "gold_path": True} if is_sciworld else options)
            actions = info.get("gold_actions") if is_sciworld else env.unwrapped.walkthrough
            if not actions:
                continue
            messages = ([{"role": "system", "content": settings["system_prompt"]}] if settings.get("system_prompt") else [])
            messages.append({"role": "user", "content": f"{instruction}\n{_observation_text(obs, info)}"})
            for t, command in enumerate(actions):
                reply = _tagged(str(command), t)
                samples.append({"prompt": [dict(m) for m in messages],
                                "completion": [{"role": "assistant", "content": reply}]})
                obs, _, terminated, truncated, info = env.step(str(command))
                if terminated or truncated:
                    break
                messages += [{"role": "assistant", "content": reply},
                             {"role": "user", "content": _observation_text(obs, info)}]
    finally:
        env.close()
    return samples


def _cache_key(spec: Any, grpo: dict[str, Any], settings: dict[str, Any]) -> str:
    from derl_gym.runtime.versions import code_versions

    payload = {"model": str(grpo["model"]), "cold_start": settings, "train_env": spec.train_env.__dict__,
               "instruction": grpo.get("instruction"), "system_prompt": grpo.get("system_prompt"),
               "versions": code_versions("grpo")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cold_start(model: Any, tokenizer: Any, spec: Any, grpo: dict[str, Any], *, seed: int, device: str
               ) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` on the expert samples of ``spec.train_env`` (or load the cached result).

    ``grpo`` are the trainer settings (``grpo["cold_start"]`` configures this step). Returns
    ``(model, info)`` where ``info`` says ``cached``, ``samples``, ``path`` and the final ``loss``.
    ``seed`` is unused on purpose: the cold start is shared by every inner run of a preset.

    Example:
        >>> from derl_gym.agents.inner.trl_trainer import _example_spec, grpo_settings
        >>> from derl_gym.models import load_causal_lm
        >>> model, tokenizer = load_causal_lm("tiny", device="cpu")
        >>> settings = {"cold_start": {"examples": 4, "epochs": 1, "batch_size": 4, "cache": False}}
        >>> with tempfile.TemporaryDirectory() as data_dir:
        ...     spec = _example_spec(data_dir, settings)
        ...     model, info = cold_start(model, tokenizer, spec, grpo_settings(spec.agent), seed=0, device="cpu")
        >>> info["samples"], info["cached"], info["loss"] > 0
        (4, False, True)
    """
    from derl_gym.models import cache_dir, load_causal_lm

    settings = _settings(grpo.get("cold_start"))
    key = _cache_key(spec, grpo, settings)
    folder = cache_dir() / "cold-start" / key
    if settings["cache"] and (folder / "derl_gym_cold_start.json").is_file():
        cached, _ = load_causal_lm(str(folder), device=device)
        info = json.loads((folder / "derl_gym_cold_start.json").read_text())
        logger.info("cold start: loaded cached SFT model %s", folder)
        return cached, {**info, "cached": True, "path": str(folder)}

    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    samples = expert_samples(spec, grpo, int(settings["examples"]))
    if not samples:
        raise ValueError(f"cold start found no expert trajectories in {spec.train_env.env_id}; "
                         "set algo_kwargs cold_start=None or give an env with walkthroughs / solutions")
    out = tempfile.mkdtemp(prefix="derl-sft-")
    try:
        config = SFTConfig(output_dir=out, num_train_epochs=float(settings["epochs"]),
                           per_device_train_batch_size=int(settings["batch_size"]),
                           learning_rate=float(settings["learning_rate"]), max_length=int(settings["max_length"]),
                           logging_steps=1, report_to="none", save_strategy="no", seed=int(settings["seed"]),
                           data_seed=int(settings["seed"]), use_cpu=not device.startswith("cuda"),
                           bf16=device.startswith("cuda"), disable_tqdm=True, dataloader_num_workers=0,
                           gradient_checkpointing=False)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(samples),
                             processing_class=tokenizer)
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        result = trainer.train()
        model = trainer.model
    finally:
        shutil.rmtree(out, ignore_errors=True)
    info = {"samples": len(samples), "loss": float(result.training_loss), "epochs": settings["epochs"],
            "losses": [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]}
    if settings["cache"]:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "derl_gym_cold_start.json").write_text(json.dumps(info))
            try:
                os.replace(tmp, folder)
            except OSError:
                if not (folder / "derl_gym_cold_start.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.padding_side = "left"
    return model, {**info, "cached": False, "path": str(folder) if settings["cache"] else None}
