"""ActionScoringPolicy + trainer helpers: masking, permutation equivariance, training, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO

from derl_gym.agents.inner import ActionScoringPolicy, build_model
from derl_gym.agents.inner.trainer import make_vec_env
from derl_gym.runtime.spec import AgentSpec
from derl_gym.wrappers.text_actions import TextActionWrapper
from tests.learning_checks import TEST_SEEDS, check_toy_policy
from tests.toy_text_env import TOY_ENV_ID


def make_env(**kwargs):
    return TextActionWrapper(gym.make(TOY_ENV_ID, **kwargs), max_actions=8, dim=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(algorithm="maskable_ppo", n_envs=1, seed=0, **algo_kwargs):
    vec = make_vec_env([make_env] * n_envs)
    agent = AgentSpec(algorithm=algorithm, n_envs=n_envs, algo_kwargs={"n_steps": 64, **algo_kwargs},
                      policy_kwargs={"hidden_dim": 32})
    return build_model(agent, vec, seed=seed)


def _obs_batch(env, n=4, seed=0):
    obs, _ = env.reset(seed=seed)
    batch = [obs]
    for i in range(n - 1):
        obs, *_ = env.step(i % int(env.action_masks().sum()))
        batch.append(obs)
    return {k: th.as_tensor(np.stack([o[k] for o in batch])) for k in batch[0]}


def test_logits_are_equivariant_to_candidate_order():
    model = _model()
    policy = model.policy
    assert isinstance(policy, ActionScoringPolicy)
    obs = _obs_batch(make_env())
    with th.no_grad():
        logits = policy.mlp_extractor.forward_actor(policy.extract_features(obs))
    assert logits.shape == (4, 8)
    perm = th.tensor([3, 1, 0, 2, 7, 6, 5, 4])
    per_candidate = [k for k, v in obs.items() if k == "actions" or v.shape == (4, 8)]
    assert {"action_mask", "action_counts", "overlap_task", "overlap_observation"} <= set(per_candidate)
    permuted = dict(obs, **{k: obs[k][:, perm] for k in per_candidate})
    assert float(obs["action_counts"].max()) > 0  # the batch exercises the count feature
    with th.no_grad():
        logits_p = policy.mlp_extractor.forward_actor(policy.extract_features(permuted))
    th.testing.assert_close(logits_p, logits[:, perm], rtol=1e-5, atol=1e-6)
    # the initial policy is close to uniform over the candidates
    assert float(logits.abs().max()) < 0.1


def test_masked_candidates_are_never_chosen():
    model = _model()
    env = make_env()
    obs, _ = env.reset(seed=1)
    mask = env.action_masks()
    assert not mask.all()
    chosen = {int(model.predict(obs, deterministic=False, action_masks=mask)[0]) for _ in range(200)}
    assert chosen <= set(np.flatnonzero(mask).tolist())
    assert len(chosen) > 1  # stochastic policy explores several candidates


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_training_learns_toy_world_and_beats_random(seed):
    # budget and threshold measured over 20 seeds by benchmarks/bench_seed_robustness.py
    check = check_toy_policy(seed)
    assert check.passed, check


def test_save_load_roundtrip_gives_same_actions(tmp_path):
    model = _model()
    model.learn(256)
    path = tmp_path / "agent.zip"
    model.save(path)
    loaded = MaskablePPO.load(path, device="cpu")
    assert isinstance(loaded.policy, ActionScoringPolicy)
    assert loaded.policy.hidden_dim == 32
    obs = _obs_batch(make_env(), seed=3)
    for i in range(4):
        single = {k: v[i].numpy() for k, v in obs.items()}
        mask = single["action_mask"].astype(bool)
        a1 = model.predict(single, deterministic=True, action_masks=mask)[0]
        a2 = loaded.predict(single, deterministic=True, action_masks=mask)[0]
        assert int(a1) == int(a2)


@pytest.mark.parametrize("algorithm", ["ppo", "a2c"])
def test_unmasked_algorithms_train_a_few_steps(algorithm):
    model = _model(algorithm=algorithm)
    model.learn(200)
    assert model.num_timesteps >= 200
    assert isinstance(model.policy, ActionScoringPolicy)


def test_device_auto_picks_cuda_when_available():
    model = _model()
    assert model.device.type == ("cuda" if th.cuda.is_available() else "cpu")


def test_unknown_algorithm_and_scoring_are_rejected():
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'"):
        build_model(AgentSpec(algorithm="dqn"), make_vec_env([make_env]))
    with pytest.raises(ValueError, match="scoring"):
        build_model(AgentSpec(policy_kwargs={"scoring": "cosine"}), make_vec_env([make_env]))


@pytest.mark.parametrize("scoring", ["dot", "concat"])
def test_other_scorings_run(scoring):
    vec = make_vec_env([make_env])
    model = build_model(AgentSpec(algo_kwargs={"n_steps": 64}, policy_kwargs={"hidden_dim": 16, "scoring": scoring}),
                        vec, seed=0)
    model.learn(128)
    assert model.num_timesteps >= 128


def test_policy_accepts_dim_equal_to_max_actions():
    """Regression: text encodings of size dim == max_actions must not be read as per-candidate features."""
    env = TextActionWrapper(gym.make(TOY_ENV_ID), max_actions=16, dim=16)
    vec = make_vec_env([lambda: env])
    model = build_model(AgentSpec(algo_kwargs={"n_steps": 32, "batch_size": 16, "n_epochs": 1},
                                  policy_kwargs={"hidden_dim": 16}), vec, seed=0)
    extractor = model.policy.features_extractor
    assert "action_counts" in extractor.candidate_keys and "observation" in extractor.state_keys
    model.learn(64)
    obs = vec.reset()
    action, _ = model.predict(obs, action_masks=np.stack(vec.env_method("action_masks")))
    assert 0 <= int(action[0]) < int(vec.env_method("action_masks")[0].sum())


@pytest.mark.parametrize("scoring", ["product", "dot", "concat", "match"])
def test_head_without_per_candidate_features_scores_every_candidate(scoring):
    import torch

    from derl_gym.agents.inner.policy import ActionScoringHead

    head = ActionScoringHead(num_state_fields=2, max_actions=3, dim=4, hidden_dim=8, num_candidate_features=0,
                             scoring=scoring)
    logits, value_latent = head(torch.randn(5, 2 * 4 + 3 * 4))
    assert logits.shape == (5, 3) and value_latent.shape[0] == 5
    assert torch.isfinite(logits).all()
