"""The tiny-model helper: builds offline, loads with the Auto classes, tokenizes what the agents write."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from derl_gym.models import load_causal_lm, resolve_model_path  # noqa: E402
from derl_gym.models.tiny import build_tiny_model, default_corpus  # noqa: E402

SMALL = dict(layers=1, hidden=32, heads=2, vocab_size=400)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return default_corpus(max_rows=200)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, corpus):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), corpus=corpus, **SMALL)


def test_auto_classes_load_it_offline(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, local_files_only=True)
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    info = json.loads((tiny_dir / "derl_gym_tiny.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


def test_chat_template_is_qwen_style(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3


@pytest.mark.parametrize("text", ["g1 + 0.5*(g2 - g4/3)", "<action>go to desk 1</action>",
                                  "<planning>find the apple</planning> <action>take apple 1 from countertop 2</action>",
                                  "So 48/2 = 24 and the answer is \\boxed{72}.", "caf\u00e9 \u2211 \U0001F600 tabs\tand\nlines"])
def test_every_string_round_trips(tiny_dir, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_agent_tags_are_single_tokens_and_loaded_tokenizer_matches_trained_one(tiny_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    for tag in ("<action>", "</action>", "\\boxed{"):
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    sample = "Natalia sold 48/2 = 24 clips. <action>go to fridge 1</action> g1 + 0.5*g2"
    assert tok(sample, add_special_tokens=False)["input_ids"] == raw.encode(sample, add_special_tokens=False).ids


def test_same_seed_same_model_other_seed_other_weights(tmp_path, corpus):
    import torch
    from safetensors.torch import load_file

    a = load_file(str(build_tiny_model(tmp_path / "a", corpus=corpus, seed=3, **SMALL) / "model.safetensors"))
    b = load_file(str(build_tiny_model(tmp_path / "b", corpus=corpus, seed=3, **SMALL) / "model.safetensors"))
    c = load_file(str(build_tiny_model(tmp_path / "c", corpus=corpus, seed=4, **SMALL) / "model.safetensors"))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_generates_with_the_chat_template(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "How many clips?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_size_options_change_the_model_and_bad_ones_are_named(tmp_path, corpus):
    small = json.loads((build_tiny_model(tmp_path / "s", corpus=corpus, **SMALL) / "derl_gym_tiny.json").read_text())
    big = json.loads((build_tiny_model(tmp_path / "b", corpus=corpus, **{**SMALL, "layers": 3})
                      / "derl_gym_tiny.json").read_text())
    assert big["parameters"] > small["parameters"]
    with pytest.raises(ValueError, match="hidden=30"):
        build_tiny_model(tmp_path / "x", hidden=30, heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_model(tmp_path / "x", vocab_size=100)
    with pytest.raises(ValueError, match="tiny:key=int"):
        resolve_model_path("tiny:depth=3")


def test_load_causal_lm_tiny_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DERL_GYM_CACHE", str(tmp_path))
    first = resolve_model_path("tiny:layers=1,hidden=32,heads=2,vocab_size=400")
    stamp = (tmp_path / "tiny-models").stat().st_mtime_ns
    assert first.startswith(str(tmp_path)) and resolve_model_path("tiny:layers=1,hidden=32,heads=2,vocab_size=400") == first
    assert len(list((tmp_path / "tiny-models").iterdir())) == 1 and (tmp_path / "tiny-models").stat().st_mtime_ns == stamp
    model, tok = load_causal_lm("tiny:layers=1,hidden=32,heads=2,vocab_size=400", device="cpu")
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"
    assert model.device.type == "cpu" and tok.pad_token is not None
    with pytest.raises(OSError, match="local folder"):
        load_causal_lm(tmp_path / "no-such-model", device="cpu")


def test_cli_tiny_model(tmp_path, capsys):
    from derl_gym.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--layers", "1", "--hidden", "32", "--heads", "2"]) == 0
    assert "parameters" in capsys.readouterr().out
    info = json.loads((tmp_path / "m" / "derl_gym_tiny.json").read_text())
    assert info["layers"] == 1 and info["hidden"] == 32
    assert main(["tiny-model", str(tmp_path / "bad"), "--hidden", "30"]) == 2
