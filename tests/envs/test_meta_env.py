"""MetaRewardEnv / MetaRewardTextEnv: masks, scoring, caching, check_env, and MaskablePPO learning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import derl_gym  # noqa: F401  (registers the env ids)
from derl_gym.envs.meta import MetaRewardEnv, MetaRewardTextEnv
from derl_gym.rewards.expression import MetaReward
from derl_gym.rewards.primitives import Primitive, PrimitiveSet
from derl_gym.runtime.spec import InnerResult

K = 4
VALUES = np.random.default_rng(0).random((128, K))


class CountingInner:
    """Stand-in inner loop: 1.0 when the formula reads g2 but not g1; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, spec, expression, seed=0):
        self.calls.append(expression)
        used = MetaReward(expression, K).variables_used
        return 1.0 if "g2" in used and "g1" not in used else 0.0


def correlation_inner(spec, expression, seed=0):
    """Stand-in inner loop: correlation (clipped at 0) with the hidden target g2 - g3."""
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


def test_check_env_passes_for_both_envs():
    check_env(MetaRewardEnv(num_variables=K, inner_fn=CountingInner()), skip_render_check=True)
    check_env(MetaRewardTextEnv(num_variables=K, inner_fn=CountingInner(), episode_length=3),
              skip_render_check=True)


def test_masked_rollouts_always_yield_valid_formulas():
    inner = CountingInner()
    # canonicalize=False: skip sympy here (0.1 s a formula); canonical forms are tested below
    env = MetaRewardEnv(num_variables=K, inner_fn=inner, max_tokens=16, canonicalize=False)
    rng = np.random.default_rng(0)
    formulas = set()
    for _ in range(300):
        obs, reward, terminated, info, steps = rollout(env, rng)
        assert terminated and steps <= 16
        assert "error" not in info
        reward_fn = MetaReward(info["formula"], K)  # parses
        assert info["canonical"] == info["formula"]
        assert info["inner_result"]["score"] == reward
        assert reward == inner(None, info["formula"])
        assert isinstance(info["from_cache"], bool)
        # the observation holds exactly the tokens written before END
        tokens = [t for t in info["tokens"] if t != env.end_id]
        assert list(obs[: len(tokens)]) == tokens and (obs[len(tokens):] == env.pad_id).all()
        formulas.add(info["formula"])
    assert len(formulas) > 100  # random masked rollouts explore many distinct formulas


def test_equivalent_formula_comes_from_cache():
    inner = CountingInner()
    env = MetaRewardEnv(num_variables=K, inner_fn=inner)
    g = env.grammar
    results = []
    for text in ("g2 + g3", "g3 + g2", "(g2 + g3)"):
        env.reset()
        for token in g.encode(text):
            if env._done:
                break
            _, reward, terminated, _, info = env.step(token)
        assert terminated
        results.append((reward, info["from_cache"]))
        assert info["canonical"] == MetaReward(text, K).canonical
    assert results == [(1.0, False), (1.0, True), (1.0, True)]
    assert len(inner.calls) == 1


def test_invalid_action_ends_episode_with_zero_reward():
    env = MetaRewardEnv(num_variables=K, inner_fn=CountingInner())
    env.reset()
    mask = env.action_masks()
    bad = int(np.flatnonzero(~mask)[0])  # END is not valid on an empty formula
    _, reward, terminated, truncated, info = env.step(bad)
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert "not valid" in info["error"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_inner_result_and_failures_pass_through():
    def inner(spec, expression, seed=0):
        if "g3" in expression:
            raise RuntimeError("boom")
        return InnerResult(expression=expression, canonical="x", score=0.25, seed=seed, curve=[(10, 0.1)])

    env = MetaRewardEnv(num_variables=K, inner_fn=inner, seed=7, canonicalize=False)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(60):
        *_, reward, _, info, _ = rollout(env, rng)
        result = info["inner_result"]
        if "g3" in info["formula"]:
            assert (reward, result["status"]) == (0.0, "failed") and "boom" in result["error"]
        else:
            assert (reward, result["seed"], result["curve"]) == (0.25, 7, [(10, 0.1)])
        seen.add(result["status"])
    assert seen == {"ok", "failed"}


def test_evaluator_path_is_used():
    class FakeEvaluator:
        def __init__(self):
            self.calls = []

        def evaluate(self, expressions, seed=0, init_model=None):
            self.calls.append((list(expressions), seed))
            return [(InnerResult(expression=e, canonical=e, score=0.5, seed=seed), True) for e in expressions]

    fake = FakeEvaluator()
    env = MetaRewardEnv(num_variables=K, evaluator=fake, seed=3)
    *_, reward, _, info, _ = rollout(env, np.random.default_rng(0))
    assert (reward, info["from_cache"]) == (0.5, True)
    assert fake.calls == [([info["formula"]], 3)]


def test_gym_make_both_ids():
    env = gym.make("derl_gym/MetaReward-v0", num_variables=K, inner_fn=CountingInner())
    env.reset(seed=0)
    assert env.unwrapped.action_masks().any()
    text_env = gym.make("derl_gym/MetaRewardText-v0", num_variables=K, inner_fn=CountingInner(), episode_length=2)
    obs, _ = text_env.reset(seed=0)
    assert "g4" in obs


def test_text_env_scores_formulas_and_reports_parse_errors():
    inner = CountingInner()
    env = MetaRewardTextEnv(num_variables=K, inner_fn=inner, episode_length=3)
    prompt, _ = env.reset()
    assert all(f"g{k}" in prompt for k in range(1, K + 1))
    prompt, reward, terminated, _, info = env.step("g2 - 0.5*g3")
    assert (reward, terminated, info["from_cache"]) == (1.0, False, False)
    assert "g2 - 0.5*g3 -> 1.000" in prompt
    prompt, reward, terminated, _, info = env.step("g2 + * g7")
    assert reward == 0.0 and info["error"] and "invalid" in prompt
    prompt, reward, terminated, _, info = env.step("-0.5*g3 + g2")
    assert (reward, terminated, info["from_cache"]) == (1.0, True, True)
    assert len(inner.calls) == 1


def test_text_env_accepts_primitive_names():
    prims = PrimitiveSet([Primitive(f"p{i}", f"primitive number {i}", lambda t: 0.0) for i in range(1, 4)])
    seen = []
    env = MetaRewardTextEnv(primitives=prims, inner_fn=lambda spec, e, seed=0: seen.append(e) or 0.75,
                            episode_length=1)
    prompt, _ = env.reset()
    assert "primitive number 2" in prompt and "p3" in prompt
    _, reward, terminated, _, info = env.step("p2 + 0.5*p3")
    assert (reward, terminated) == (0.75, True)
    assert info["canonical"] == MetaReward("g2 + 0.5*g3", prims).canonical


def test_needs_a_way_to_score():
    with pytest.raises(ValueError, match="inner_fn"):
        MetaRewardEnv(preset=None, num_variables=K)


def test_maskable_ppo_learns_meta_reward_env(one_torch_thread):
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.evaluation import evaluate_policy

    env = gym.make("derl_gym/MetaReward-v0", num_variables=K, inner_fn=correlation_inner, max_tokens=12,
                   canonicalize=False)
    model = MaskablePPO("MlpPolicy", env, n_steps=512, batch_size=128, n_epochs=5, learning_rate=1e-3,
                        seed=0, verbose=0)
    before, _ = evaluate_policy(model, env, n_eval_episodes=100, deterministic=False, warn=False)
    model.learn(total_timesteps=4096)
    after, _ = evaluate_policy(model, env, n_eval_episodes=100, deterministic=False, warn=False)
    assert after > before + 0.2, (before, after)

def write(env, text):
    env.reset()
    for token in env.grammar.encode(text):
        _, reward, terminated, _, info = env.step(token)
        if terminated:
            return reward, info
    raise AssertionError(f"{text!r} did not end the episode")


def test_real_evaluator_with_process_runner_and_store(tmp_path):
    from derl_gym.runtime.runners import ProcessRunner
    from derl_gym.runtime.standin import standin_inner, standin_score, standin_spec
    from derl_gym.runtime.store import ResultStore

    spec = standin_spec(K)
    with ProcessRunner(max_workers=1, job_fn=standin_inner) as runner:
        env = gym.make("derl_gym/MetaReward-v0", spec=spec, runner=runner, store_path=tmp_path / "store.sqlite").unwrapped
        assert env.num_variables == K and env.inner_spec is spec  # gym.make's env.spec does not clobber it
        reward, info = write(env, "g1 + 0.5*g4")
        assert info["from_cache"] is False and info["inner_result"]["status"] == "ok"
        assert reward == pytest.approx(standin_score("g1 + 0.5*g4", K)[1], abs=0.021)  # stand-in noise <= 0.02
        again, info2 = write(env, "0.5*g4 + g1")
        assert (again, info2["from_cache"]) == (reward, True)
        assert info2["canonical"] == info["canonical"]
        env.close()
    with ResultStore(tmp_path / "store.sqlite") as store:
        assert [r.canonical for r in store.results()] == [info["canonical"]]
