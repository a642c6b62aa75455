"""SB3 inner-run fast paths: the inline rollout forward, inference-mode rollouts and cheap VecEnv copies
change no number (old and fast paths train bit for bit alike)."""

from __future__ import annotations

import copy
from collections import OrderedDict

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

from derl_gym.agents.inner import build_model
from derl_gym.agents.inner.sb3_trainer import SB3Trainer, _ArrayCopiedObs, _ShallowCopiedInfos
from derl_gym.agents.inner.trainer import make_vec_env
from derl_gym.rewards.expression import MetaReward
from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, PrimitiveSpec
from derl_gym.wrappers.text_actions import TextActionWrapper
from tests.toy_text_env import TOY_ENV_ID, TOY_ENV_IMPORT_ID

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _make_env():
    return TextActionWrapper(gym.make(TOY_ENV_ID), max_actions=8, dim=32)


def test_inline_rollout_forward_matches_the_parent_bit_for_bit():
    vec = make_vec_env([_make_env] * 3)
    agent = AgentSpec(n_envs=3, algo_kwargs={"n_steps": 16}, policy_kwargs={"hidden_dim": 16})
    policy = build_model(agent, vec, seed=1).policy
    assert policy._fast_forward
    obs = vec.reset()
    for _ in range(12):
        masks = np.stack(vec.env_method("action_masks"))
        tensor = policy.obs_to_tensor(obs)[0]
        for deterministic in (False, True):
            with th.no_grad():
                state = th.get_rng_state()
                fast = policy(tensor, deterministic=deterministic, action_masks=masks)
                after_fast = th.get_rng_state()
                th.set_rng_state(state)
                parent = MaskableActorCriticPolicy.forward(policy, tensor, deterministic=deterministic,
                                                           action_masks=masks)
                assert th.equal(after_fast, th.get_rng_state())  # the same draws from torch's RNG
            for a, b in zip(fast, parent):
                assert a.shape == b.shape and th.equal(a, b)
        assert all(masks[i, int(a)] for i, a in enumerate(fast[0]))
        obs, *_ = vec.step(fast[0].numpy())
    # with autograd on (not the rollout path) the parent's forward runs and gradients flow
    actions, values, log_prob = policy(tensor, action_masks=masks)
    assert log_prob.requires_grad and values.requires_grad


def _spec(n_envs: int) -> InnerLoopSpec:
    env = EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 4})
    return InnerLoopSpec(name="toy", train_env=env, validation_env=EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 4, "game_offset": 50}),
                         test_envs={"L0": env},
                         primitives=PrimitiveSpec("derl_gym.rewards.primitives:agent_primitives", {"scorer": "progress"}),
                         agent=AgentSpec(total_timesteps=192, n_envs=n_envs,
                                         algo_kwargs={"n_steps": 64 // n_envs, "batch_size": 32},
                                         policy_kwargs={"hidden_dim": 16}),
                         eval_episodes=4, wrapper_kwargs={"max_actions": 8, "dim": 32})


def _train(spec: InnerLoopSpec, monkeypatch, fast: bool):
    monkeypatch.setenv("DERL_GYM_INNER_FAST", "1" if fast else "0")
    primitives = spec.primitives.build()
    trainer = SB3Trainer()
    out = trainer.train(spec, MetaReward("g1 + g4", primitives), primitives, seed=2)
    assert "collect_rollouts" not in vars(out.agent)  # the inference-mode wrapper is gone after learn
    score = trainer.evaluate(out.agent, spec, spec.validation_env, spec.eval_episodes, seed=5)
    return out, score


@pytest.mark.parametrize("n_envs", [1, 2])
def test_old_and_fast_paths_train_bit_for_bit_alike(monkeypatch, n_envs):
    spec = _spec(n_envs)
    old, old_score = _train(spec, monkeypatch, fast=False)
    new, new_score = _train(spec, monkeypatch, fast=True)
    assert old.curve == new.curve and old.env_steps == new.env_steps == 192
    old_params, new_params = old.agent.policy.state_dict(), new.agent.policy.state_dict()
    assert all(th.equal(old_params[k], new_params[k]) for k in old_params)
    assert old_score == new_score


def test_cheap_vec_copies_are_equal_and_independent():
    terminal = {"actions": np.ones((2, 3), dtype=np.float32)}
    infos = _ShallowCopiedInfos([{"won": True, "candidates": ["a", "b"], "terminal_observation": terminal}, {}])
    copied = copy.deepcopy(infos)
    assert type(copied) is list and copied == list(infos)
    assert copied[0] is not infos[0] and copied[0]["terminal_observation"] is not terminal
    copied[0]["won"] = False
    assert infos[0]["won"] is True
    buffers = _ArrayCopiedObs([("a", np.arange(6.0).reshape(2, 3)), ("b", np.zeros(4, dtype=bool))])
    obs = copy.deepcopy(buffers)
    assert isinstance(obs, OrderedDict) and list(obs) == ["a", "b"]
    assert all(np.array_equal(obs[k], buffers[k]) and obs[k].dtype == buffers[k].dtype for k in obs)
    obs["a"][0, 0] = 99.0
    assert buffers["a"][0, 0] == 0.0  # a copy, not a view of the buffer
