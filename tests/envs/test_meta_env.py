"""MetaRewardEnv / MetaRewardTextEnv: fed a scorer, owning nothing; masks, scoring, check_env, learning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import derl_gym  # noqa: F401  (registers the env ids)
from derl_gym.envs.meta import MetaRewardEnv, MetaRewardTextEnv
from derl_gym.rewards.expression import MetaReward
from derl_gym.rewards.primitives import Primitive, PrimitiveSet
from derl_gym.runtime.spec import InnerResult
from tests.learning_checks import TEST_SEEDS, check_maskable_ppo_meta_env

K = 4
VALUES = np.random.default_rng(0).random((128, K))


class CountingScorer:
    """Scorer: 1.0 when the formula reads g2 but not g1; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, expression):
        self.calls.append(expression)
        used = MetaReward(expression, K).variables_used
        return 1.0 if "g2" in used and "g1" not in used else 0.0


def correlation_scorer(expression):
    """Scorer: correlation (clipped at 0) with the hidden target g2 - g3."""
    out = MetaReward(expression, K).evaluate(VALUES)
    if out.std() < 1e-9:
        return 0.0
    return float(max(0.0, np.corrcoef(out, VALUES[:, 1] - VALUES[:, 2])[0, 1]))


def rollout(env, rng):
    obs, info = env.reset()
    steps = 0
    while True:
        mask = env.action_masks()
        assert mask.dtype == bool and mask.shape == (env.action_space.n,) and mask.any()
        assert np.array_equal(mask, info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        steps += 1
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            return obs, reward, terminated, info, steps
        assert reward == 0.0


def write(env, text):
    env.reset()
    for token in env.grammar.encode(text):
        _, reward, terminated, _, info = env.step(token)
        if terminated:
            return reward, info
    raise AssertionError(f"{text!r} did not end the episode")


def test_check_env_passes_for_both_envs():
    check_env(MetaRewardEnv(CountingScorer(), num_variables=K), skip_render_check=True)
    check_env(MetaRewardTextEnv(CountingScorer(), num_variables=K, episode_length=3), skip_render_check=True)


def test_masked_rollouts_always_yield_valid_formulas():
    scorer = CountingScorer()
    env = MetaRewardEnv(scorer, num_variables=K, max_tokens=16)
    rng = np.random.default_rng(0)
    formulas = set()
    for _ in range(300):
        obs, reward, terminated, info, steps = rollout(env, rng)
        assert terminated and steps <= 16 and "error" not in info
        MetaReward(info["formula"], K)  # parses
        assert reward == CountingScorer()(info["formula"]) and info["from_cache"] is False
        tokens = [t for t in info["tokens"] if t != env.end_id]
        assert list(obs[: len(tokens)]) == tokens and (obs[len(tokens):] == env.pad_id).all()
        formulas.add(info["formula"])
    assert len(formulas) > 100 and len(scorer.calls) == 300  # the env caches nothing itself


def test_invalid_action_ends_episode_with_zero_reward():
    env = MetaRewardEnv(CountingScorer(), num_variables=K)
    env.reset()
    bad = int(np.flatnonzero(~env.action_masks())[0])  # END is not valid on an empty formula
    _, reward, terminated, truncated, info = env.step(bad)
    assert (reward, terminated, truncated) == (0.0, True, False) and "not valid" in info["error"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_results_tuples_and_failures_pass_through():
    def scorer(expression):
        if "g3" in expression:
            raise RuntimeError("boom")
        if "g4" in expression:
            return InnerResult(expression=expression, canonical="x", score=0.25, seed=7, curve=[(10, 0.1)]), True
        return 0.5

    env = MetaRewardEnv(scorer, num_variables=K, invalid_reward=-1.0)
    seen = set()
    for _ in range(80):
        *_, reward, _, info, _ = rollout(env, np.random.default_rng(len(seen) + _))
        if "g3" in info["formula"]:
            assert reward == -1.0 and "boom" in info["error"]
            seen.add("failed")
        elif "g4" in info["formula"]:
            assert (reward, info["from_cache"], info["canonical"]) == (0.25, True, "x")
            assert info["inner_result"]["curve"] == [(10, 0.1)]
            seen.add("result")
        else:
            assert (reward, info["from_cache"], info["inner_result"]["score"]) == (0.5, False, 0.5)
            seen.add("float")
    assert seen == {"failed", "result", "float"}


def test_evaluator_like_scorer_gets_the_seed():
    class FakeEvaluator:
        def __init__(self):
            self.calls = []

        def evaluate(self, expressions, seed=0, init_model=None):
            self.calls.append((list(expressions), seed))
            return [(InnerResult(expression=e, canonical=e, score=0.5, seed=seed), True) for e in expressions]

    fake = FakeEvaluator()
    env = MetaRewardEnv(fake, num_variables=K, seed=3)
    *_, reward, _, info, _ = rollout(env, np.random.default_rng(0))
    assert (reward, info["from_cache"]) == (0.5, True)
    assert fake.calls == [([info["formula"]], 3)]


def test_gym_make_both_ids():
    env = gym.make("derl_gym/MetaReward-v0", scorer=CountingScorer(), num_variables=K)
    env.reset(seed=0)
    assert env.unwrapped.action_masks().any()
    text_env = gym.make("derl_gym/MetaRewardText-v0", scorer=CountingScorer(), num_variables=K, episode_length=2)
    obs, _ = text_env.reset(seed=0)
    assert "g4" in obs


def test_text_env_scores_formulas_shows_history_and_reports_parse_errors():
    scorer = CountingScorer()
    env = MetaRewardTextEnv(scorer, num_variables=K, episode_length=3, examples=["g1 + 0.5*g4"])
    prompt, _ = env.reset()
    assert all(f"g{k}" in prompt for k in range(1, K + 1)) and "g1 + 0.5*g4" in prompt
    prompt, reward, terminated, _, info = env.step("g2 - 0.5*g3")
    assert (reward, terminated) == (1.0, False)
    assert "g2 - 0.5*g3 -> 1.000" in prompt
    prompt, reward, terminated, _, info = env.step("g2 + * g7")
    assert reward == 0.0 and info["error"] and "invalid" in prompt and len(scorer.calls) == 1
    prompt, reward, terminated, _, info = env.step("I propose <formula>g1 + g3</formula>")
    assert (reward, terminated, info["formula"]) == (0.0, True, "g1 + g3")
    assert [h[0] for h in env.history] == ["g2 - 0.5*g3", "g2 + * g7", "g1 + g3"]


def test_text_env_accepts_primitive_names():
    prims = PrimitiveSet([Primitive(f"p{i}", f"primitive number {i}", lambda t: 0.0) for i in range(1, 4)])
    seen = []
    env = MetaRewardTextEnv(lambda e: seen.append(e) or 0.75, primitives=prims, episode_length=1)
    prompt, _ = env.reset()
    assert "primitive number 2" in prompt and "p3" in prompt
    _, reward, terminated, _, info = env.step("p2 + 0.5*p3")
    assert (reward, terminated, seen) == (0.75, True, ["p2 + 0.5*p3"])


def test_needs_a_scorer():
    with pytest.raises(ValueError, match="scorer"):
        MetaRewardEnv(num_variables=K)
    with pytest.raises(ValueError, match="num_variables"):
        MetaRewardTextEnv(lambda f: 0.0)


def test_envs_build_no_runner_or_store_and_leave_no_temp_folder(tmp_path):
    """In a fresh interpreter: making and playing both envs imports no runner or store module
    and writes nothing to the temp directory."""
    code = textwrap.dedent("""
        import sys, numpy as np, gymnasium as gym
        import derl_gym
        env = gym.make("derl_gym/MetaReward-v0", scorer=lambda f: 0.5, num_variables=4).unwrapped
        env.reset()
        while True:
            _, r, done, _, _ = env.step(int(np.flatnonzero(env.action_masks())[0]))
            if done:
                break
        text = gym.make("derl_gym/MetaRewardText-v0", scorer=lambda f: 0.5, num_variables=4)
        text.reset(); text.step("g1 + g2"); env.close(); text.close()
        bad = sorted(m for m in sys.modules if m.startswith("derl_gym.runtime"))
        assert not bad, bad
        print("ok", r)
    """)
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TMPDIR": str(temp)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "0.5"]
    assert list(temp.iterdir()) == []


def test_an_evaluator_scores_and_caches_equivalent_formulas(tmp_path):
    from derl_gym.runtime.evaluator import Evaluator
    from derl_gym.runtime.runners import InlineRunner
    from derl_gym.runtime.standin import standin_inner, standin_score, standin_spec
    from derl_gym.runtime.store import ResultStore

    spec = standin_spec(K)
    with ResultStore(tmp_path / "store.sqlite") as store:
        evaluator = Evaluator(spec, InlineRunner(job_fn=standin_inner), store)
        env = gym.make("derl_gym/MetaReward-v0", scorer=evaluator).unwrapped
        assert env.num_variables == K
        reward, info = write(env, "g1 + 0.5*g4")
        assert info["from_cache"] is False and info["inner_result"]["status"] == "ok"
        assert reward == pytest.approx(standin_score("g1 + 0.5*g4", K)[1], abs=0.021)  # stand-in noise <= 0.02
        again, info2 = write(env, "0.5*g4 + g1")
        assert (again, info2["from_cache"], info2["canonical"]) == (reward, True, info["canonical"])
        text_env = gym.make("derl_gym/MetaRewardText-v0", scorer=evaluator).unwrapped
        prompt, _ = text_env.reset()
        assert spec.description in prompt
        assert evaluator.trained == 1
        assert [r.canonical for r in store.results()] == [info["canonical"]]


def test_the_language_model_meta_agent_acts_in_the_text_env(one_torch_thread):
    """DERL's LM policy reads the env's prompt (history included) and writes valid formulas."""
    pytest.importorskip("transformers")
    from derl_gym.agents.meta import make_optimizer

    opt = make_optimizer("derl", K, seed=0, meta_model="tiny", cold_start=False, device="cpu")
    env = MetaRewardTextEnv(correlation_scorer, num_variables=K, episode_length=4)
    prompt, _ = env.reset()
    rng = np.random.default_rng(0)
    terminated, rewards = False, []
    while not terminated:
        formula = opt.policy.sample(1, rng, prompt=prompt)[0].text
        prompt, reward, terminated, _, info = env.step(formula)
        assert "error" not in info and formula in prompt
        rewards.append(reward)
    assert len(rewards) == 4 and len(env.history) == 4


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_maskable_ppo_learns_meta_reward_env(one_torch_thread, seed):
    # budget and threshold measured over 20 seeds by benchmarks/bench_seed_robustness.py
    check = check_maskable_ppo_meta_env(seed)
    assert check.passed, check
