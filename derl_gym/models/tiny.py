"""Tiny causal language models built on the spot, for machines without a model hub.

:func:`build_tiny_model` writes a folder that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load offline: a Qwen2-architecture causal LM with random
(seeded) weights, and a byte-level BPE tokenizer trained with ``tokenizers`` on local text, with a
Qwen-style chat template (``<|im_start|>role\\n...<|im_end|>``), ``<|im_end|>`` as eos and
``<|endoftext|>`` as pad. The default corpus is the GSM8K train questions and solutions found under
``$DERL_GYM_DATA`` (or ``../shared/data``), plus the project's own vocabulary: Meta-Reward formulas
(``g1 + 0.5*(g2 - g4/3)``), ALFWorld commands in RLVMR tags (``<action>go to desk 1</action>``)
and the ``\\boxed{}`` answer format. With no data folder a built-in text is used instead.

Byte-level BPE means every string can be encoded and decoded back exactly, so the envs never see
an "unknown" token. A few strings the agents must write (``<action>``, ``</action>``, ``\\boxed{``,
the reasoning tags) are added as single (non-special) tokens so that a tiny model can learn them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

logger = logging.getLogger(__name__)

#: Bumped when the build changes, so cached tiny models are rebuilt.
TINY_MODEL_VERSION = 1

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

#: Qwen2's pre-tokenizer split (digits one by one, words with their leading space or punctuation).
QWEN2_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                           r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

#: Strings added as whole (non-special) tokens: what the inner agents must write.
AGENT_TOKENS = ("<action>", "</action>", "<planning>", "</planning>", "<explore>", "</explore>",
                "<reflection>", "</reflection>", "<think>", "</think>", "\\boxed{", "<formula>", "</formula>")

#: Qwen-style chat template (the same markup as Qwen2.5-Instruct, without the tool-calling parts).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_ALFWORLD_OBJECTS = ("apple", "book", "bowl", "bread", "cd", "cellphone", "cup", "desklamp", "egg", "knife",
                     "lettuce", "mug", "pan", "pen", "pencil", "plate", "potato", "soapbar", "spatula",
                     "spoon", "tomato", "towel", "vase", "watch", "keychain", "creditcard", "alarmclock")
_ALFWORLD_RECEPTACLES = ("cabinet", "countertop", "desk", "drawer", "dresser", "fridge", "garbagecan",
                         "microwave", "shelf", "sidetable", "sinkbasin", "stoveburner", "toilet", "bed",
                         "diningtable", "coffeetable", "sofa", "safe", "bathtubbasin")

_BUILTIN_TEXT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Natalia sold 48/2 = 24 clips in May. "
    "Natalia sold 48+24 = 72 clips altogether in April and May. The answer is 72.\n"
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn? Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned "
    "0.2 x 50 = $10. First, compute the total. Then subtract. Step 1: add the numbers. Step 2: divide.\n"
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a desk 1, "
    "a drawer 2, a fridge 1 and a sinkbasin 1. Your task is to: put a clean apple in the fridge. "
    "Nothing happens. You arrive at desk 1. On the desk 1, you see a pen 1 and a book 2.\n"
)


def _formula_strings(rng: random.Random, count: int = 300) -> list[str]:
    """Return Meta-Reward formula strings (hand-written ones and random compositions of g1..g6)."""
    fixed = ["g1", "g1 + 0.5*g2", "g1 + 0.5*(g2 - g4/3)", "(g1 + g2 + g3 + g4)/4", "g1 - 0.1*g3",
             "2*g1 + g2*g3", "-g1", "g1/(g2 + 1)", "0.25*g1 + 0.75*g4", "g1 * (1 + g2)"]
    out = list(fixed)
    consts = ["0.1", "0.2", "0.25", "0.5", "1", "2", "3", "0.75", "1.5", "10"]

    def expr(depth: int) -> str:
        if depth <= 0 or rng.random() < 0.35:
            return f"g{rng.randint(1, 6)}" if rng.random() < 0.7 else rng.choice(consts)
        op = rng.choice([" + ", " - ", "*", "/"])
        text = expr(depth - 1) + op + expr(depth - 1)
        return f"({text})" if rng.random() < 0.4 else text

    while len(out) < count:
        out.append(expr(3))
    return [f"<formula>{f}</formula>" if i % 3 == 0 else f for i, f in enumerate(out)]


def _alfworld_strings(rng: random.Random, count: int = 400) -> list[str]:
    """Return ALFWorld commands in RLVMR tags and observation-like sentences."""
    out: list[str] = []
    tags = ("planning", "explore", "reflection")
    for _ in range(count):
        obj = f"{rng.choice(_ALFWORLD_OBJECTS)} {rng.randint(1, 3)}"
        rec = f"{rng.choice(_ALFWORLD_RECEPTACLES)} {rng.randint(1, 4)}"
        cmd = rng.choice([f"go to {rec}", f"take {obj} from {rec}", f"put {obj} in/on {rec}", f"open {rec}",
                          f"close {rec}", f"examine {rec}", f"use {rec}", f"clean {obj} with {rec}",
                          f"heat {obj} with {rec}", f"cool {obj} with {rec}", "look", "inventory"])
        tag = rng.choice(tags)
        out.append(f"<{tag}>I should {cmd} next.</{tag}> <action>{cmd}</action>")
        out.append(f"You arrive at {rec}. On the {rec}, you see a {obj}. Your task is to: put some {obj.split()[0]} "
                   f"on {rec.split()[0]}.")
    return out


def _math_format_strings() -> list[str]:
    return ["Put your final answer in \\boxed{}.", "The answer is \\boxed{72}.", "So the total is \\boxed{10}.",
            "Solve the problem step by step, then put the final answer in \\boxed{}.",
            "\\frac{1}{2} + \\sqrt{3} = x^2", "Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14. \\boxed{14}"]


def _default_data_files() -> list[Path]:
    """Return the GSM8K train file(s) found under ``$DERL_GYM_DATA`` or ``../shared/data`` (may be empty)."""
    roots: list[Path] = []
    if os.environ.get("DERL_GYM_DATA"):
        roots.append(Path(os.environ["DERL_GYM_DATA"]).expanduser())
    roots.append(Path.cwd().parent / "shared" / "data")
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for root in roots:
        for candidate in (root / "gsm8k" / "train.jsonl", root / "train.jsonl"):
            if candidate.is_file():
                return [candidate]
    return []


def default_corpus(max_rows: int = 2000, seed: int = 0) -> list[str]:
    """Return the default tokenizer corpus (GSM8K rows when found, else the built-in text, plus project vocab).

    Up to ``max_rows`` GSM8K train rows are read (question and solution); the project's formula,
    ALFWorld and ``\\boxed{}`` strings are always appended.

    Example:
        >>> from derl_gym.models.tiny import default_corpus
        >>> corpus = default_corpus(max_rows=10)
        >>> "g1 + 0.5*g2" in corpus, any("\\\\boxed" in text for text in corpus)
        (True, True)
    """
    rng = random.Random(seed)
    texts: list[str] = []
    for path in _default_data_files():
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                if len(texts) >= max_rows:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    texts.append(" ".join(str(row.get(k, "")) for k in ("question", "answer", "problem", "solution")).strip())
        if texts:
            break
    if not texts:
        logger.info("no GSM8K data found for the tiny tokenizer; using the built-in text")
        texts = [_BUILTIN_TEXT] * 4
    return texts + _formula_strings(rng) + _alfworld_strings(rng) + _math_format_strings()


def _train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Return a trained ``tokenizers.Tokenizer`` (byte-level BPE) with the special and agent tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # The same normalizer and pre-tokenizer as transformers' Qwen2Tokenizer, which AutoTokenizer
    # picks for a qwen2 config: what is trained here is exactly what loads back.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in AGENT_TOKENS])
    return tok


def build_tiny_model(out_dir: str | os.PathLike, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                     vocab_size: int = 1000, corpus: Sequence[str] | None = None, seed: int = 0,
                     intermediate: int | None = None, max_positions: int = 2048) -> Path:
    """Build a random-weight Qwen2 causal LM and a freshly trained BPE tokenizer in ``out_dir``.

    Args:
        out_dir: the folder to write (created if missing).
        layers, hidden, heads: the Qwen2 size (``hidden`` a multiple of ``heads``).
        vocab_size: the BPE target (the model's embedding matches the tokenizer's real size).
        corpus: the tokenizer's training texts (default :func:`default_corpus`).
        seed: fixes the weights.
        intermediate: the MLP width (default ``4 * hidden``).
        max_positions: the context length.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`, loadable offline with
        ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

    Raises:
        ValueError: a bad size.

    Example:
        >>> import json, tempfile
        >>> from derl_gym.models.tiny import build_tiny_model
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = build_tiny_model(tmp, layers=1, hidden=32, heads=2, vocab_size=300,
        ...                               corpus=["g1 + 0.5*g2", "so the answer is \\\\boxed{7}"])
        ...     info = json.loads((folder / "derl_gym_tiny.json").read_text())
        ...     (folder / "model.safetensors").is_file(), (folder / "tokenizer.json").is_file()
        (True, True)
        >>> info["layers"], info["hidden"], info["parameters"] > 0
        (1, 32, True)
    """
    if layers < 1 or hidden < 1 or heads < 1:
        raise ValueError(f"layers={layers}, hidden={hidden}, heads={heads}: each must be >= 1")
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not a multiple of heads={heads}; pick e.g. hidden={heads * max(1, hidden // heads)}")
    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least 256 byte tokens "
                         f"plus specials; use vocab_size >= 300")
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else default_corpus(seed=seed)
    raw = _train_tokenizer(texts, vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=IM_END, pad_token=PAD_TOKEN,
                                        bos_token=None, unk_token=None, model_max_length=max_positions)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)

    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = pad_id
    model.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "derl_gym_tiny.json").write_text(json.dumps(
        {"version": TINY_MODEL_VERSION, "layers": layers, "hidden": hidden, "heads": heads,
         "vocab_size": len(tokenizer), "seed": seed, "parameters": n_params, "corpus_texts": len(texts)}, indent=1))
    logger.info("built tiny model in %s: %d parameters, %d tokens", out, n_params, len(tokenizer))
    return out


def cache_dir() -> Path:
    """Return the folder for cached derl-gym artefacts (``$DERL_GYM_CACHE`` or ``~/.cache/derl_gym``).

    Example:
        >>> import os, pathlib
        >>> from derl_gym.models.tiny import cache_dir
        >>> expected = pathlib.Path(os.environ.get("DERL_GYM_CACHE") or "~/.cache/derl_gym").expanduser()
        >>> cache_dir() == expected, (cache_dir() / "tiny-models").parent == cache_dir()
        (True, True)
    """
    return Path(os.environ.get("DERL_GYM_CACHE") or Path.home() / ".cache" / "derl_gym").expanduser()


def _corpus_fingerprint() -> str:
    h = hashlib.sha256()
    for path in _default_data_files():
        st = path.stat()
        h.update(f"{path.resolve()}:{st.st_size}".encode())
    return h.hexdigest()[:12]


def cached_tiny_model(**kwargs: int) -> Path:
    """Return the folder of a tiny model with these :func:`build_tiny_model` sizes, building it once.

    Cached under ``cache_dir()/tiny-models/<hash of sizes, version and corpus>``; the build goes to a
    temporary folder that is renamed into place, so parallel workers never see a half-written model.

    Example:
        >>> from derl_gym.models.tiny import cached_tiny_model
        >>> folder = cached_tiny_model()  # the model "tiny" names; built on the first call only
        >>> folder == cached_tiny_model(), (folder / "derl_gym_tiny.json").is_file()
        (True, True)
    """
    key = json.dumps({"v": TINY_MODEL_VERSION, "corpus": _corpus_fingerprint(), **kwargs}, sort_keys=True)
    folder = cache_dir() / "tiny-models" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / "derl_gym_tiny.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        build_tiny_model(tmp, **kwargs)  # type: ignore[arg-type]
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            if not (folder / "derl_gym_tiny.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
