"""Tokenizer-level constraint: the Meta-Reward grammar mapped onto a language model's vocabulary.

A language model writes a formula as tokenizer tokens (``" g"``, ``"1"``, ``" +"``, ``"0.5"``, ...),
whose boundaries do not match the grammar's tokens (``g1``, ``+``, ``0.5``). :class:`FormulaConstraint`
runs a character-prefix automaton over the formula text:

* a state is the grammar state reached by the grammar tokens completed so far (``n``, operand or
  operator position, parenthesis depth, after a unary minus), the partial grammar token being
  written (a prefix of ``"g1"`` or ``"0.25"``), whether a variable was used, and whether the last
  character was a space;
* a character either extends the partial token (when some grammar token allowed by
  :meth:`Grammar.valid_next` starts with it), or completes it and starts the next one; a single
  space may separate grammar tokens;
* the end-of-sequence token is allowed only when the formula is complete (END valid in the
  grammar) and uses a variable; a token is allowed only if a variable can still be written within
  the grammar's ``max_tokens`` (so requiring a variable never dead-ends).

The mask of a state over the whole tokenizer vocabulary is computed once and cached per state
(tokens that contain a character no formula uses are excluded up front). Because the grammar
forces END within ``max_tokens`` grammar tokens and every allowed tokenizer token adds at least
one character, every sample parses and ends within :attr:`FormulaConstraint.max_new_tokens`.

:class:`CharsetConstraint` is the weaker baseline of the reference implementation: it only allows
tokens made of formula characters (plus EOS), so samples can still fail to parse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Characters formulas are written with (grammar tokens and the separating space).
FORMULA_CHARS = frozenset("g0123456789.+-*/() ")


def _example_tokenizer() -> Any:
    """Return the tokenizer of the offline tiny model (``resolve_model_path("tiny")``), for this module's examples."""
    from transformers import AutoTokenizer

    from derl_gym.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("tiny"))


def token_strings(tokenizer: Any) -> list[str]:
    """Return the text each token id of ``tokenizer`` contributes when decoded in a sequence.

    Byte-level BPE tokens (``Ġ``-style) are decoded one by one (a partial UTF-8 byte becomes a
    replacement character, which no formula uses); SentencePiece's ``▁`` becomes a space.
    Special tokens give ``""``.

    Example:
        >>> tokenizer = _example_tokenizer()
        >>> strings = token_strings(tokenizer)
        >>> len(strings) == len(tokenizer), [strings[i] for i in tokenizer.encode("g1 + 0.5")]
        (True, ['g', '1', ' +', ' ', '0', '.', '5'])
    """
    size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append("")
        elif "\u2581" in piece:  # SentencePiece word boundary
            out.append(piece.replace("\u2581", " "))
        else:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False, skip_special_tokens=False))
    return out


@dataclass(frozen=True)
class ConstraintState:
    """Where the automaton is: ``key`` (what the mask depends on), ``prefix`` (grammar token ids
    completed), ``text`` (characters written) and ``done`` (EOS was written).

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> tokenizer = _example_tokenizer()
        >>> constraint = FormulaConstraint(make_grammar(2), tokenizer)
        >>> state = constraint.start()
        >>> for token in tokenizer.encode("g1 + g2") + [constraint.eos_id]:
        ...     state = constraint.advance(state, token)
        >>> state.text, state.done, constraint.grammar.decode(list(state.prefix))  # prefix: grammar token ids
        ('g1 + g2', True, 'g1 + g2')
    """

    key: tuple
    prefix: tuple[int, ...] = ()
    text: str = ""
    done: bool = False


class _Automaton:
    """The character automaton over a grammar (shared by the constraint; see the module doc)."""

    def __init__(self, grammar: Any) -> None:
        self.grammar = grammar
        self.max_tokens = int(grammar.max_tokens)
        self.words = [t for t in grammar.vocabulary]
        self.end_id = int(grammar.end_id)
        self.variable_ids = {int(i) for i in grammar.variable_ids}
        self._gmask: dict[tuple, np.ndarray] = {}
        self._allowed_words: dict[tuple, list[tuple[str, int]]] = {}

    # grammar state: (n, expect_operand, depth, after_unary); mask depends only on it
    @staticmethod
    def gstep(g: tuple, token: int, grammar: Any) -> tuple:
        n, expect, depth, unary = g
        if expect:
            if token == grammar.open_id:
                return (n + 1, True, depth + 1, False)
            if token == grammar.minus_id:
                return (n + 1, True, depth, True)
            return (n + 1, False, depth, False)
        if token == grammar.close_id:
            return (n + 1, False, depth - 1, False)
        return (n + 1, True, depth, False)

    def grammar_mask(self, g: tuple, prefix: tuple[int, ...]) -> np.ndarray:
        mask = self._gmask.get(g)
        if mask is None:
            mask = np.asarray(self.grammar.valid_next(list(prefix)), dtype=bool)
            self._gmask[g] = mask
        return mask

    def min_finish(self, g: tuple, has_var: bool) -> int:
        """Fewest grammar tokens (END included) that finish a formula with a variable from ``g``."""
        _, expect, depth, _ = g
        if expect:
            return depth + 2
        return depth + 1 if has_var else depth + 3

    def allowed_words(self, g: tuple, prefix: tuple[int, ...], has_var: bool) -> list[tuple[str, int]]:
        """Return ``(text, id)`` of the grammar tokens (not END) allowed in ``g``."""
        key = (g, has_var)
        words = self._allowed_words.get(key)
        if words is None:
            mask = self.grammar_mask(g, prefix)
            words = []
            for i in np.flatnonzero(mask):
                i = int(i)
                if i == self.end_id:
                    continue
                nxt = self.gstep(g, i, self.grammar)
                if nxt[0] + self.min_finish(nxt, has_var or i in self.variable_ids) <= self.max_tokens:
                    words.append((self.words[i], i))
            self._allowed_words[key] = words
        return words

    def end_allowed(self, g: tuple, prefix: tuple[int, ...], has_var: bool) -> bool:
        return has_var and bool(self.grammar_mask(g, prefix)[self.end_id])

    # character state: (g, partial, has_var, last_space) + prefix / text carried alongside
    def commit(self, g, partial, has_var, prefix):
        """Complete ``partial`` as a grammar token; returns ``(g, has_var, prefix)`` or None."""
        for word, i in self.allowed_words(g, prefix, has_var):
            if word == partial:
                return self.gstep(g, i, self.grammar), has_var or i in self.variable_ids, prefix + (i,)
        return None

    def feed(self, key: tuple, prefix: tuple[int, ...], chars: str):
        """Return ``(key, prefix)`` after ``chars``, or None when a character is not allowed."""
        g, partial, has_var, last_space = key
        for c in chars:
            if c == " ":
                if last_space or (not prefix and not partial):
                    return None
                if partial:
                    done = self.commit(g, partial, has_var, prefix)
                    if done is None:
                        return None
                    g, has_var, prefix = done
                    partial = ""
                last_space = True
                continue
            candidate = partial + c
            if any(word.startswith(candidate) for word, _ in self.allowed_words(g, prefix, has_var)):
                partial, last_space = candidate, False
                continue
            if not partial:
                return None
            done = self.commit(g, partial, has_var, prefix)
            if done is None:
                return None
            g, has_var, prefix = done
            if not any(word.startswith(c) for word, _ in self.allowed_words(g, prefix, has_var)):
                return None
            partial, last_space = c, False
        return (g, partial, has_var, last_space), prefix

    def can_end(self, key: tuple, prefix: tuple[int, ...]) -> tuple[int, ...] | None:
        """Return the grammar prefix (END included) if the formula may end here, else None."""
        g, partial, has_var, _ = key
        if partial:
            done = self.commit(g, partial, has_var, prefix)
            if done is None:
                return None
            g, has_var, prefix = done
        return prefix + (self.end_id,) if self.end_allowed(g, prefix, has_var) else None


class VariableGrammarMask:
    """``grammar.valid_next`` narrowed so that every completion reads at least one variable.

    :meth:`valid_next` returns bool ``ndarray[grammar.vocab_size]`` over the grammar's own tokens:
    the grammar's mask, without END while no variable was written, and without any token after
    which a variable no longer fits within ``max_tokens``. Used by the GRU policy (a formula
    without a variable is a constant reward, which can only score 0).

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> grammar = make_grammar(2, max_tokens=12)
        >>> constant = grammar.encode("0.5")[:-1]  # the token "0.5", END dropped
        >>> bool(grammar.valid_next(constant)[grammar.end_id])  # the grammar may stop at a constant ...
        True
        >>> bool(VariableGrammarMask(grammar).valid_next(constant)[grammar.end_id])  # ... this mask may not
        False
    """

    def __init__(self, grammar: Any) -> None:
        self.grammar = grammar
        self.automaton = _Automaton(grammar)
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def valid_next(self, prefix: Sequence[int]) -> np.ndarray:
        """Return the allowed grammar tokens after ``prefix`` (all False after END)."""
        key = tuple(int(t) for t in prefix)
        mask = self._cache.get(key)
        if mask is None:
            g, has_var, auto = (0, True, 0, False), False, self.automaton
            for t, token in enumerate(key):
                if token == auto.end_id:
                    g = None
                    break
                g = auto.gstep(g, token, self.grammar)
                has_var = has_var or token in auto.variable_ids
            mask = np.zeros(self.grammar.vocab_size, dtype=bool)
            if g is not None:
                for _, i in auto.allowed_words(g, key, has_var):
                    mask[i] = True
                if auto.end_allowed(g, key, has_var):
                    mask[auto.end_id] = True
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = mask
        return mask.copy()


class FormulaConstraint:
    """The grammar as a mask over ``tokenizer``'s vocabulary (see the module docstring).

    ``grammar`` is a :class:`~derl_gym.rewards.grammar.Grammar`; ``eos_id`` the token that ends a
    formula (default ``tokenizer.eos_token_id``). Raises ``ValueError`` when the vocabulary lacks a
    single-character token for some formula character (then some formulas could not be finished).
    Methods: :meth:`start`, :meth:`mask` (bool ``ndarray[vocab]``, cached per state),
    :meth:`advance`, :meth:`accepts`, :meth:`formula`. ``vocab_size`` is the model's vocabulary
    size (``vocab_size`` argument, default ``len(tokenizer)``); ids beyond the tokenizer are masked.

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> tokenizer = _example_tokenizer()
        >>> constraint = FormulaConstraint(make_grammar(2, max_tokens=12), tokenizer)
        >>> ids = tokenizer.encode("g1 + 0.5*g2") + [constraint.eos_id]
        >>> constraint.accepts(ids), constraint.formula(ids)
        (True, 'g1 + 0.5*g2')
        >>> bool(constraint.mask(constraint.start())[constraint.eos_id])  # an empty formula cannot end
        False
        >>> constraint.accepts(tokenizer.encode("g1 +") + [constraint.eos_id])
        False
    """

    def __init__(self, grammar: Any, tokenizer: Any, eos_id: int | None = None, vocab_size: int | None = None) -> None:
        self.grammar = grammar
        self.eos_id = int(eos_id if eos_id is not None else tokenizer.eos_token_id)
        self.strings = token_strings(tokenizer)
        self.vocab_size = int(vocab_size or len(self.strings))
        if self.vocab_size < len(self.strings):
            raise ValueError(f"vocab_size={self.vocab_size} is smaller than the tokenizer ({len(self.strings)} tokens)")
        self.automaton = _Automaton(grammar)
        self.candidates = [i for i, s in enumerate(self.strings) if s and set(s) <= FORMULA_CHARS]
        singles = {self.strings[i] for i in self.candidates if len(self.strings[i]) == 1}
        needed = set("".join(w for w in grammar.vocabulary if w != "END")) | {" "}
        missing = sorted(needed - singles)
        if missing:
            raise ValueError(f"the tokenizer has no single-character token for {missing}; constrained decoding "
                             "needs one per formula character (byte-level BPE tokenizers have them)")
        widest = max(len(w) for w in grammar.vocabulary if w != "END")
        #: Upper bound on tokens per formula, EOS included (every token adds >= 1 character).
        self.max_new_tokens = (int(grammar.max_tokens) - 1) * (widest + 1) + 1
        self._masks: dict[tuple, np.ndarray] = {}
        self._moves: dict[tuple[tuple, int], tuple] = {}

    def start(self) -> ConstraintState:
        """Return the state before the first token."""
        return ConstraintState(key=((0, True, 0, False), "", False, False))

    def mask(self, state: ConstraintState) -> np.ndarray:
        """Return bool ``ndarray[vocab_size]``: the tokens allowed in ``state`` (cached per state)."""
        if state.done:
            return np.zeros(self.vocab_size, dtype=bool)
        mask = self._masks.get(state.key)
        if mask is None:
            mask = np.zeros(self.vocab_size, dtype=bool)
            for i in self.candidates:
                if self.automaton.feed(state.key, state.prefix, self.strings[i]) is not None:
                    mask[i] = True
            if self.automaton.can_end(state.key, state.prefix) is not None:
                mask[self.eos_id] = True
            if not mask.any():  # cannot happen for a Grammar (see the module doc); fail loudly
                raise RuntimeError(f"no token is allowed after {state.text!r}; the constraint is inconsistent")
            self._masks[state.key] = mask
        return mask

    def advance(self, state: ConstraintState, token: int) -> ConstraintState:
        """Return the state after ``token``; raises ``ValueError`` when ``token`` is not allowed."""
        token = int(token)
        if state.done:
            raise ValueError("the formula already ended (EOS)")
        if token == self.eos_id:
            prefix = self.automaton.can_end(state.key, state.prefix)
            if prefix is None:
                raise ValueError(f"EOS is not allowed after {state.text!r} (the formula is not complete)")
            return ConstraintState(key=state.key, prefix=prefix, text=state.text, done=True)
        text = self.strings[token] if 0 <= token < len(self.strings) else ""
        out = self.automaton.feed(state.key, state.prefix, text) if text else None
        if out is None:
            raise ValueError(f"token {token} ({text!r}) is not allowed after {state.text!r}")
        key, prefix = out
        return ConstraintState(key=key, prefix=prefix, text=state.text + text)

    def accepts(self, ids: Sequence[int]) -> bool:
        """Return True when ``ids`` is a complete allowed sequence (ending with EOS)."""
        state = self.start()
        try:
            for token in ids:
                state = self.advance(state, token)
        except ValueError:
            return False
        return state.done

    def states(self, ids: Sequence[int]) -> list[ConstraintState]:
        """Return the state before each token of ``ids`` (raises ``ValueError`` on a disallowed token)."""
        out, state = [], self.start()
        for token in ids:
            out.append(state)
            state = self.advance(state, token)
        return out

    def formula(self, ids: Sequence[int]) -> str:
        """Return the formula text written by ``ids`` (up to EOS), surrounding spaces removed."""
        parts = []
        for token in ids:
            if int(token) == self.eos_id:
                break
            parts.append(self.strings[int(token)] if 0 <= int(token) < len(self.strings) else "")
        return "".join(parts).strip()

    def grammar_ids(self, ids: Sequence[int]) -> list[int]:
        """Return the grammar token ids (END included) of a complete allowed sequence."""
        state = self.start()
        for token in ids:
            state = self.advance(state, token)
        if not state.done:
            raise ValueError("the sequence does not end with EOS")
        return list(state.prefix)


class CharsetConstraint:
    """Baseline mask: tokens made only of formula characters, plus EOS at any time (the reference
    implementation's restriction to formula characters). Samples may not parse.

    Example:
        >>> tokenizer = _example_tokenizer()
        >>> constraint = CharsetConstraint(tokenizer)
        >>> constraint.formula(tokenizer.encode("g1 + 0.5*g2") + [constraint.eos_id])
        'g1 + 0.5*g2'
        >>> bool(constraint.mask()[constraint.eos_id]), bool(constraint.mask()[tokenizer.convert_tokens_to_ids("<|im_start|>")])
        (True, False)
    """

    def __init__(self, tokenizer: Any, eos_id: int | None = None, vocab_size: int | None = None) -> None:
        self.eos_id = int(eos_id if eos_id is not None else tokenizer.eos_token_id)
        self.strings = token_strings(tokenizer)
        self.vocab_size = int(vocab_size or len(self.strings))
        self._mask = np.zeros(self.vocab_size, dtype=bool)
        for i, s in enumerate(self.strings):
            if s and set(s) <= FORMULA_CHARS:
                self._mask[i] = True
        self._mask[self.eos_id] = True

    def mask(self, state: Any = None) -> np.ndarray:
        """Return the (state-independent) bool mask."""
        return self._mask

    def formula(self, ids: Sequence[int]) -> str:
        """Return the text of ``ids`` up to EOS."""
        parts = []
        for token in ids:
            if int(token) == self.eos_id:
                break
            parts.append(self.strings[int(token)])
        return "".join(parts).strip()
