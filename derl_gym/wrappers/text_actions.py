"""Turn a text world into Stable-Baselines3 spaces: encoded observation + candidate commands.

:class:`TextActionWrapper` wraps an env whose observations and actions are text and whose ``info``
lists the currently admissible commands (``info["admissible_commands"]``). The wrapped env has

- observation: a ``gymnasium.spaces.Dict`` with one ``[dim]`` vector per included text field
  (``"observation"``, ``"task"``, ``"inventory"``, ``"history"``), ``"actions"``: a
  ``[max_actions, dim]`` array with one encoded candidate command per row (zero rows past the
  current count), ``"action_mask"``: ``[max_actions]`` with 1.0 for the rows in use, and (with
  ``count_actions=True``, the default) ``"action_counts"``: ``[max_actions]``, how often each
  candidate was already sent this episode, as ``n / (n + 1)`` (a name-free memory feature), and
  (with ``overlap_features=True``, the default) ``"overlap_<field>"``: ``[max_actions]``, the share
  of each candidate's words (digits excluded) that occur in that text field — lexical matching
  features such as "this command names the object the task asks for" that carry over to games
  with unseen object names;
- action: ``Discrete(max_actions)``, the index of a candidate row;
- :meth:`TextActionWrapper.action_masks` for sb3-contrib's ``MaskablePPO`` (works through
  ``DummyVecEnv``/``SubprocVecEnv`` via ``env_method("action_masks")``).

Candidate order: the admissible commands are de-duplicated and sorted alphabetically (so a state
always gives the same rows whatever order the engine lists them in). When there are more than
``max_actions``, the ones dropped first are those matching ``low_priority`` prefixes (look,
inventory, examine, help by default), then the alphabetically last ones; ``exclude`` prefixes are
removed outright unless that would leave no command. A masked-out (or out-of-range) index is sent
to the env as ``invalid_command`` (``"noop"``), which text worlds answer with feedback such as
"Nothing happens." instead of crashing.

Encoders (:mod:`derl_gym.wrappers.text_encoders`, re-exported here) map texts to float32 vectors:
:class:`HashEncoder` (default; hashed word uni/bi-grams and character trigrams, L2-normalised,
cached; no downloads) and :class:`SentenceEncoder` (a transformers model from a LOCAL directory,
mean pooling); :func:`make_encoder` builds one from a name.

Speed (the fast path, on unless ``DERL_GYM_INNER_FAST=0``): each admissible-command list is
encoded once per wrapper (candidate rows, mask and words cached in a bounded LRU of
``block_cache_size`` lists), a new text is hashed by the encoder's own fast path, and
``info["candidates"]`` is a :class:`~derl_gym.utils.fastpath.StrList`; every number equals the
old path's bit for bit.

Specs: the wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``), so
``env.spec`` describes the stack and ``gymnasium.make(env.spec)`` rebuilds it; it can also be applied
through a spec: ``gymnasium.register(id, ..., additional_wrappers=(TextActionWrapper.wrapper_spec(...),))``
or :func:`~derl_gym.wrappers.spec.spec_with_wrappers` for a registered id. An encoder
given by name is recorded by name; a :class:`HashEncoder` with default n-grams and cache as
``"hash"`` with its ``dim``; a :class:`SentenceEncoder` with default settings as
``"sentence:<its dir>"`` (the device is chosen again, ``"auto"``). Any other encoder object is
recorded as the object: ``gymnasium.make(env.spec)`` in the same process reuses it, but
``env.spec.to_json()`` cannot serialise it.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.core import ActType, ObsType

from derl_gym.utils.fastpath import StrList, fast_path_enabled
from derl_gym.utils.lru import LRUCache
from derl_gym.wrappers.text_encoders import (
    Encoder,
    HashEncoder,
    SentenceEncoder,
    encoder_name,
    make_encoder,
    word_tokens,
)

logger = logging.getLogger(__name__)

# the encoders live in derl_gym.wrappers.text_encoders; re-exported here for existing imports
__all__ = [
    "Encoder",
    "HashEncoder",
    "SentenceEncoder",
    "TextActionWrapper",
    "make_encoder",
    "TEXT_FIELDS",
]

#: text fields the wrapper can encode into the observation
TEXT_FIELDS = ("observation", "task", "inventory", "history")


#: text -> its content words (process-wide: a text's words never change; ~0.3-1 kB per entry)
_CONTENT_WORDS: LRUCache = LRUCache(65_536, name="text_actions.content_words",
                                    description="content words of candidate and state texts")


class _ExampleDoor(gym.Env):
    """The text world of the examples here and of ``derl-gym play``'s: the commands ``"open door"`` (wins:
    reward 1, ``won``, the episode ends) and ``"look"`` (nothing happens)."""

    observation_space = action_space = spaces.Text(64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        return "A closed door.", {"admissible_commands": ["open door", "look"]}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        won = action == "open door"
        commands = [] if won else ["open door", "look"]
        return ("You win." if won else "A closed door."), float(won), won, False, {"won": won,
                                                                                   "admissible_commands": commands}


def _content_words(text: str) -> frozenset[str]:
    """Return the lower-cased word tokens of ``text`` without pure numbers (memoised)."""
    words = _CONTENT_WORDS.get(text)
    if words is None:
        words = frozenset(w for w in word_tokens(text) if not w.isdigit())
        _CONTENT_WORDS.put(text, words)
    return words


class _CandidateBlock:
    """What one admissible-command list always encodes to (immutable, cached per wrapper)."""

    __slots__ = ("candidates", "actions", "mask", "bool_mask", "words")

    def __init__(self, candidates: list[str], actions: np.ndarray, max_actions: int) -> None:
        n = len(candidates)
        self.candidates = tuple(candidates)
        actions.setflags(write=False)
        self.actions = actions
        mask = np.zeros(max_actions, dtype=np.float32)
        mask[:n] = 1.0
        mask.setflags(write=False)
        self.mask = mask
        bool_mask = mask.astype(bool)
        if not n:
            bool_mask[0] = True
        bool_mask.setflags(write=False)
        self.bool_mask = bool_mask
        self.words = tuple(_content_words(c) for c in candidates)


def _encoder_record(encoder: str | Encoder | None, dim: int) -> tuple[Any, int]:
    """Return ``(encoder, dim)`` as :class:`TextActionWrapper` records them (a name where one rebuilds it)."""
    if encoder is None or isinstance(encoder, str):
        return encoder, dim
    name = encoder_name(encoder)
    if name is None:
        return encoder, dim
    return name, (encoder.dim if name == "hash" else dim)


class TextActionWrapper(gym.Wrapper[dict[str, np.ndarray], int, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """Encode a text world's observation and candidate commands; act by choosing a candidate index.

    ``step(index)`` sends ``candidates[index]`` (or ``invalid_command`` for a masked index) to the
    wrapped env and returns the encoded observation; ``info`` gains ``"command"`` (the text sent)
    and ``"candidates"`` (the current candidate list). :meth:`action_masks` returns the boolean mask
    of valid indices for the current observation (see the module docstring for the observation
    keys and the candidate order). ``env.spec`` records the arguments (module docstring, "Specs").

    Args:
        env: a text env whose ``info`` lists ``"admissible_commands"``.
        max_actions: rows of the candidate table and size of the ``Discrete`` action space.
        encoder: ``"hash"``, ``"sentence:<local dir>"`` or an :class:`Encoder` (:func:`make_encoder`).
        dim: the hash encoder's vector length.
        include: text fields encoded into the observation; must contain ``"observation"``.
        history_length: how many of the last commands the ``"history"`` field joins.
        exclude: command prefixes removed (unless nothing would be left).
        low_priority: command prefixes dropped first when there are more than ``max_actions``.
        invalid_command: the text sent for a masked or out-of-range index.
        count_actions: add the ``"action_counts"`` feature.
        overlap_features: add the ``"overlap_<field>"`` features.
        block_cache_size: admissible-command lists whose encoding is cached (fast path; 0: none).

    Raises:
        ValueError: for ``max_actions < 1`` or an ``include`` without ``"observation"`` or with an
            unknown field.

    Example:
        >>> env = TextActionWrapper(_ExampleDoor(), max_actions=4, dim=32)   # commands "open door", "look"
        >>> obs, info = env.reset()
        >>> list(info["candidates"]), env.action_masks().tolist()    # sorted candidates, one per row
        (['look', 'open door'], [True, True, False, False])
        >>> obs["actions"].shape, env.action_space
        ((4, 32), Discrete(4))
        >>> obs, reward, terminated, truncated, info = env.step(1)
        >>> info["command"], reward, terminated
        ('open door', 1.0, True)

        Registered with the wrapper (``additional_wrappers``), then rebuilt from the made env's spec:

        >>> gym.register("derl_gym_doc/Door-v0", entry_point=_ExampleDoor, disable_env_checker=True,
        ...              additional_wrappers=(TextActionWrapper.wrapper_spec(max_actions=4, dim=32),))
        >>> env = gym.make("derl_gym_doc/Door-v0")
        >>> env.spec.additional_wrappers[-1].kwargs["max_actions"]
        4
        >>> rebuilt = gym.make(env.spec)
        >>> rebuilt.observation_space == env.observation_space
        True
        >>> bool((rebuilt.reset()[0]["actions"] == env.reset()[0]["actions"]).all())
        True
    """

    def __init__(self, env: gym.Env[ObsType, ActType], max_actions: int = 32, encoder: str | Encoder | None = "hash",
                 dim: int = 256, include: Sequence[str] = ("observation", "task", "history"),
                 history_length: int = 3, exclude: Sequence[str] = (),
                 low_priority: Sequence[str] = ("look", "inventory", "examine", "help"),
                 invalid_command: str = "noop", count_actions: bool = True,
                 overlap_features: bool = True, block_cache_size: int = 4096) -> None:
        recorded_encoder, recorded_dim = _encoder_record(encoder, dim)
        # plain lists and scalars (JSON-friendly); an encoder object is kept by reference, not deep-copied
        gym.utils.RecordConstructorArgs.__init__(
            self, _disable_deepcopy=True, max_actions=max_actions, encoder=recorded_encoder, dim=recorded_dim,
            include=list(include), history_length=history_length, exclude=list(exclude),
            low_priority=list(low_priority), invalid_command=invalid_command, count_actions=count_actions,
            overlap_features=overlap_features, block_cache_size=block_cache_size)
        gym.Wrapper.__init__(self, env)
        if max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {max_actions}")
        unknown = [f for f in include if f not in TEXT_FIELDS]
        if unknown or "observation" not in include:
            raise ValueError(f"include must contain 'observation' and only fields from {TEXT_FIELDS}, "
                             f"got {tuple(include)}")
        self.max_actions = int(max_actions)
        self.encoder = make_encoder(encoder, dim=dim)
        self.dim = int(self.encoder.dim)
        self.include = tuple(dict.fromkeys(include))
        self.history_length = int(history_length)
        self.exclude = tuple(p.lower() for p in exclude)
        self.low_priority = tuple(p.lower() for p in low_priority)
        self.invalid_command = invalid_command
        self.count_actions = bool(count_actions)
        self.overlap_features = bool(overlap_features)
        box = dict(low=-np.inf, high=np.inf, dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {k: spaces.Box(shape=(self.dim,), **box) for k in self.include}
        obs_spaces["actions"] = spaces.Box(shape=(self.max_actions, self.dim), **box)
        obs_spaces["action_mask"] = spaces.Box(low=0.0, high=1.0, shape=(self.max_actions,), dtype=np.float32)
        if self.count_actions:
            obs_spaces["action_counts"] = spaces.Box(low=0.0, high=1.0, shape=(self.max_actions,), dtype=np.float32)
        if self.overlap_features:
            for name in self.include:
                obs_spaces[f"overlap_{name}"] = spaces.Box(low=0.0, high=1.0, shape=(self.max_actions,),
                                                           dtype=np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Discrete(self.max_actions)
        self._candidates: list[str] = []
        #: fast path (``$DERL_GYM_INNER_FAST``, on by default): admissible-command tuple -> encoded
        #: candidate rows, mask and words (``block_cache_size`` lists, ~``max_actions * dim * 4``
        #: bytes each), so an unchanged command list is not re-encoded; ``info["candidates"]`` is a
        #: StrList (cheap to deep-copy)
        self._fast = fast_path_enabled()
        self._blocks: LRUCache | None = LRUCache(block_cache_size, description="candidate blocks") \
            if self._fast and block_cache_size else None
        self._block: _CandidateBlock | None = None
        self._history: list[str] = []
        self._counts: dict[str, int] = {}
        self._task = ""

    # ----------------------------------------------------------------- candidates
    def select_candidates(self, commands: Sequence[str]) -> list[str]:
        """Choose the candidates for a list of admissible commands.

        Returns:
            The candidate list: de-duplicated, ``exclude`` prefixes removed, truncated to
            ``max_actions`` (``low_priority`` prefixes dropped first), sorted.
        """
        unique = sorted(dict.fromkeys(str(c) for c in commands))
        if self.exclude:
            kept = [c for c in unique if not c.lower().startswith(self.exclude)]
            unique = kept or unique
        if len(unique) > self.max_actions:
            ranked = sorted(unique, key=lambda c: (c.lower().startswith(self.low_priority), c))
            unique = sorted(ranked[: self.max_actions])
        return unique

    @property
    def candidates(self) -> list[str]:
        """The commands the current action indices refer to."""
        return list(self._candidates)

    def action_masks(self) -> np.ndarray:
        """Return the valid action indices (for sb3-contrib's ``MaskablePPO``).

        Returns:
            A bool array ``[max_actions]``: True for indices that map to a current candidate (index 0
            alone when nothing is admissible; it sends ``invalid_command``).
        """
        if self._block is not None:
            return self._block.bool_mask.copy()
        mask = np.zeros(self.max_actions, dtype=bool)
        mask[: len(self._candidates)] = True
        if not self._candidates:  # nothing admissible: let index 0 (-> invalid_command) be chosen
            mask[0] = True
        return mask

    def command(self, action: int | np.integer) -> str:
        """Return the text command an action index sends.

        Returns:
            ``candidates[action]``, or ``invalid_command`` when the index is masked out or out of range.
        """
        index = int(np.asarray(action).item())
        if 0 <= index < len(self._candidates):
            return self._candidates[index]
        return self.invalid_command

    # ----------------------------------------------------------------- encoding
    def _candidate_block(self, commands: Sequence[str]) -> _CandidateBlock | None:
        """Return the cached encoding of ``commands`` (``None`` when the list cannot be a cache key)."""
        try:
            key = tuple(commands)
            block = self._blocks.get(key)  # type: ignore[union-attr]
        except TypeError:  # unhashable entries: take the uncached path
            return None
        if block is None:
            candidates = self.select_candidates(commands)
            actions = np.zeros((self.max_actions, self.dim), dtype=np.float32)
            if candidates:
                actions[:len(candidates)] = self.encoder.encode(candidates)
            block = _CandidateBlock(candidates, actions, self.max_actions)
            self._blocks.put(key, block)  # type: ignore[union-attr]
        return block

    def _encode_fast(self, observation: Any, info: dict[str, Any]) -> dict[str, np.ndarray] | None:
        block = self._candidate_block(info.get("admissible_commands", []) or [])
        if block is None:
            return None
        self._block = block
        self._candidates = block.candidates  # type: ignore[assignment]
        texts = self._texts(observation, info)
        fields = self.include
        vectors = self.encoder.encode([texts[f] for f in fields])
        obs = {f: vectors[i] for i, f in enumerate(fields)}
        obs["actions"] = block.actions.copy()
        obs["action_mask"] = block.mask.copy()
        if self.count_actions:
            counts = np.zeros(self.max_actions, dtype=np.float32)
            if self._counts:
                get = self._counts.get
                for i, cand in enumerate(block.candidates):
                    n_sent = get(cand, 0)
                    if n_sent:
                        counts[i] = n_sent / (n_sent + 1.0)
            obs["action_counts"] = counts
        if self.overlap_features:
            for name in fields:
                field_words = _content_words(texts[name])
                overlap = np.zeros(self.max_actions, dtype=np.float32)
                if field_words:
                    for i, words in enumerate(block.words):
                        if words:
                            overlap[i] = len(words & field_words) / len(words)
                obs[f"overlap_{name}"] = overlap
        return obs

    def _texts(self, observation: Any, info: dict[str, Any]) -> dict[str, str]:
        return {
            "observation": str(observation),
            "task": str(info.get("task", self._task) or ""),
            "inventory": str(info.get("inventory", "") or ""),
            "history": " | ".join(self._history[-self.history_length:]) if self.history_length else "",
        }

    def _encode(self, observation: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
        if self._blocks is not None:
            obs = self._encode_fast(observation, info)
            if obs is not None:
                return obs
        self._block = None
        self._candidates = self.select_candidates(info.get("admissible_commands", []) or [])
        texts = self._texts(observation, info)
        fields = list(self.include)
        vectors = self.encoder.encode([texts[f] for f in fields] + self._candidates)
        obs = {f: np.asarray(vectors[i], dtype=np.float32).copy() for i, f in enumerate(fields)}
        actions = np.zeros((self.max_actions, self.dim), dtype=np.float32)
        n = len(self._candidates)
        if n:
            actions[:n] = vectors[len(fields):]
        obs["actions"] = actions
        mask = np.zeros(self.max_actions, dtype=np.float32)
        mask[:n] = 1.0
        obs["action_mask"] = mask
        if self.count_actions:
            counts = np.zeros(self.max_actions, dtype=np.float32)
            for i, cand in enumerate(self._candidates):
                n_sent = self._counts.get(cand, 0)
                counts[i] = n_sent / (n_sent + 1.0)
            obs["action_counts"] = counts
        if self.overlap_features:
            cand_words = [_content_words(c) for c in self._candidates]
            for name in self.include:
                field_words = _content_words(texts[name])
                overlap = np.zeros(self.max_actions, dtype=np.float32)
                for i, words in enumerate(cand_words):
                    if words:
                        overlap[i] = len(words & field_words) / len(words)
                obs[f"overlap_{name}"] = overlap
        return obs

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the text env and encode its first observation.

        Returns:
            ``(encoded observation, info)``; ``info`` gains ``"candidates"``.
        """
        observation, info = self.env.reset(seed=seed, options=options)
        self._history = []
        self._counts = {}
        self._task = str(info.get("task", "") or "")
        info = dict(info)
        obs = self._encode(observation, info)
        info["candidates"] = StrList(self._candidates) if self._fast else list(self._candidates)
        return obs, info

    def step(self, action: int | np.integer) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Send the chosen candidate's text to the env.

        Returns:
            ``(encoded observation, reward, terminated, truncated, info)``; ``info`` gains
            ``"command"`` (the text sent) and ``"candidates"``.
        """
        command = self.command(action)
        observation, reward, terminated, truncated, info = self.env.step(command)
        self._counts[command] = self._counts.get(command, 0) + 1
        if self.history_length:
            self._history.append(command)
            del self._history[: -self.history_length]
        info = dict(info)
        info["command"] = command
        obs = self._encode(observation, info)
        info["candidates"] = StrList(self._candidates) if self._fast else list(self._candidates)
        return obs, float(reward), bool(terminated), bool(truncated), info
