"""env.spec rebuilds a wrapped env: the wrappers record their arguments (RecordConstructorArgs).

Each test builds a wrapped env, rebuilds it with ``gymnasium.make(env.spec)`` (and, where the
arguments are serialisable, through ``EnvSpec.to_json``/``from_json``), plays the same actions on both
and compares observations, rewards and the Meta-Reward's ``info``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

from derl_gym.rewards import MetaReward, Primitive, agent_primitives
from derl_gym.runtime.spec import PrimitiveSpec
from derl_gym.wrappers import ActionTagWrapper, MetaRewardWrapper, TextActionWrapper, spec_with_wrappers
from derl_gym.wrappers.text_actions import HashEncoder
from tests.toy_text_env import TOY_ENV_ID

TOY = dict(num_locations=5, num_objects=3, num_games=4, max_episode_steps=12)


def _play(env: gym.Env, actions, seed: int = 3) -> list[tuple]:
    """Reset with ``seed`` and step ``actions`` (index or callable(info) -> action) until done."""
    obs, info = env.reset(seed=seed)
    trace = [(obs, None, None, None)]
    for action in actions:
        if callable(action):
            action = action(info)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, info.get("meta_reward"), info.get("task_reward")))
        if terminated or truncated:
            break
    return trace


def _assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b) > 1
    for (obs_a, *rest_a), (obs_b, *rest_b) in zip(a, b):
        if isinstance(obs_a, dict):
            assert obs_a.keys() == obs_b.keys()
            for key in obs_a:
                np.testing.assert_array_equal(obs_a[key], obs_b[key], err_msg=key)
        else:
            assert obs_a == obs_b
        assert rest_a == rest_b


def _wrappers(env: gym.Env) -> list[str]:
    return [w.name for w in env.spec.additional_wrappers]


def _commands(info) -> str:
    """A fixed policy on text actions: the last admissible command that is not look/examine."""
    usable = [c for c in info["admissible_commands"] if not c.startswith(("look", "examine"))]
    return sorted(usable)[-1]


def _index(info) -> int:
    """The same policy on candidate indices (TextActionWrapper)."""
    candidates = list(info["candidates"])
    return candidates.index(_commands({"admissible_commands": candidates}))


def test_meta_reward_and_text_action_stack_rebuilds_from_spec_and_json():
    env = TextActionWrapper(MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), "g1 + 0.5*g2 - g4", mode="step"),
                            max_actions=8, dim=32, history_length=2)
    assert _wrappers(env) == ["MetaRewardWrapper", "TextActionWrapper"]
    meta_kwargs, text_kwargs = (w.kwargs for w in env.spec.additional_wrappers)
    assert meta_kwargs == {"expression": "g1 + 0.5*g2 - g4", "primitives": None, "mode": "step"}
    assert text_kwargs["max_actions"] == 8 and text_kwargs["dim"] == 32 and text_kwargs["encoder"] == "hash"

    rebuilt = gym.make(env.spec)
    from_json = gym.make(EnvSpec.from_json(env.spec.to_json()))
    actions = [_index] * 12
    original = _play(env, actions)
    assert any(r for _, r, _, _ in original[1:]), "the action sequence should move a primitive"
    _assert_same(original, _play(rebuilt, actions))
    _assert_same(original, _play(from_json, actions))
    assert isinstance(rebuilt, TextActionWrapper) and isinstance(rebuilt.env, MetaRewardWrapper)
    assert rebuilt.env.mode == "step" and rebuilt.observation_space == env.observation_space


def test_explicit_default_set_and_factory_references_are_recorded_serialisably():
    base = gym.make(TOY_ENV_ID, **TOY)
    # the env's default set given explicitly: recorded as None (the default)
    assert MetaRewardWrapper(base, "g1", agent_primitives()).spec.additional_wrappers[-1].kwargs["primitives"] is None
    # another set: a factory reference is kept as given (string, mapping, PrimitiveSpec)
    factory = "derl_gym.rewards.primitives:agent_primitives"
    forms = {
        "string": (factory, factory),
        "mapping": ({"factory": factory, "kwargs": {"scorer": "valid"}}, {"factory": factory, "kwargs": {"scorer": "valid"}}),
        "PrimitiveSpec": (PrimitiveSpec(factory, {"scorer": "valid"}), {"factory": factory, "kwargs": {"scorer": "valid"}}),
    }
    for label, (given, recorded) in forms.items():
        env = MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), "g1 + g2 + g3 + g4", given)
        assert env.spec.additional_wrappers[-1].kwargs["primitives"] == recorded, label
        rebuilt = gym.make(EnvSpec.from_json(env.spec.to_json()))
        assert rebuilt.primitives.names == env.primitives.names, label
        actions = [_commands] * 10
        _assert_same(_play(env, actions), _play(rebuilt, actions))
    # the "valid" scorer differs from the default "progress" one: not recorded as None
    assert MetaRewardWrapper(base, "g1", agent_primitives("valid")).spec.additional_wrappers[-1].kwargs["primitives"] \
        is not None


def test_primitive_objects_rebuild_in_process_but_do_not_serialise():
    steps = Primitive("steps", "episode length / 12", lambda traj: len(traj) / 12)
    env = MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), "1 - g1", [steps])
    rebuilt = gym.make(env.spec)
    actions = [_commands] * 12
    original = _play(env, actions)
    assert original[-1][2] == pytest.approx(1 - (len(original) - 1) / 12)
    _assert_same(original, _play(rebuilt, actions))
    with pytest.raises(TypeError):
        env.spec.to_json()


def test_meta_reward_object_with_other_aliases_is_recorded_as_positional_text():
    meta = MetaReward("a + 2*b - 1e-1*a", ["a", "b"])          # a = g1, b = g2 of whatever set it reads
    env = MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), meta)
    recorded = env.spec.additional_wrappers[-1].kwargs["expression"]
    assert recorded == "g1 + 2*g2 - 1e-1*g1"
    rebuilt = gym.make(EnvSpec.from_json(env.spec.to_json()))
    assert rebuilt.expression.text == recorded
    actions = [_commands] * 12
    _assert_same(_play(env, actions), _play(rebuilt, actions))
    # aliases that are the set's own names are kept as written
    named = MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), MetaReward("success + progress_first", agent_primitives()))
    assert named.spec.additional_wrappers[-1].kwargs["expression"] == "success + progress_first"


def test_text_action_encoder_recording():
    default_hash = TextActionWrapper(gym.make(TOY_ENV_ID, **TOY), encoder=HashEncoder(dim=48))
    kwargs = default_hash.spec.additional_wrappers[-1].kwargs
    assert (kwargs["encoder"], kwargs["dim"]) == ("hash", 48)
    assert gym.make(default_hash.spec).observation_space == default_hash.observation_space
    custom = HashEncoder(dim=16, char_ngrams=(2, 3))
    env = TextActionWrapper(gym.make(TOY_ENV_ID, **TOY), encoder=custom, max_actions=6)
    assert env.spec.additional_wrappers[-1].kwargs["encoder"] is custom       # kept, not copied
    actions = [0, 2, 1, 3, 4, 0, 1]
    _assert_same(_play(env, actions), _play(gym.make(env.spec), actions))


def test_action_tag_wrapper_inside_meta_reward_rebuilds():
    tagged = lambda info: f"<planning>plan</planning><action>{_commands(info)}</action>"  # noqa: E731
    env = MetaRewardWrapper(ActionTagWrapper(gym.make(TOY_ENV_ID, **TOY)), "g1 + g4")
    assert _wrappers(env) == ["ActionTagWrapper", "MetaRewardWrapper"]
    rebuilt = gym.make(EnvSpec.from_json(env.spec.to_json()))
    assert isinstance(rebuilt.env, ActionTagWrapper)
    actions = [tagged] * 12
    original = _play(env, actions)
    assert env.trajectory.steps[0].action.startswith("<planning>")    # the trajectory keeps the whole answer
    _assert_same(original, _play(rebuilt, actions))


def test_wrappers_applied_through_a_spec_match_direct_wrapping():
    spec = spec_with_wrappers(TOY_ENV_ID, MetaRewardWrapper.wrapper_spec(expression="g1 + 0.5*g3", mode="step"),
                              TextActionWrapper.wrapper_spec(max_actions=8, dim=32), **TOY)
    assert gym.spec(TOY_ENV_ID).additional_wrappers == ()                # the registry is unchanged
    through_spec = gym.make(spec)
    direct = TextActionWrapper(MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), "g1 + 0.5*g3", mode="step"),
                               max_actions=8, dim=32)
    actions = [1, 4, 0, 2, 6, 3, 1, 0, 2, 5, 1, 3]
    _assert_same(_play(direct, actions), _play(through_spec, actions))
    with pytest.raises(TypeError, match="WrapperSpec"):
        spec_with_wrappers(TOY_ENV_ID, MetaRewardWrapper)


def test_registered_with_additional_wrappers():
    env_id = "derl_gym_test/ToyTextMeta-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point="tests.toy_text_env:ToyTextEnv", kwargs=TOY, disable_env_checker=True,
                     additional_wrappers=(MetaRewardWrapper.wrapper_spec(expression="2*g1 - g2"),))
    env = gym.make(env_id)
    assert isinstance(env, MetaRewardWrapper) and env.expression.text == "2*g1 - g2"
    actions = [_commands] * 12
    _assert_same(_play(MetaRewardWrapper(gym.make(TOY_ENV_ID, **TOY), "2*g1 - g2"), actions), _play(env, actions))
    _assert_same(_play(env, actions), _play(gym.make(env.spec), actions))


def test_gsm8k_wrapped_through_a_spec_and_rebuilt(shared_data_dir):
    kwargs = dict(split="validation", data_dir=str(shared_data_dir), max_problems=4)
    spec = spec_with_wrappers("derl_gym/GSM8K-v0", MetaRewardWrapper.wrapper_spec(expression="g1 + 0.5*g2"), **kwargs)
    env = gym.make(spec)
    rebuilt = gym.make(EnvSpec.from_json(env.spec.to_json()))
    direct = MetaRewardWrapper(gym.make("derl_gym/GSM8K-v0", **kwargs), "g1 + 0.5*g2")

    def right(e: gym.Env) -> list:
        return [lambda info: f"Step 1: add.\nSo \\boxed{{{e.unwrapped.current_problem.ground_truth}}}"]

    for seed in range(3):
        first = _play(direct, right(direct), seed=seed)
        assert first[-1][2] == pytest.approx(1.5) and first[-1][3] == 1.0    # correct and boxed
        _assert_same(first, _play(env, right(env), seed=seed))
        _assert_same(first, _play(rebuilt, right(rebuilt), seed=seed))
        wrong = ["The answer is 123456789."]
        _assert_same(_play(direct, wrong, seed=seed), _play(rebuilt, wrong, seed=seed))
