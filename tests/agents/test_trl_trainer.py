"""The TRL GRPO inner trainer on the tiny offline model: rewards, task-reward validation, determinism, failures."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("trl")

from derl_gym.agents.inner.registry import get_trainer  # noqa: E402
from derl_gym.agents.inner.trl_trainer import LMAgent, MetaRewardFunction, grpo_settings, math_prompt  # noqa: E402
from derl_gym.envs.math import math_primitives  # noqa: E402
from derl_gym.rewards.expression import MetaReward  # noqa: E402
from derl_gym.rewards.primitives import Step, Trajectory  # noqa: E402
from derl_gym.runtime.inner import run_inner  # noqa: E402
from derl_gym.runtime.presets import get_preset  # noqa: E402
from derl_gym.runtime.spec import EnvSpec  # noqa: E402
from tests.math_completions import random_completion as _random_completion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl-cache"))


def _length(trajectory: Trajectory) -> float:
    return min(1.0, len(str(trajectory.steps[-1].action)) / 40.0) if trajectory.steps else 0.0


def length_primitives():
    """The math primitives plus g5 = response length / 40 (continuous, so every GRPO group has variance)."""
    from derl_gym.rewards.primitives import Primitive, PrimitiveSet

    return PrimitiveSet([*math_primitives(), Primitive("length", "response length / 40, clipped", _length)], name="len")


def _small_spec(shared_data_dir, **algo):
    spec = get_preset("gsm8k-lm-tiny")
    env = lambda split, n: EnvSpec("derl_gym/GSM8K-v0", {"split": split, "max_problems": n,  # noqa: E731
                                                          "data_dir": str(shared_data_dir)})
    agent = spec.agent.__class__(algorithm="grpo", total_timesteps=16,
                                 algo_kwargs={**spec.agent.algo_kwargs, "max_completion_length": 12, **algo})
    return spec.replace(train_env=env("train", 8), validation_env=env("validation", 4), test_envs={"L0": env("test", 4)},
                        eval_episodes=4, agent=agent)


def test_rewards_trl_receives_equal_the_meta_reward_of_the_primitives(shared_data_dir):
    """Property test: for random completions and formulas, fn(...) == MetaReward.evaluate(primitives)."""
    from derl_gym.wrappers.meta_reward import MetaRewardWrapper

    rng = random.Random(0)
    spec = _small_spec(shared_data_dir)
    raw = spec.train_env.make()
    prims = math_primitives()
    for formula in ["g1 + 0.5*g2", "g2 - g3/3 + 2*g4", "-g1", "(g1 + g2 + g3 + g4)/4", "g2 + g3 - 0.1"]:
        meta = MetaReward(formula, prims)
        fn = MetaRewardFunction(MetaRewardWrapper(spec.train_env.make(), meta, prims))
        indices = [rng.randrange(raw.unwrapped.num_problems) for _ in range(12)]
        truths = [raw.unwrapped.problems[i].ground_truth for i in indices]
        completions = [[{"role": "assistant", "content": _random_completion(rng, t)}] for t in truths]
        rewards = fn(prompts=[None] * 12, completions=completions, problem_index=indices, trainer_state=None)
        expected = []
        for index, completion in zip(indices, completions):
            obs, info0 = raw.reset(options={"index": index})
            text = completion[0]["content"]
            _, r, term, trunc, info = raw.step(text)
            traj = Trajectory(obs, info0, [Step(text, obs, r, term, trunc, info, info0)])
            expected.append(float(meta.evaluate(prims.compute(traj)[None, :])[0]))
        np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-9)
        assert len({round(x, 6) for x in expected}) > 1 or formula == "-g1"  # the completions vary the primitives


class _OracleModel:
    """A stand-in LM: answers a problem correctly when its index is even, wrongly otherwise."""

    training = False

    def __init__(self, tokenizer, answers):
        self.tok, self.answers = tokenizer, answers

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask=None, **kwargs):
        import torch

        rows = []
        for ids in input_ids.tolist():
            prompt = self.tok.decode(ids, skip_special_tokens=True)
            reply = next(a for q, a in self.answers.items() if q in prompt)
            rows.append(ids + self.tok(reply, add_special_tokens=False)["input_ids"])
        width = max(map(len, rows))
        return torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])


def test_validation_uses_the_task_reward_only(shared_data_dir, tiny_cache, monkeypatch):
    from derl_gym.models import load_causal_lm
    from derl_gym.wrappers import meta_reward

    spec = _small_spec(shared_data_dir)
    env = spec.validation_env.make()
    answers = {}
    for i, p in enumerate(env.unwrapped.problems):
        obs, _ = env.reset(options={"index": i})
        answers[obs] = f"\\boxed{{{p.ground_truth}}}" if i % 2 == 0 else "Step 1: guess.\nStep 2: 0.\n\\boxed{0}"
    _, tok = load_causal_lm("tiny", device="cpu")
    agent = LMAgent(_OracleModel(tok, answers), tok, grpo_settings(spec.agent), "cpu")

    def forbidden(*args, **kwargs):
        raise AssertionError("evaluation built a MetaRewardWrapper")

    monkeypatch.setattr(meta_reward.MetaRewardWrapper, "__init__", forbidden)
    trainer = get_trainer("grpo")
    result = trainer.evaluate(agent, spec, spec.validation_env, 4, seed=3)
    expected = np.mean([i % 2 == 0 for i in range(len(env.unwrapped.problems))][:4]) if len(answers) == 4 else None
    assert result["episodes"] == 4 and result["score"] == expected == 0.5
    # the same agent under any formula: the score cannot depend on it (evaluate never gets one)
    assert trainer.evaluate(agent, spec.replace(primitives=spec.primitives), spec.validation_env, 4, seed=3) == result


def test_cpu_run_with_a_fixed_seed_repeats_exactly(shared_data_dir, tiny_cache, tmp_path):
    import torch
    from safetensors.torch import load_file

    from derl_gym.runtime.spec import PrimitiveSpec

    spec = _small_spec(shared_data_dir).replace(primitives=PrimitiveSpec("tests.agents.test_trl_trainer:length_primitives"))
    a = run_inner(spec, "g2 + g5", seed=1, save_model=str(tmp_path / "a"))
    b = run_inner(spec, "g2 + g5", seed=1, save_model=str(tmp_path / "b"))
    c = run_inner(spec, "g2 + g5", seed=2, save_model=str(tmp_path / "c"))
    assert a.ok and b.ok and c.ok, (a.error, c.error)
    assert a.score == b.score and a.curve == b.curve and a.env_steps == b.env_steps == 16
    assert a.extra["grpo_steps"] == 2 and a.extra["validation"] == b.extra["validation"]
    assert a.extra["mean_meta_reward"] == b.extra["mean_meta_reward"] > 0
    wa, wb, wc = (load_file(str(tmp_path / k / "model.safetensors")) for k in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_failing_model_or_env_is_a_failed_result(shared_data_dir, tiny_cache, tmp_path):
    bad_model = _small_spec(shared_data_dir, model=str(tmp_path / "no-model-here"))
    result = run_inner(bad_model, "g1")
    assert result.status == "failed" and "could not load the causal LM" in result.error and result.score == 0.0
    spec = _small_spec(shared_data_dir)
    bad_env = spec.replace(train_env=EnvSpec("derl_gym/GSM8K-v0", {"split": "train", "data_dir": str(tmp_path),
                                                                    "use_hub": False}))
    result = run_inner(bad_env, "g1")
    assert result.status == "failed" and "gsm8k" in result.error
    bad_kw = _small_spec(shared_data_dir, lora_rank=4)
    result = run_inner(bad_kw, "g1")
    assert result.status == "failed" and "lora_rank" in result.error


def test_readme_example_runs_offline(tiny_cache, shared_data_dir, monkeypatch):
    monkeypatch.setenv("DERL_GYM_DATA", str(shared_data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_inner(get_preset("gsm8k-lm-tiny", total_timesteps=16, eval_episodes=4), "g1 + 0.5*g2")
    assert result.ok, result.error
    assert 0.0 <= result.score <= 1.0 and result.extra["validation"]["episodes"] == 4
    assert result.extra["grpo_steps"] == 2 and result.curve


def test_math_prompt_has_the_boxed_instruction():
    messages = math_prompt("What is 2+2?")
    assert messages[-1]["role"] == "user" and "\\boxed{}" in messages[-1]["content"]
    assert math_prompt("q", system_prompt="S")[0] == {"role": "system", "content": "S"}
