"""Text encoders: map texts to float32 vectors for :class:`~derl_gym.wrappers.text_actions.TextActionWrapper`.

- :class:`Encoder`: the protocol (``dim`` and ``encode(texts) -> [N, dim]``).
- :class:`HashEncoder` (the default): hashed word uni/bi-grams and character trigrams,
  L2-normalised, cached per text; no downloads, no torch. On the fast path (unless
  ``DERL_GYM_INNER_FAST=0``) a new text is hashed with per-word memos and one ``bincount``;
  every number equals the per-feature loop's bit for bit.
- :class:`SentenceEncoder`: a transformers model from a LOCAL directory, mean pooling.
- :func:`make_encoder` builds an encoder from a name (``"hash"``, ``"sentence:<dir>"``);
  :func:`encoder_name` is its inverse (the name that rebuilds a given encoder, if any).
- :func:`word_tokens`: the lower-cased word tokens every encoder feature (and the wrapper's
  overlap features) is made of.

Every cache is a :class:`~derl_gym.utils.lru.LRUCache` of the encoder (never shipped between
processes).
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from derl_gym.utils.fastpath import fast_path_enabled
from derl_gym.utils.lru import LRUCache

__all__ = ["Encoder", "HashEncoder", "SentenceEncoder", "make_encoder", "encoder_name", "word_tokens"]

_TOKEN_RE = re.compile(r"[a-z0-9]+")


def word_tokens(text: str) -> list[str]:
    """Split a text into the word tokens the encoders hash.

    Args:
        text: any text.

    Returns:
        The runs of ASCII letters and digits of ``text.lower()``, in order.

    Example:
        >>> from derl_gym.wrappers.text_encoders import word_tokens
        >>> word_tokens("Put the Apple 1 in/on the fridge.")
        ['put', 'the', 'apple', '1', 'in', 'on', 'the', 'fridge']
    """
    return _TOKEN_RE.findall(text.lower())


@runtime_checkable
class Encoder(Protocol):
    """What a text encoder provides: ``dim`` and ``encode`` (all that ``TextActionWrapper`` needs).

    Attributes:
        dim: the length of each vector.

    Example:
        >>> from derl_gym.wrappers.text_encoders import Encoder, HashEncoder
        >>> isinstance(HashEncoder(dim=16), Encoder)
        True
    """

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts.

        Args:
            texts: the texts to encode.

        Returns:
            A float32 array ``[len(texts), dim]``, one row per text.
        """
        ...


class HashEncoder:
    """Hashed bag of n-grams: word uni/bi-grams plus character trigrams, signed, L2-normalised.

    Hashing uses CRC32 (stable across processes and Python versions, unlike ``hash``); each
    feature's sign comes from a second hash so that collisions cancel on average. Vectors are cached
    per text (LRU). The empty string encodes to the zero vector. No downloads, no torch.

    Args:
        dim: the vector length (at least 8).
        word_ngrams: the word n-gram sizes hashed.
        char_ngrams: the character n-gram sizes hashed (within each word, with ``<``/``>`` borders).
        cache_size: how many texts' vectors are kept.

    Raises:
        ValueError: when ``dim < 8``.

    Example:
        >>> import numpy as np
        >>> from derl_gym.wrappers.text_encoders import HashEncoder
        >>> encoder = HashEncoder(dim=64)
        >>> vectors = encoder.encode(["open the fridge", "open fridge", ""])
        >>> vectors.shape, vectors.dtype
        ((3, 64), dtype('float32'))
        >>> np.linalg.norm(vectors, axis=1).round(3).tolist()   # unit vectors; "" is the zero vector
        [1.0, 1.0, 0.0]
        >>> bool(vectors[0] @ vectors[1] > 0.5)                 # shared n-grams: similar vectors
        True
    """

    def __init__(self, dim: int = 256, word_ngrams: Sequence[int] = (1, 2), char_ngrams: Sequence[int] = (3,),
                 cache_size: int = 50_000) -> None:
        if dim < 8:
            raise ValueError(f"HashEncoder dim must be >= 8, got {dim}")
        self.dim = int(dim)
        self.word_ngrams = tuple(word_ngrams)
        self.char_ngrams = tuple(char_ngrams)
        self.cache_size = cache_size
        self._cache = LRUCache(cache_size)
        self._fast = fast_path_enabled()
        #: word -> CRC32s of its unigram and character n-gram features (fast path)
        self._words = LRUCache(max(1024, min(cache_size, 65_536)), description="hashed word features")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = LRUCache(self.cache_size)  # do not ship the cache between processes
        state["_words"] = LRUCache(self._words.maxsize)
        return state

    def _features(self, text: str) -> Iterable[str]:
        words = word_tokens(text)
        for n in self.word_ngrams:
            for i in range(len(words) - n + 1):
                yield "w" + " ".join(words[i:i + n])
        for n in self.char_ngrams:
            for word in words:
                padded = f"<{word}>"
                for i in range(len(padded) - n + 1):
                    yield "c" + padded[i:i + n]

    def _word_hashes(self, word: str) -> np.ndarray:
        """CRC32s of one word's unigram feature (when 1 is a word n-gram) and its character n-grams."""
        cached = self._words.get(word)
        if cached is None:
            feats = ["w" + word] if 1 in self.word_ngrams else []
            padded = f"<{word}>"
            for n in self.char_ngrams:
                feats.extend("c" + padded[i:i + n] for i in range(len(padded) - n + 1))
            cached = np.array([zlib.crc32(f.encode("utf-8")) for f in feats], dtype=np.uint32)
            self._words.put(word, cached)
        return cached

    def _feature_hashes(self, text: str) -> np.ndarray:
        """CRC32s of every feature of ``text`` (the multiset :meth:`_features` yields, in another order)."""
        words = word_tokens(text)
        parts = [self._word_hashes(w) for w in words]
        crc = zlib.crc32
        for n in self.word_ngrams:
            if n == 1:
                continue
            parts.append(np.array([crc(("w" + " ".join(words[i:i + n])).encode("utf-8"))
                                   for i in range(len(words) - n + 1)], dtype=np.uint32))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)

    def encode_one(self, text: str) -> np.ndarray:
        """Encode one text.

        Returns:
            The (cached, read-only) float32 vector ``[dim]`` of ``text``.
        """
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if self._fast:
            # the same features hashed with per-word memos and summed by bincount: the signed
            # counts are small integers, exact in float64 and float32, so this equals the
            # per-feature loop below bit for bit
            hashes = self._feature_hashes(text)
            signs = np.where(hashes >> 31, 1.0, -1.0)
            vec = np.bincount((hashes % self.dim).astype(np.intp), weights=signs,
                              minlength=self.dim).astype(np.float32)
        else:
            vec = np.zeros(self.dim, dtype=np.float32)
            for feature in self._features(text):
                h = zlib.crc32(feature.encode("utf-8"))
                sign = 1.0 if (h >> 31) & 1 else -1.0
                vec[h % self.dim] += sign
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec /= norm
        vec.setflags(write=False)
        self._cache.put(text, vec)
        return vec

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts.

        Returns:
            A float32 array ``[len(texts), dim]`` of L2-normalised hashed n-gram vectors.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.encode_one(t) for t in texts]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"HashEncoder(dim={self.dim}, word_ngrams={self.word_ngrams}, char_ngrams={self.char_ngrams})"


class SentenceEncoder:
    """Mean-pooled transformers encoder loaded from a LOCAL directory (never downloads).

    ``dim`` is the model's hidden size; :meth:`encode` returns L2-normalised embeddings.

    Args:
        path: a local directory with a transformers model (config, tokenizer, weights).
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device name.
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass.
        cache_size: how many texts' vectors are kept.

    Raises:
        FileNotFoundError: when ``path`` is not an existing directory (checked before torch is imported).

    Example:
        A model folder is needed (none is downloaded); a missing one is reported at once:

        >>> from derl_gym.wrappers.text_encoders import SentenceEncoder
        >>> SentenceEncoder("/no/such/model")
        Traceback (most recent call last):
        ...
        FileNotFoundError: sentence encoder path '/no/such/model' does not exist or is not a directory; ...
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", max_length: int = 128,
                 batch_size: int = 32, cache_size: int = 50_000) -> None:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"sentence encoder path {path!r} does not exist or is not a directory; pass a local "
                "directory holding a transformers model (config.json, tokenizer and weights) — derl-gym "
                "never downloads models — or use encoder='hash'")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = path
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).train(False)
        self.dim = int(self._model.config.hidden_size)
        self._cache = LRUCache(cache_size)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "device": self.device, "max_length": self.max_length,
                "batch_size": self.batch_size, "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts with the model (cached per text).

        Returns:
            A float32 array ``[len(texts), dim]`` of mean-pooled, L2-normalised embeddings.
        """
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            cached = self._cache.get(text)
            if cached is None:
                missing.append(i)
            else:
                out[i] = cached
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start:start + self.batch_size]
            batch = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
            for row, i in enumerate(idx):
                vec = pooled[row].copy()
                vec.setflags(write=False)
                self._cache.put(texts[i], vec)
                out[i] = vec
        return out


def make_encoder(encoder: str | Encoder | None = "hash", dim: int = 256, **kwargs: Any) -> Encoder:
    """Return an :class:`Encoder` from a name or an instance.

    Args:
        encoder: ``"hash"`` (or ``None``) for a :class:`HashEncoder` of size ``dim``;
            ``"sentence:<local dir>"`` or an existing local directory for a :class:`SentenceEncoder`;
            an object with ``dim`` and ``encode``, returned as is.
        dim: the :class:`HashEncoder`'s vector length (ignored otherwise).
        **kwargs: further arguments of the encoder class.

    Returns:
        The encoder.

    Raises:
        ValueError: for an unknown name. TypeError: for an object that is not an Encoder.

    Example:
        >>> from derl_gym.wrappers.text_encoders import make_encoder
        >>> make_encoder("hash", dim=32)
        HashEncoder(dim=32, word_ngrams=(1, 2), char_ngrams=(3,))
        >>> make_encoder("bag-of-words")
        Traceback (most recent call last):
        ...
        ValueError: unknown encoder 'bag-of-words'; use 'hash', 'sentence:/local/model/dir' or an object with .dim and .encode(texts)
    """
    if encoder is None or encoder == "hash":
        return HashEncoder(dim=dim, **kwargs)
    if isinstance(encoder, str):
        path = encoder[len("sentence:"):] if encoder.startswith("sentence:") else encoder
        if encoder.startswith("sentence:") or os.path.isdir(path):
            return SentenceEncoder(path, **kwargs)
        raise ValueError(f"unknown encoder {encoder!r}; use 'hash', 'sentence:/local/model/dir' "
                         "or an object with .dim and .encode(texts)")
    if isinstance(encoder, Encoder):
        return encoder
    raise TypeError(f"encoder must be 'hash', 'sentence:<dir>' or an Encoder, got {type(encoder).__name__}")



def encoder_name(encoder: Encoder) -> str | None:
    """Return the name :func:`make_encoder` rebuilds ``encoder`` from, when there is one.

    Args:
        encoder: an encoder object.

    Returns:
        ``"hash"`` for a :class:`HashEncoder` with default n-grams and cache (its ``dim`` is passed
        separately), ``"sentence:<its dir>"`` for a :class:`SentenceEncoder` with default settings
        (the device is chosen again), ``None`` for any other encoder.

    Example:
        >>> from derl_gym.wrappers.text_encoders import HashEncoder, encoder_name
        >>> encoder_name(HashEncoder(dim=32)), encoder_name(HashEncoder(dim=32, char_ngrams=(2, 3)))
        ('hash', None)
    """
    if type(encoder) is HashEncoder and encoder.word_ngrams == (1, 2) and encoder.char_ngrams == (3,) \
            and encoder.cache_size == 50_000:
        return "hash"
    if type(encoder) is SentenceEncoder and (encoder.max_length, encoder.batch_size, encoder.cache_size) \
            == (128, 32, 50_000):
        return f"sentence:{encoder.path}"
    return None
