"""Inner-loop presets: registry, overrides, descriptions, picklability, ALFWorld split wiring."""

from __future__ import annotations

import pickle

import pytest

from derl_gym.runtime.presets import PRESETS, describe_presets, get_preset, preset_names
from derl_gym.runtime.spec import InnerLoopSpec


def test_required_presets_exist_and_build():
    for name in ("alfworld-tiny", "alfworld-small", "alfworld-l2", "scienceworld-tiny"):
        assert name in PRESETS
        spec = get_preset(name)
        assert isinstance(spec, InnerLoopSpec) and spec.name == name
        assert spec.agent.algorithm == "maskable_ppo" and spec.agent.total_timesteps > 0
        assert spec.validation_env.kwargs["split"] == "validation"
        assert spec.train_env.kwargs["split"] == "train"
        assert InnerLoopSpec.from_dict(spec.to_dict()) == spec
        assert pickle.loads(pickle.dumps(spec)) == spec


def test_tiny_preset_is_one_task_type_with_l0_l1_tests():
    spec = get_preset("alfworld-tiny")
    assert spec.train_env.kwargs["task_types"] == ["pick_and_place_simple"]
    assert spec.train_env.kwargs["generator"]["num_receptacles"] <= 3
    assert set(spec.test_envs) == {"L0", "L1"}
    assert spec.test_envs["L0"].kwargs["split"] == spec.test_envs["L1"].kwargs["split"] == "test"
    assert spec.test_envs["L1"].kwargs["level"] == "L1"
    assert spec.primitives.build().variables == ["g1", "g2", "g3", "g4"]


def test_l2_preset_holds_out_cool_and_pick_two():
    spec = get_preset("alfworld-l2")
    train = set(spec.train_env.kwargs["task_types"])
    test = set(spec.test_envs["L2"].kwargs["task_types"])
    assert train == {"pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
                     "pick_heat_then_place_in_recep"}
    assert test == {"pick_cool_then_place_in_recep", "pick_two_obj_and_place"}
    assert spec.test_envs["L2"].kwargs["level"] == "L2"


def test_overrides_replace_spec_and_agent_fields_and_leave_the_registry_alone():
    spec = get_preset("alfworld-tiny", seed=7, eval_episodes=5, total_timesteps=123, n_envs=2)
    assert (spec.seed, spec.eval_episodes, spec.agent.total_timesteps, spec.agent.n_envs) == (7, 5, 123, 2)
    fresh = get_preset("alfworld-tiny")
    assert fresh.agent.total_timesteps != 123 and fresh.seed == 0
    assert spec.spec_hash() != fresh.spec_hash()
    assert get_preset("alfworld-tiny", seed=7).spec_hash() == fresh.spec_hash()  # seed is not hashed
    with pytest.raises(TypeError, match="unknown override"):
        get_preset("alfworld-tiny", learning_rate=1.0)


def test_unknown_preset_lists_the_known_names():
    with pytest.raises(KeyError, match="alfworld-tiny.*alfworld-l2|alfworld-l2.*alfworld-tiny"):
        get_preset("alfworld-huge")


def test_describe_presets_mentions_every_preset_and_budget():
    text = describe_presets()
    for name in preset_names():
        assert name in text
        assert f"{get_preset(name).agent.total_timesteps:,} env steps" in text
    assert text.count("wall time:") == len(preset_names())


def test_tiny_preset_envs_build_on_real_alfworld():
    pytest.importorskip("textworld")
    from derl_gym.runtime.inner import make_eval_env
    from derl_gym.runtime.spec import EnvSpec

    spec = get_preset("alfworld-tiny")
    small = dict(spec.validation_env.kwargs, generator={**spec.validation_env.kwargs["generator"], "games_per_task": 5})
    env = make_eval_env(spec, EnvSpec(spec.validation_env.env_id, small))
    obs, info = env.reset(seed=0)
    assert "pick_and_place" not in info["task"]  # a natural-language task sentence
    assert info["candidates"] and env.action_masks().sum() == len(info["candidates"])
    assert not any(c.startswith(("look", "examine", "inventory")) for c in info["candidates"])
    env.close()
