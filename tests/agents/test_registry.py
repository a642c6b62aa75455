"""The inner-trainer registry: names, errors, and run_inner dispatching through it."""

from __future__ import annotations

import pytest
import torch as th

from derl_gym.agents.inner.registry import (InnerTrainer, TrainOutput, get_trainer, register_trainer,
                                            registered_trainers)
from derl_gym.runtime.inner import run_inner
from derl_gym.runtime.spec import AgentSpec, EnvSpec, InnerLoopSpec, PrimitiveSpec
from tests.toy_text_env import TOY_ENV_IMPORT_ID

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(algorithm: str, **agent_kwargs) -> InnerLoopSpec:
    env = EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 4})
    return InnerLoopSpec(name="toy", train_env=env, validation_env=EnvSpec(TOY_ENV_IMPORT_ID, {"num_games": 4, "game_offset": 50}),
                         test_envs={"L0": env},
                         primitives=PrimitiveSpec("derl_gym.rewards.primitives:agent_primitives", {"scorer": "progress"}),
                         agent=AgentSpec(algorithm=algorithm, **agent_kwargs), eval_episodes=3,
                         wrapper_kwargs={"max_actions": 8, "dim": 32})


def test_builtin_names_and_unknown_name_lists_them():
    assert {"maskable_ppo", "ppo", "a2c", "grpo"} <= set(registered_trainers())
    with pytest.raises(ValueError, match="unknown algorithm 'sac'.*maskable_ppo"):
        get_trainer("sac")
    with pytest.raises(ValueError, match="already registered"):
        register_trainer("ppo", lambda: None)  # type: ignore[arg-type,return-value]


class _Recorder(InnerTrainer):
    """A fake trainer that records what run_inner hands it."""

    calls: list[tuple] = []

    def train(self, spec, meta_reward, primitives, seed, init_model=None):
        self.calls.append(("train", meta_reward.canonical, seed, init_model, len(primitives)))
        return TrainOutput(agent={"seed": seed}, curve=[(1, 0.25), (2, 0.5)], env_steps=2,
                           extra={"train_episodes": 2, "train_success": 0.5})

    def evaluate(self, agent, spec, env_spec, episodes, seed):
        self.calls.append(("evaluate", env_spec.kwargs.get("game_offset", 0), episodes))
        return {"score": 0.75 if env_spec == spec.validation_env else 0.125, "episodes": episodes,
                "mean_length": 1.0, "env_steps": episodes}

    def save(self, agent, path):
        self.calls.append(("save", path))
        return path + ".json"

    def load(self, spec, path):
        return {}


def test_run_inner_dispatches_to_a_registered_trainer(tmp_path):
    register_trainer("recorder-test", _Recorder, overwrite=True)
    _Recorder.calls = []
    result = run_inner(_spec("recorder-test"), "g2 + g1", seed=7, eval_splits=("L0",), save_model=str(tmp_path / "a"))
    assert result.ok, result.error
    assert result.score == 0.75 and result.extra["test"] == {"L0": 0.125}
    assert result.curve == [(1, 0.25), (2, 0.5)] and result.env_steps == 2
    assert result.model_path == str(tmp_path / "a") + ".json"
    assert result.extra["train_success"] == 0.5 and "spec_hash" in result.extra
    assert _Recorder.calls[0][:4] == ("train", result.canonical, 7, None)
    assert ("evaluate", 50, 3) in _Recorder.calls


def test_sb3_trainer_save_and_load_without_unpickling(tmp_path):
    spec = _spec("maskable_ppo", total_timesteps=128, algo_kwargs={"n_steps": 64, "batch_size": 32},
                 policy_kwargs={"hidden_dim": 16})
    result = run_inner(spec, "g1", seed=0, save_model=str(tmp_path / "agent"))
    assert result.ok, result.error
    trainer = get_trainer("maskable_ppo")
    model = trainer.load(spec, result.model_path)
    from sb3_contrib import MaskablePPO

    reference = MaskablePPO.load(result.model_path, device="cpu").policy.state_dict()
    loaded = model.policy.state_dict()
    assert all(th.equal(reference[k], loaded[k]) for k in reference)
    again = trainer.evaluate(model, spec, spec.validation_env, spec.eval_episodes, 0 + 100_003)
    assert again["score"] == result.score
    with pytest.raises(FileNotFoundError, match="nope"):
        trainer.load(spec, str(tmp_path / "nope.zip"))
