"""The TRL reward function of a Meta-Reward: values equal MetaReward.evaluate of the env's primitives, a real
GRPOTrainer step on the tiny model offline, every grading mode and its errors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from derl_gym.envs.math import math_primitives
from derl_gym.integrations.trl import (AnswerRewardFunction, CompletionRewardFunction, MetaRewardFunction,
                                       trl_reward_function)
from derl_gym.rewards.expression import InvalidExpression, MetaReward
from derl_gym.rewards.primitives import Primitive, PrimitiveSet, Step, Trajectory
from tests.math_completions import random_completion as _random_completion

FORMULAS = ["g1 + 0.5*g2", "g2 - g3/3 + 2*g4", "g1*g3 + g2/(1 + g4)", "(g1 + g2 + g3 + g4)/4", "g2 + g3 - 0.1"]


def _env_values(env, index: int, text: str, prims) -> np.ndarray:
    """The primitives of one answer as derl-gym's own inner loop sees them: a step of the registered env."""
    obs, info0 = env.reset(options={"index": index})
    _, r, term, trunc, info = env.step(text)
    return prims.compute(Trajectory(obs, info0, [Step(text, obs, r, term, trunc, info, info0)]))


@pytest.mark.parametrize("dataset", ["gsm8k", "math"])
def test_answer_column_rewards_equal_the_meta_reward_of_the_envs_primitives(shared_data_dir, dataset):
    """Rows carry only the dataset's own answer field: the reward is MetaReward.evaluate of the primitives the
    registered env computes for the same problem and answer."""
    import gymnasium as gym

    import derl_gym  # noqa: F401

    if dataset == "gsm8k":
        env = gym.make("derl_gym/GSM8K-v0", split="validation", data_dir=str(shared_data_dir), max_problems=40)
        answers = [p.solution for p in env.unwrapped.problems]            # '... #### 18': the raw GSM8K field
    else:
        env = gym.make("derl_gym/MATH-v0", split="test", data_dir=str(shared_data_dir), max_problems=40)
        answers = [p.ground_truth for p in env.unwrapped.problems]        # MATH's answer field
    prims = math_primitives()
    rng = random.Random(0)
    seen = set()
    for formula in FORMULAS if dataset == "gsm8k" else FORMULAS[:2]:  # MATH: each check is a math-verify call
        fn = trl_reward_function(formula, task=dataset)
        indices = [rng.randrange(env.unwrapped.num_problems) for _ in range(10)]
        truths = [env.unwrapped.problems[i].ground_truth for i in indices]
        completions = [[{"role": "assistant", "content": _random_completion(rng, t)}] for t in truths]
        prompts = [[{"role": "user", "content": env.unwrapped.problems[i].question}] for i in indices]
        rewards = fn(prompts=prompts, completions=completions, completion_ids=[[1]] * 10,
                     answer=[answers[i] for i in indices], trainer_state=None)
        values = np.array([_env_values(env, i, c[0]["content"], prims) for i, c in zip(indices, completions)])
        np.testing.assert_allclose(rewards, MetaReward(formula, prims).evaluate(values), rtol=0, atol=1e-12)
        np.testing.assert_allclose([r.primitive_values for r in fn.records], values, rtol=0, atol=0)
        seen |= {tuple(v) for v in values}
        fn.close()
    env.close()
    assert len(seen) >= 4  # the completions moved the primitives, so equality says something


def test_index_mode_and_answer_mode_agree_on_the_same_problems(shared_data_dir):
    kwargs = {"split": "validation", "data_dir": str(shared_data_dir), "max_problems": 12}
    by_index = trl_reward_function("g1 + 0.5*g2 - g4/3", env_id="derl_gym/GSM8K-v0", env_kwargs=kwargs,
                                   index_column="problem_index")
    assert isinstance(by_index, MetaRewardFunction)
    problems = by_index.env.unwrapped.problems
    by_answer = trl_reward_function("g1 + 0.5*g2 - g4/3", env_id="derl_gym/GSM8K-v0", env_kwargs=kwargs)
    assert isinstance(by_answer, AnswerRewardFunction) and by_answer.task == "gsm8k"
    rng = random.Random(1)
    completions = [_random_completion(rng, p.ground_truth) for p in problems]
    a = by_index(prompts=[""] * 12, completions=completions, problem_index=list(range(12)))
    b = by_answer(prompts=[""] * 12, completions=completions, answer=[p.solution for p in problems])
    assert a == b and len(set(a)) > 1


def test_completion_mode_reads_the_text_and_the_rows_columns():
    length = Primitive("length", "characters / 20", lambda t: len(t.steps[-1].action) / 20)
    judged = Primitive("judge", "the row's judge score", lambda t: t.steps[-1].info["judge"])
    prims = PrimitiveSet([length, judged], name="custom")
    fn = trl_reward_function("2*length - judge", prims, task="completion", name="custom_reward")
    assert isinstance(fn, CompletionRewardFunction) and fn.__name__ == "custom_reward"
    out = fn(prompts=["p", "q"], completions=["x" * 10, [{"role": "assistant", "content": "y" * 40}]],
             judge=[0.25, 1.0], trainer_state=None)
    np.testing.assert_allclose(out, [2 * 0.5 - 0.25, 2 * 1.0 - 1.0])


def test_errors_name_the_problem_and_the_fix():
    fn = trl_reward_function("g1", task="gsm8k")
    with pytest.raises(ValueError, match=r"no 'answer' column.*\['solution'\]"):
        fn(prompts=["p"], completions=["1"], solution=["#### 1"], trainer_state=None)
    assert trl_reward_function("g1", task="gsm8k", answer_column="solution")(
        prompts=["p"], completions=["\\boxed{1}"], solution=["#### 1"]) == [1.0]
    with pytest.raises(ValueError, match="reference answer '' is empty"):
        fn(prompts=["p"], completions=["1"], answer=[""])
    with pytest.raises(ValueError, match="pass task='gsm8k' or 'math'.*Multi-turn"):
        trl_reward_function("g1", env_id="derl_gym/ALFWorld-v0")
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        trl_reward_function("g1", task="chess")
    with pytest.raises(ValueError, match="needs primitives="):
        trl_reward_function("g1", task="completion")
    with pytest.raises(InvalidExpression):
        trl_reward_function("g1 + g5", task="gsm8k")  # the math set has g1..g4


def test_a_real_grpo_trainer_step_offline_on_the_tiny_model(tmp_path, tmp_path_factory, monkeypatch, one_torch_thread):
    """TRL's GRPOTrainer calls the function on its own sampled completions; the rewards it logs are ours."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from derl_gym.models import load_causal_lm

    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl-cache"))  # shared by the session
    model, tokenizer = load_causal_lm("tiny", device="cpu")
    tokenizer.padding_side = "left"
    length = Primitive("length", "completion characters / 40", lambda t: min(1.0, len(t.steps[-1].action) / 40))
    prims = PrimitiveSet([*math_primitives(), length], name="math+length")  # g5 varies, so groups have variance
    fn = trl_reward_function("g1 + 0.5*g2 + g5", prims, task="gsm8k")
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}? Put the answer in \\boxed{{}}."}],
             "answer": f"#### {a + b}"} for a, b in [(2, 3), (10, 4), (7, 7), (1, 8)]]
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, learning_rate=1e-4, beta=0.0, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
                      dataloader_num_workers=0, top_k=0)
    trainer = GRPOTrainer(model=model, reward_funcs=[fn], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.train()
    assert trainer.state.global_step == 2 and len(fn.records) == 8
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    for step, log in enumerate(logs):
        mine = fn.records[4 * step: 4 * step + 4]
        assert log["reward"] == pytest.approx(np.mean([r.reward for r in mine]), abs=1e-5)
        assert log["rewards/meta_reward/mean"] == pytest.approx(np.mean([r.reward for r in mine]), abs=1e-5)
        assert log["meta_reward/length"] == pytest.approx(np.mean([r.primitive_values[4] for r in mine]), abs=1e-5)
    # TRL's completions scored again from their text alone give the same values: MetaReward.evaluate of g1..g5
    values = np.array([r.primitive_values for r in fn.records])
    np.testing.assert_allclose([r.reward for r in fn.records], MetaReward(fn.formula, prims).evaluate(values), atol=1e-12)
    answers = [r.key for r in fn.records]
    again = trl_reward_function("g1 + 0.5*g2 + g5", prims, task="gsm8k")(
        prompts=[""] * 8, completions=[r.completion for r in fn.records], answer=answers)
    assert again == [r.reward for r in fn.records]
    assert len({r.completion for r in fn.records}) > 1 and values[:, 4].std() > 0
