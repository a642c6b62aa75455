"""Language models for the inner agents: local folders, hub ids, and tiny models built on the spot.

``load_causal_lm("tiny")`` builds (once, cached) a small random-weight Qwen2 model with a freshly
trained tokenizer (:mod:`derl_gym.models.tiny`); ``"tiny:layers=4,hidden=128"`` picks its size.
Any other name is a local folder or a Hugging Face hub id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from derl_gym.models.tiny import build_tiny_model, cache_dir, cached_tiny_model

logger = logging.getLogger(__name__)

__all__ = ["build_tiny_model", "cached_tiny_model", "cache_dir", "load_causal_lm", "resolve_model_path",
           "pick_device", "pick_dtype"]

_TINY_KEYS = {"layers", "hidden", "heads", "vocab_size", "seed", "intermediate", "max_positions"}


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Return a loadable name: the folder of a tiny model for ``tiny[:k=v,...]``, else the name unchanged.

    Raises:
        ValueError: an unknown ``tiny`` option (the message names the allowed ones).

    Example:
        >>> from derl_gym.models import resolve_model_path
        >>> resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")  # anything but tiny passes through
        'Qwen/Qwen2.5-0.5B-Instruct'
        >>> from pathlib import Path
        >>> (Path(resolve_model_path("tiny")) / "config.json").is_file()  # built once, then cached
        True
    """
    name = str(name_or_path)
    if name != "tiny" and not name.startswith("tiny:"):
        return name
    kwargs: dict[str, int] = {}
    if ":" in name:
        for part in filter(None, name.split(":", 1)[1].split(",")):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in _TINY_KEYS or not value.strip().lstrip("-").isdigit():
                raise ValueError(f"bad tiny-model option {part!r} in {name!r}; use tiny:key=int,... with keys "
                                 f"{sorted(_TINY_KEYS)}, e.g. tiny:layers=4,hidden=128")
            kwargs[key] = int(value)
    return str(cached_tiny_model(**kwargs))


def pick_device(device: str = "auto") -> str:
    """Return ``"cuda"`` when ``device="auto"`` and CUDA is available, else ``"cpu"``; other values pass through.

    Example:
        >>> from derl_gym.models import pick_device
        >>> pick_device("cpu"), pick_device("auto") in ("cuda", "cpu")
        ('cpu', True)
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: Any = "auto") -> Any:
    """Return the torch dtype: bf16 on CUDA and fp32 on CPU for ``"auto"``; names like ``"float16"`` accepted.

    Example:
        >>> from derl_gym.models import pick_dtype
        >>> pick_dtype("cpu"), pick_dtype("cuda:0"), pick_dtype("cpu", "float16")
        (torch.float32, torch.bfloat16, torch.float16)
    """
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
        return value
    return dtype


def load_causal_lm(name_or_path: str | os.PathLike, device: str = "auto", dtype: Any = "auto"):
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: ``tiny[:k=v,...]``, a local folder, or a hub id (needs the network or a filled
            hub cache).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"`` ...
        dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU), a name such as ``"float16"``, or a torch dtype.

    Returns:
        ``(model, tokenizer)`` with the model on ``device``; the tokenizer gets a pad token (its eos)
        when it has none.

    Raises:
        OSError: the model cannot be loaded (the message names it and the fix).

    Example:
        >>> from derl_gym.models import load_causal_lm
        >>> model, tokenizer = load_causal_lm("tiny", device="cpu")
        >>> type(model).__name__, model.dtype, tokenizer.pad_token is not None
        ('Qwen2ForCausalLM', torch.float32, True)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    local = Path(path).expanduser().is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=local)
    except Exception as exc:  # noqa: BLE001  (re-raised with the fix)
        raise OSError(f"could not load the causal LM {str(name_or_path)!r} ({type(exc).__name__}: {exc}). Fix: give "
                      f"a local folder holding config.json and weights (e.g. --model /path/to/Qwen2.5-0.5B-Instruct), "
                      f"or 'tiny' for a small model built here") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev)
    logger.info("loaded %s on %s (%s)", path, dev, torch_dtype)
    return model, tokenizer
