"""TextActionWrapper: spaces, candidate order/truncation, masks (also through VecEnvs), encoders."""

from __future__ import annotations

import string

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from derl_gym.wrappers.text_actions import HashEncoder, SentenceEncoder, TextActionWrapper, make_encoder
from tests.toy_text_env import TOY_ENV_ID, TOY_ENV_IMPORT_ID, ToyTextEnv


class ListEnv(gym.Env):
    """Text env whose admissible commands are given (in a chosen order) by the test."""

    def __init__(self, commands, order_seed=0):
        self.commands = list(commands)
        self.order_seed = order_seed
        self.observation_space = spaces.Text(max_length=512, charset=string.printable)
        self.action_space = spaces.Text(max_length=128, charset=string.printable)
        self.received = []

    def _info(self):
        cmds = list(self.commands)
        np.random.default_rng(self.order_seed).shuffle(cmds)
        return {"admissible_commands": cmds, "task": "put a mug in the sink.", "won": False}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "You are in a kitchen.", self._info()

    def step(self, action):
        self.received.append(action)
        valid = action in self.commands
        info = {**self._info(), "valid_action": valid}
        return ("Nothing happens." if not valid else "Done."), 0.0, False, False, info


def test_spaces_shapes_and_mask_match_candidates():
    env = TextActionWrapper(ToyTextEnv(num_locations=4), max_actions=10, dim=32)
    obs, info = env.reset(seed=0)
    assert isinstance(env.observation_space, spaces.Dict)
    assert set(obs) == {"observation", "task", "history", "actions", "action_mask", "action_counts",
                        "overlap_observation", "overlap_task", "overlap_history"}
    assert env.action_space == spaces.Discrete(10)
    assert obs["actions"].shape == (10, 32) and obs["actions"].dtype == np.float32
    assert obs in env.observation_space
    n = len(info["candidates"])
    assert n == len(set(info["admissible_commands"]))  # toy env has fewer than 10 commands
    mask = env.action_masks()
    assert mask.dtype == bool and mask.sum() == n and mask[:n].all()
    np.testing.assert_array_equal(obs["action_mask"], mask.astype(np.float32))
    # candidate rows are unit vectors, unused rows are zero
    norms = np.linalg.norm(obs["actions"], axis=1)
    np.testing.assert_allclose(norms[:n], 1.0, rtol=1e-5)
    assert np.all(norms[n:] == 0)
    # the history is empty at reset, and holds the last command after a step
    assert np.all(obs["history"] == 0)
    obs2, *_ , info2 = env.step(0)
    assert info2["command"] == info["candidates"][0]
    np.testing.assert_allclose(obs2["history"], env.encoder.encode([info["candidates"][0]])[0])
    # the sent command's count feature is n/(n+1) = 0.5 wherever it is still a candidate
    sent = info["candidates"][0]
    for i, cand in enumerate(info2["candidates"]):
        assert obs2["action_counts"][i] == (0.5 if cand == sent else 0.0)
    assert np.all(obs["action_counts"] == 0)


def test_check_env_passes():
    check_env(TextActionWrapper(ToyTextEnv(), max_actions=8, dim=16), warn=False)
    check_env(TextActionWrapper(ToyTextEnv(), max_actions=8, dim=16,
                                include=("observation", "task", "inventory", "history")), warn=False)


def test_candidate_order_is_independent_of_engine_order():
    cmds = ["take mug 1 from sinkbasin 1", "go to fridge 1", "open fridge 1", "examine sinkbasin 1", "look"]
    first = TextActionWrapper(ListEnv(cmds, order_seed=1), max_actions=8, dim=32)
    second = TextActionWrapper(ListEnv(cmds, order_seed=7), max_actions=8, dim=32)
    obs1, info1 = first.reset()
    obs2, info2 = second.reset()
    assert info1["admissible_commands"] != info2["admissible_commands"]
    assert info1["candidates"] == info2["candidates"] == sorted(cmds)
    np.testing.assert_array_equal(obs1["actions"], obs2["actions"])


def test_truncation_drops_low_priority_commands_first_and_exclude_filters():
    cmds = ["look", "inventory", "examine b", "go to a", "go to b", "take x from a", "put x in b"]
    env = TextActionWrapper(ListEnv(cmds), max_actions=4, dim=16)
    _, info = env.reset()
    assert info["candidates"] == ["go to a", "go to b", "put x in b", "take x from a"]
    env = TextActionWrapper(ListEnv(cmds), max_actions=5, dim=16)
    _, info = env.reset()
    assert info["candidates"] == ["examine b", "go to a", "go to b", "put x in b", "take x from a"]
    env = TextActionWrapper(ListEnv(cmds), max_actions=16, dim=16, exclude=("look", "examine", "inventory"))
    _, info = env.reset()
    assert info["candidates"] == ["go to a", "go to b", "put x in b", "take x from a"]
    # excluding everything keeps the unfiltered list rather than leaving no command
    env = TextActionWrapper(ListEnv(["look"]), max_actions=4, dim=16, exclude=("look",))
    _, info = env.reset()
    assert info["candidates"] == ["look"]


def test_masked_index_sends_invalid_command_and_env_answers():
    inner = ListEnv(["go to a", "go to b"])
    env = TextActionWrapper(inner, max_actions=6, dim=16, invalid_command="noop")
    env.reset()
    obs, reward, terminated, truncated, info = env.step(5)
    assert inner.received == ["noop"] and info["command"] == "noop"
    assert info["valid_action"] is False and not terminated
    env.step(np.int64(1))
    assert inner.received[-1] == "go to b"
    # in the toy world the invalid command is answered, not raised
    toy = TextActionWrapper(ToyTextEnv(), max_actions=12, dim=16)
    toy.reset(seed=0)
    _, _, _, _, info = toy.step(11)
    assert info["valid_action"] is False and info["command"] == "noop"


def test_action_masks_through_dummy_and_subproc_vec_envs():
    def make():
        return TextActionWrapper(gym.make(TOY_ENV_ID), max_actions=12, dim=16)

    vec = DummyVecEnv([make, make])
    vec.seed(3)
    vec.reset()
    masks = get_action_masks(vec)
    assert masks.shape == (2, 12) and masks.dtype == bool
    expected = [len(c) for c in vec.get_attr("candidates")]
    assert masks.sum(axis=1).tolist() == expected
    vec.close()

    def make_spawned():  # the spawned worker imports the toy env via the module:id form
        return TextActionWrapper(gym.make(TOY_ENV_IMPORT_ID), max_actions=12, dim=16)

    sub = SubprocVecEnv([make_spawned, make_spawned], start_method="spawn")
    try:
        sub.seed(3)
        sub.reset()
        sub_masks = get_action_masks(sub)
        np.testing.assert_array_equal(sub_masks, masks)
    finally:
        sub.close()


def test_overlap_features_measure_shared_words():
    cmds = ["take mug 1 from sinkbasin 1", "go to fridge 1", "move mug 1 to sink 1"]
    env = TextActionWrapper(ListEnv(cmds), max_actions=4, dim=16)
    obs, info = env.reset()  # task: "put a mug in the sink."; observation: "You are in a kitchen."
    assert info["candidates"] == ["go to fridge 1", "move mug 1 to sink 1", "take mug 1 from sinkbasin 1"]
    np.testing.assert_allclose(obs["overlap_task"], [0.0, 2 / 4, 1 / 4, 0.0])
    np.testing.assert_allclose(obs["overlap_observation"], [0.0, 0.0, 0.0, 0.0])
    obs, *_ = env.step(0)  # history is now "go to fridge 1"
    np.testing.assert_allclose(obs["overlap_history"], [1.0, 1 / 4, 0.0, 0.0])
    plain = TextActionWrapper(ListEnv(cmds), max_actions=4, dim=16, overlap_features=False, count_actions=False)
    assert set(plain.reset()[0]) == {"observation", "task", "history", "actions", "action_mask"}


def test_hash_encoder_properties():
    enc = HashEncoder(dim=128)
    vecs = enc.encode(["take apple 1 from countertop 1", "take apple 2 from countertop 1", "go to fridge 1", ""])
    assert vecs.shape == (4, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-5)
    assert np.all(vecs[3] == 0)
    # similar texts are closer than unrelated ones
    assert vecs[0] @ vecs[1] > 0.5 > vecs[0] @ vecs[2]
    # stable across instances (no per-process hash salt) and cached per text
    np.testing.assert_array_equal(HashEncoder(dim=128).encode(["go to fridge 1"])[0], vecs[2])
    assert enc.encode_one("go to fridge 1") is enc.encode_one("go to fridge 1")
    # case-insensitive word features
    np.testing.assert_array_equal(enc.encode_one("Go To Fridge 1"), vecs[2])


def test_hash_encoder_cache_is_bounded():
    enc = HashEncoder(dim=16, cache_size=3)
    for i in range(10):
        enc.encode_one(f"text {i}")
    assert len(enc._cache) == 3


def test_sentence_encoder_missing_local_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*never downloads"):
        SentenceEncoder(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        make_encoder(f"sentence:{missing}")
    with pytest.raises(ValueError, match="unknown encoder 'bert'"):
        make_encoder("bert")


def test_wrapper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_actions"):
        TextActionWrapper(ToyTextEnv(), max_actions=0)
    with pytest.raises(ValueError, match="include"):
        TextActionWrapper(ToyTextEnv(), include=("task",))


def test_sentence_encoder_from_a_local_tiny_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "go", "to", "fridge", "take", "apple", "from", "table", "1"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(tmp_path)
    enc = make_encoder(f"sentence:{tmp_path}")
    assert isinstance(enc, SentenceEncoder) and enc.dim == 16 and enc.device in ("cpu", "cuda")
    vecs = enc.encode(["go to fridge 1", "take apple 1 from table 1", "go to fridge 1"])
    assert vecs.shape == (3, 16) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])
    assert not np.allclose(vecs[0], vecs[1])
    env = TextActionWrapper(ToyTextEnv(), max_actions=8, encoder=enc)
    obs, _ = env.reset(seed=0)
    assert obs["actions"].shape == (8, 16) and obs in env.observation_space


def test_fast_path_observations_equal_the_old_path_bit_for_bit(monkeypatch):
    """The candidate-block cache and the bincount hashing (DERL_GYM_INNER_FAST) change no number."""
    def episode(fast: str):
        monkeypatch.setenv("DERL_GYM_INNER_FAST", fast)
        env = TextActionWrapper(ToyTextEnv(num_locations=4, num_games=3), max_actions=6, dim=32,
                                include=("observation", "task", "history"))
        rng = np.random.default_rng(0)
        out = [env.reset(seed=1)]
        for _ in range(40):
            masks = env.action_masks()
            obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(masks))))
            out.append((obs, info, masks))
            if terminated or truncated:
                out.append(env.reset())
        return out

    old, new = episode("0"), episode("1")
    assert len(old) == len(new)
    for a, b in zip(old, new):
        assert set(a[0]) == set(b[0])
        for key in a[0]:
            assert a[0][key].dtype == b[0][key].dtype and np.array_equal(a[0][key], b[0][key]), key
        assert a[1]["candidates"] == b[1]["candidates"]
        if len(a) == 3:
            np.testing.assert_array_equal(a[2], b[2])


def test_candidate_block_cache_is_bounded_and_reused():
    cmds = [f"go to shelf {i}" for i in range(3)]
    env = TextActionWrapper(ListEnv(cmds), max_actions=4, dim=16, block_cache_size=2)
    obs, _ = env.reset()
    obs["actions"][0] = 5.0  # an observation is the caller's own copy
    again, _ = env.reset()
    assert np.linalg.norm(again["actions"][0]) == pytest.approx(1.0)
    for seed in range(5):
        env.env.order_seed = seed  # same commands, other engine order: one block
        env.reset()
    assert len(env._blocks) <= 2  # five engine orders, two blocks kept
    enc = HashEncoder(dim=16, cache_size=3)
    for i in range(10):
        enc.encode_one(f"word{i} text")
    assert len(enc._cache) == 3 and len(enc._words) <= enc._words.maxsize
