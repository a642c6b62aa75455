"""Cold start: expert samples from the envs' own solutions/walkthroughs, SFT, and its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("trl")

from derl_gym.agents.inner.cold_start import cold_start, expert_samples, gsm8k_expert_answer  # noqa: E402
from derl_gym.agents.inner.trl_trainer import grpo_settings  # noqa: E402
from derl_gym.runtime.presets import get_preset  # noqa: E402
from derl_gym.runtime.spec import EnvSpec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GAME = str(Path(__file__).resolve().parents[1] / "data" / "alfworld" / "clean_apple_in_fridge.tw-pddl")


def test_gsm8k_expert_answer_format():
    text = gsm8k_expert_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,072")
    assert text == "Natalia sold 48/2 = 24 clips.\nThe answer is \\boxed{1072}."


def test_math_expert_answers_solve_their_problems(shared_data_dir):
    spec = get_preset("gsm8k-lm-tiny").replace(
        train_env=EnvSpec("derl_gym/GSM8K-v0", {"split": "train", "max_problems": 6, "data_dir": str(shared_data_dir)}))
    samples = expert_samples(spec, grpo_settings(spec.agent), 5)
    assert len(samples) == 5
    env = spec.train_env.make()
    for i, sample in enumerate(samples):
        obs, _ = env.reset(options={"index": i})
        assert obs in sample["prompt"][-1]["content"] and "\\boxed{}" in sample["prompt"][-1]["content"]
        _, reward, _, _, info = env.step(sample["completion"][0]["content"])
        assert reward == 1.0 and info["extracted_answer"] is not None


def test_alfworld_expert_samples_play_the_walkthrough():
    pytest.importorskip("textworld")
    spec = get_preset("alfworld-lm-tiny").replace(
        train_env=EnvSpec("derl_gym/ALFWorld-v0", {"games": [GAME], "max_episode_steps": 10}))
    samples = expert_samples(spec, grpo_settings(spec.agent), 3)
    assert len(samples) == 7  # one game, 7 walkthrough commands, one sample per command
    assert samples[-1]["completion"][0]["content"].endswith("<action>move apple 2 to fridge 1</action>")
    assert len(samples[-1]["prompt"]) == 1 + 2 * 6  # first observation, then (answer, observation) pairs
    assert "Your task is to: put a clean apple in fridge" in samples[0]["prompt"][0]["content"]


def test_cold_start_trains_then_comes_from_the_cache(shared_data_dir, tmp_path, monkeypatch):
    import torch

    from derl_gym.models import load_causal_lm

    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path))
    spec = get_preset("gsm8k-lm-tiny").replace(
        train_env=EnvSpec("derl_gym/GSM8K-v0", {"split": "train", "max_problems": 8, "data_dir": str(shared_data_dir)}))
    settings = {**grpo_settings(spec.agent), "model": "tiny:layers=1,hidden=32,heads=2,vocab_size=400",
                "cold_start": {"examples": 8, "epochs": 2, "learning_rate": 3e-3, "batch_size": 4, "max_length": 256}}
    model, tok = load_causal_lm(settings["model"], device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, info = cold_start(model, tok, spec, settings, seed=0, device="cpu")
    assert not info["cached"] and info["samples"] == 8 and info["losses"][-1] < info["losses"][0]
    assert not all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    fresh, _ = load_causal_lm(settings["model"], device="cpu")
    again, info2 = cold_start(fresh, tok, spec, settings, seed=5, device="cpu")
    assert info2["cached"] and info2["path"] == info["path"]
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in again.state_dict().items())
    with pytest.raises(ValueError, match="unknown cold_start settings"):
        cold_start(fresh, tok, spec, {**settings, "cold_start": {"epochz": 1}}, seed=0, device="cpu")
