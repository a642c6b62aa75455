"""InnerLoopSpec / InnerResult: round trips, the hash that keys the store, env preparation."""

from __future__ import annotations

import pickle

import gymnasium as gym
import pytest

from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, InnerResult, PrimitiveSpec


class _CountingEnv(gym.Env):
    """A do-nothing env that records how often it was made and closed."""

    made: list[str] = []
    closed: list[str] = []
    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def __init__(self, split: str = "train") -> None:
        self.split = split
        _CountingEnv.made.append(split)

    def close(self) -> None:
        _CountingEnv.closed.append(self.split)


COUNTING_ID = "derl_gym_test/Counting-v0"
if COUNTING_ID not in gym.registry:
    gym.register(COUNTING_ID, entry_point=_CountingEnv)


def _spec(**changes) -> InnerLoopSpec:
    base = InnerLoopSpec(
        name="t", train_env=EnvSpec(COUNTING_ID, {"split": "train"}),
        validation_env=EnvSpec(COUNTING_ID, {"split": "validation"}),
        primitives=PrimitiveSpec("derl_gym.rewards.primitives:agent_primitives"),
        agent=AgentSpec(total_timesteps=100), test_envs={"L0": EnvSpec(COUNTING_ID, {"split": "test"})})
    return base.replace(**changes)


def test_round_trips_and_pickles():
    spec = _spec()
    assert InnerLoopSpec.from_dict(spec.to_dict()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    result = InnerResult("g1", "g1", 0.5, curve=[(10, 0.1)], extra={"test": {"L0": 0.4}})
    assert InnerResult.from_dict(result.to_dict()) == result
    failed = InnerResult.failure("g1", "g1", "boom")
    assert not failed.ok and failed.score == 0.0 and failed.error == "boom"


def test_hash_ignores_labels_seed_and_test_envs_but_not_training():
    spec = _spec()
    assert _spec(name="other", description="x", seed=7, test_envs={}).spec_hash() == spec.spec_hash()
    assert _spec(agent=AgentSpec(total_timesteps=200)).spec_hash() != spec.spec_hash()
    assert _spec(reward_mode="step").spec_hash() != spec.spec_hash()
    assert _spec(train_env=EnvSpec(COUNTING_ID, {"split": "validation"})).spec_hash() != spec.spec_hash()


def test_prepare_makes_and_closes_every_env_once():
    _CountingEnv.made.clear()
    _CountingEnv.closed.clear()
    _spec().prepare()
    assert _CountingEnv.made == ["train", "validation", "test"]
    assert _CountingEnv.closed == ["train", "validation", "test"]


def test_primitive_spec_errors_name_the_factory():
    with pytest.raises(ValueError, match="package.module:function"):
        PrimitiveSpec("no_colon_here").build()
    assert len(PrimitiveSpec("derl_gym.rewards.primitives:agent_primitives").build()) == 4
