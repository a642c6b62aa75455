"""Multi-turn GRPO on ALFWorld: conversations with env tokens masked, task-reward validation, run_inner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("textworld")

from derl_gym.agents.inner.registry import get_trainer  # noqa: E402
from derl_gym.agents.inner.trl_trainer import (ActionTagWrapper, EpisodePlayer, LMAgent, extract_action,  # noqa: E402
                                               grpo_settings)
from derl_gym.runtime.inner import run_inner  # noqa: E402
from derl_gym.runtime.presets import get_preset  # noqa: E402
from derl_gym.runtime.spec import EnvSpec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GAME = str(Path(__file__).resolve().parents[1] / "data" / "alfworld" / "clean_apple_in_fridge.tw-pddl")
WALKTHROUGH = ['go to countertop 1', 'take apple 2 from countertop 1', 'go to sinkbasin 1',
               'clean apple 2 with sinkbasin 1', 'go to fridge 1', 'open fridge 1', 'move apple 2 to fridge 1']


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path_factory.getbasetemp() / "derl-cache"))


class _WalkthroughModel:
    """A stand-in LM that answers turn t with the walkthrough's t-th command (or nonsense when ``bad``)."""

    training = False

    def __init__(self, tokenizer, bad: bool = False):
        self.tok, self.bad = tokenizer, bad

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask=None, max_new_tokens=8, **kwargs):
        import torch

        rows = []
        for ids in input_ids.tolist():
            turn = self.tok.decode(ids).count("<|im_start|>assistant") - 1
            reply = ("<explore>hm</explore> <action>dance</action>" if self.bad else
                     f"<planning>step {turn}</planning> <action>{WALKTHROUGH[turn]}</action>")
            rows.append(ids + self.tok(reply, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id])
        width = max(map(len, rows))

        class Out:
            sequences = torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])
            scores = ()

        return Out()


def _spec():
    env = EnvSpec("derl_gym/ALFWorld-v0", {"games": [GAME], "max_episode_steps": 10})
    spec = get_preset("alfworld-lm-tiny")
    return spec.replace(train_env=env, validation_env=env, test_envs={}, eval_episodes=2)


def test_extract_action_and_wrapper():
    assert extract_action("<planning>x</planning> <action> go to desk 1 </action>") == "go to desk 1"
    assert extract_action("<action>a</action><action>b</action>") == "b"
    assert extract_action("  look ") == "look"
    import gymnasium as gym

    env = ActionTagWrapper(gym.make("derl_gym/ALFWorld-v0", games=[GAME]))
    env.reset()
    _, _, _, _, info = env.step("<planning>go</planning> <action>go to countertop 1</action>")
    assert info["valid_action"] and info["progress"] == 1.0


def test_conversation_masks_env_tokens_and_reward_is_the_meta_reward(tiny_cache):
    from derl_gym.models import load_causal_lm
    from derl_gym.rewards.expression import MetaReward
    from derl_gym.agents.inner.trl_trainer import _WrappedEnvFactory

    spec = _spec()
    _, tok = load_causal_lm("tiny", device="cpu")
    prims = spec.primitives.build()
    formula = "g1 + 0.5*g2 - 0.25*g4"
    player = EpisodePlayer(_WrappedEnvFactory(spec, formula), tok, grpo_settings(spec.agent), "cpu")
    try:
        [episode] = player.play(_WalkthroughModel(tok), [0], greedy=True)
        wrapped = player.envs[0]
        values, expected = wrapped.compute()
    finally:
        player.close()
    assert episode["success"] and episode["turns"] == len(WALKTHROUGH)
    assert episode["reward"] == pytest.approx(expected) and expected == pytest.approx(
        float(MetaReward(formula, prims).evaluate(values[None, :])[0]))
    ids, mask = np.array(episode["completion_ids"]), np.array(episode["env_mask"])
    assert len(ids) == len(mask) == len(episode["logprobs"]) and mask[-1] == 1
    model_text = tok.decode(ids[mask == 1].tolist())
    env_text = tok.decode(ids[mask == 0].tolist())
    assert all(f"<action>{c}</action>" in model_text for c in WALKTHROUGH)
    assert "You arrive" in env_text and "You arrive" not in model_text and "<action>" not in env_text
    assert "Your task is to: put a clean apple in fridge" in tok.decode(episode["prompt_ids"])


def test_validation_is_task_success_whatever_the_formula(tiny_cache, monkeypatch):
    from derl_gym.models import load_causal_lm
    from derl_gym.wrappers import meta_reward

    spec = _spec()
    _, tok = load_causal_lm("tiny", device="cpu")

    def forbidden(*args, **kwargs):
        raise AssertionError("evaluation built a MetaRewardWrapper")

    monkeypatch.setattr(meta_reward.MetaRewardWrapper, "__init__", forbidden)
    trainer = get_trainer("grpo")
    good = trainer.evaluate(LMAgent(_WalkthroughModel(tok), tok, grpo_settings(spec.agent)), spec,
                            spec.validation_env, 2, seed=0)
    bad = trainer.evaluate(LMAgent(_WalkthroughModel(tok, bad=True), tok, grpo_settings(spec.agent)), spec,
                           spec.validation_env, 2, seed=0)
    assert good == {"score": 1.0, "episodes": 2, "mean_length": 7.0, "env_steps": 14}
    assert bad["score"] == 0.0 and bad["mean_length"] == 10.0


def test_run_inner_on_alfworld_lm_tiny_is_ok(tiny_cache):
    spec = get_preset("alfworld-lm-tiny", total_timesteps=8, eval_episodes=2)

    def small(env_spec):  # few games so that a fresh cache generates them quickly
        generator = {**env_spec.kwargs["generator"], "games_per_task": 5, "test_games_per_task": 2}
        return EnvSpec(env_spec.env_id, {**env_spec.kwargs, "generator": generator})

    spec = spec.replace(train_env=small(spec.train_env), validation_env=small(spec.validation_env),
                        test_envs={"L0": small(spec.test_envs["L0"])})
    result = run_inner(spec, "g1 + 0.5*(g2 + g3 + g4)/3", seed=0, eval_splits=("L0",))
    assert result.ok, result.error
    assert result.extra["grpo_steps"] == 2 and result.extra["train_episodes"] == 8
    assert result.extra["validation"]["episodes"] == 2 and 0.0 <= result.extra["test"]["L0"] <= 1.0
    assert result.env_steps >= 8
