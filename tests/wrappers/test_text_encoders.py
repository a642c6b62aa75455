"""Tests of derl_gym.wrappers.text_encoders: the names that rebuild an encoder and the word tokens."""

from __future__ import annotations

import numpy as np
import pytest

from derl_gym.wrappers import text_actions
from derl_gym.wrappers.text_encoders import HashEncoder, encoder_name, make_encoder, word_tokens

TEXTS = ["take apple 1 from countertop 2", "Your task is to: put a clean mug in the fridge.", ""]


@pytest.mark.parametrize("dim", [16, 97, 256])
def test_encoder_name_rebuilds_an_equal_hash_encoder(dim):
    original = HashEncoder(dim=dim)
    name = encoder_name(original)
    rebuilt = make_encoder(name, dim=original.dim)
    assert type(rebuilt) is HashEncoder and rebuilt.dim == dim
    np.testing.assert_array_equal(rebuilt.encode(TEXTS), original.encode(TEXTS))


@pytest.mark.parametrize("kwargs", [{"word_ngrams": (1,)}, {"char_ngrams": (2, 3)}, {"cache_size": 10}])
def test_encoder_name_is_none_when_a_name_would_not_rebuild_it(kwargs):
    assert encoder_name(HashEncoder(dim=32, **kwargs)) is None


def test_encoder_name_is_none_for_a_foreign_encoder():
    class Ones:
        dim = 4

        def encode(self, texts):
            return np.ones((len(texts), 4), dtype=np.float32)

    assert encoder_name(Ones()) is None


def test_word_tokens_split_on_non_alphanumerics_and_lower_case():
    assert word_tokens("Open Drawer-3, then LOOK!") == ["open", "drawer", "3", "then", "look"]
    assert word_tokens("  ... ") == []


def test_text_actions_re_exports_the_encoders():
    for name in ("Encoder", "HashEncoder", "SentenceEncoder", "make_encoder"):
        assert name in text_actions.__all__
        assert getattr(text_actions, name).__module__ == "derl_gym.wrappers.text_encoders"
