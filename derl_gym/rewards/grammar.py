"""Token grammar of Meta-Rewards: vocabulary, masks for constrained generation, sampling,
and tree-level mutation / crossover for the evolutionary baseline.

Vocabulary (in this order, so ids are stable for a given ``num_variables`` and constants)::

    g1 .. gK | constants (default 0.1 0.25 0.5 1 2 3 4 5 10) | + - * / | ( | ) | END

The ``-`` token is binary minus after an operand and **unary minus** where an operand is expected
(``-g1``, ``g2 * -g3``, ``-(g1 + g2)``); a unary minus may not follow another unary minus. Negative
constants are written with the unary minus (``-0.5``).

:meth:`Grammar.valid_next` returns a boolean mask over the vocabulary such that

1. any sequence built by always choosing a masked-valid token is a formula that
   :class:`~derl_gym.rewards.expression.MetaReward` parses (its decoded text), and
2. every prefix can still be completed within ``max_tokens`` tokens *including END*.

(2) holds because the mask only admits a token when the shortest completion after it still fits:
in operand position that is one operand, one ``)`` per open parenthesis and END; in operator
position one ``)`` per open parenthesis and END. END is valid only when the expression is complete
and the parentheses are balanced. Parentheses nest at most ``MAX_PAREN_DEPTH`` (15) deep so that
even ``-(-(...`` stays within the expression language's nesting limit of 32.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from derl_gym.rewards.expression import (
    MAX_CONSTANT,
    MAX_DEPTH,
    MAX_LENGTH,
    InvalidExpression,
    MetaReward,
)

__all__ = ["Grammar", "DEFAULT_CONSTANTS", "OPERATORS", "END", "MAX_PAREN_DEPTH"]

#: Default constant tokens (4 is there so that the average of four primitives is expressible).
DEFAULT_CONSTANTS: tuple[str, ...] = ("0.1", "0.25", "0.5", "1", "2", "3", "4", "5", "10")
#: Binary operator tokens (``-`` doubles as unary minus in operand position).
OPERATORS: tuple[str, ...] = ("+", "-", "*", "/")
#: The end-of-formula token.
END = "END"
#: Deepest parenthesis nesting the grammar generates (2 * 15 + 1 <= 32 with unary minus).
MAX_PAREN_DEPTH = (MAX_DEPTH - 1) // 2

_NUMBER_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TOKEN_RE = re.compile(r"\s*(?:(g\d+)|((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|([-+*/()]))")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

# expression trees used by mutate / crossover:
#   ("var", index) | ("const", token) | ("neg", child) | ("bin", op, left, right)
Tree = tuple


def _format_constant(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_RE.fullmatch(text):
            raise ValueError(f"constant {value!r} is not a plain non-negative number literal like '0.5' or '10'")
        return text
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"constant {value!r} must be a number or its text")
    if value < 0:
        raise ValueError(f"constant {value!r} is negative; use a positive constant (the grammar has unary minus)")
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


class Grammar:
    """Token grammar of Meta-Rewards over ``g1..g{num_variables}`` (see the module docstring).

    Args:
        num_variables: ``K``, the variables ``g1..gK``.
        constants: the constant tokens (non-negative numbers or their text, at most 1e6).
        max_tokens: the longest sequence, END included.

    Attributes:
        vocabulary: the token strings (variables, constants, operators, ``(``, ``)``, END).
        vocab_size: ``len(vocabulary)``.
        token_weights: the default sampling weight of each token.
        end_id, open_id, close_id, minus_id: ids of those tokens; ``variable_ids``,
            ``constant_ids``, ``operator_ids``: arrays of ids; ``constant_values``: the constants as floats.

    Raises:
        ValueError: for a bad ``num_variables``, a negative, duplicate or too large constant, or a
            ``max_tokens`` that could decode to more than the language's 512 characters.

    Example:
        >>> import numpy as np
        >>> from derl_gym.rewards import Grammar
        >>> grammar = Grammar(num_variables=4)
        >>> grammar.vocab_size, grammar.vocabulary[:4], grammar.vocabulary[-3:]
        (20, ['g1', 'g2', 'g3', 'g4'], ['(', ')', 'END'])
        >>> ids = grammar.encode("g1 + 0.5*g2")
        >>> ids, grammar.decode(ids)
        ([0, 13, 6, 15, 1, 19], 'g1 + 0.5*g2')
        >>> [grammar.vocabulary[i] for i in np.flatnonzero(grammar.valid_next([0]))]  # after "g1"
        ['+', '-', '*', '/', 'END']
        >>> formula = grammar.sample_text(np.random.default_rng(0))    # always a valid formula
        >>> grammar.fits(formula), grammar.fits("g5")
        (True, False)
    """

    def __init__(self, num_variables: int = 4, constants: Sequence[Any] = DEFAULT_CONSTANTS,
                 max_tokens: int = 24) -> None:
        if isinstance(num_variables, bool) or int(num_variables) != num_variables or num_variables < 1:
            raise ValueError(f"num_variables must be a positive int, got {num_variables!r}")
        self.num_variables = int(num_variables)
        tokens = [_format_constant(c) for c in constants]
        values = [float(t) for t in tokens]
        for token, value in zip(tokens, values):
            if not math.isfinite(value) or value > MAX_CONSTANT:
                raise ValueError(f"constant {token!r} must be finite and at most {MAX_CONSTANT:g}")
        duplicates = sorted({t for t, v in zip(tokens, values) if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"constants {duplicates} have equal values; list each value once")
        self.constants: tuple[str, ...] = tuple(tokens)
        self.constant_values: tuple[float, ...] = tuple(values)
        variables = [f"g{i + 1}" for i in range(self.num_variables)]
        self.vocabulary: list[str] = [*variables, *self.constants, *OPERATORS, "(", ")", END]
        self.vocab_size = len(self.vocabulary)
        self.variable_ids = np.arange(self.num_variables)
        self.constant_ids = np.arange(self.num_variables, self.num_variables + len(self.constants))
        first_op = self.num_variables + len(self.constants)
        self.operator_ids = np.arange(first_op, first_op + len(OPERATORS))
        self.minus_id = first_op + OPERATORS.index("-")
        self.open_id = first_op + len(OPERATORS)
        self.close_id = self.open_id + 1
        self.end_id = self.close_id + 1
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

        max_tokens = int(max_tokens)
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (one operand and END), got {max_tokens}")
        widest = max(len(t) for t in self.vocabulary[:-1]) + 2  # decode puts spaces around + and -
        if (max_tokens - 1) * widest > MAX_LENGTH:
            raise ValueError(f"max_tokens={max_tokens} could decode to more than {MAX_LENGTH} characters; "
                             f"use at most {MAX_LENGTH // widest + 1}")
        self.max_tokens = max_tokens

        # default sampling weights: the variables as a group weigh twice the constants as a group
        weights = np.ones(self.vocab_size)
        if len(self.constants):
            weights[self.constant_ids] = self.num_variables / (2.0 * len(self.constants))
        weights[self.open_id] = 0.5
        self.token_weights = weights
        self._operand_mask = np.zeros(self.vocab_size, dtype=bool)
        self._operand_mask[self.variable_ids] = True
        self._operand_mask[self.constant_ids] = True
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    # ------------------------------------------------------------------ state machine
    def _state(self, prefix: Sequence[int]) -> tuple[bool, int, bool, bool]:
        """Return ``(expect_operand, depth, after_unary, ended)``; raise on an invalid prefix."""
        expect_operand, depth, after_unary, ended = True, 0, False, False
        for position, raw in enumerate(prefix):
            token = int(raw)
            if ended:
                raise ValueError(f"prefix continues after END at position {position}: {list(prefix)!r}")
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} at position {position} is outside the vocabulary "
                                 f"(0..{self.vocab_size - 1})")
            if not self._mask_for(position, expect_operand, depth, after_unary)[token]:
                raise ValueError(f"token {self.vocabulary[token]!r} at position {position} is not valid after "
                                 f"{self.decode(prefix[:position])!r} (max_tokens={self.max_tokens})")
            if expect_operand:
                if token == self.open_id:
                    depth, after_unary = depth + 1, False
                elif token == self.minus_id:
                    after_unary = True
                else:  # variable or constant
                    expect_operand, after_unary = False, False
            elif token == self.close_id:
                depth -= 1
            elif token == self.end_id:
                ended = True
            else:  # binary operator
                expect_operand = True
        return expect_operand, depth, after_unary, ended

    def _mask_for(self, n: int, expect_operand: bool, depth: int, after_unary: bool) -> np.ndarray:
        mask = np.zeros(self.vocab_size, dtype=bool)
        budget = self.max_tokens
        if expect_operand:
            if n + depth + 2 <= budget:  # operand, ')' * depth, END
                mask |= self._operand_mask
            if depth < MAX_PAREN_DEPTH and n + depth + 4 <= budget:  # '(' operand ')' ... END
                mask[self.open_id] = True
            if not after_unary and n + depth + 3 <= budget:  # '-' operand ...
                mask[self.minus_id] = True
        else:
            if n + depth + 3 <= budget:  # op operand ')' * depth END
                mask[self.operator_ids] = True
            if depth > 0:
                mask[self.close_id] = True
            else:
                mask[self.end_id] = True
        return mask

    def valid_next(self, prefix: Sequence[int]) -> np.ndarray:
        """Return the mask of tokens allowed after a prefix (for constrained generation).

        Args:
            prefix: token ids so far.

        Returns:
            A bool array ``[vocab_size]``; all False after END.

        Raises:
            ValueError: when ``prefix`` itself breaks the grammar.
        """
        key = tuple(int(t) for t in prefix)
        cached = self._cache.get(key)
        if cached is None:
            expect_operand, depth, after_unary, ended = self._state(key)
            if ended:
                cached = np.zeros(self.vocab_size, dtype=bool)
            else:
                cached = self._mask_for(len(key), expect_operand, depth, after_unary)
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = cached
        return cached.copy()

    def is_complete(self, prefix: Sequence[int]) -> bool:
        """Tell whether a prefix is a complete formula.

        Returns:
            True when ``prefix`` ends with END or END is valid next.
        """
        expect_operand, depth, _, ended = self._state(prefix)
        return ended or (not expect_operand and depth == 0)

    # ------------------------------------------------------------------ text <-> ids
    def decode(self, ids: Sequence[int]) -> str:
        """Return the text of token ids (stops at END).

        ``+`` and binary ``-`` get spaces around them, everything else is written compactly,
        e.g. ``g1 + 0.5*(g2 - g4/3)``.

        Returns:
            The text; a complete sequence gives a parseable formula, a partial prefix its partial text.

        Raises:
            ValueError: for an id outside the vocabulary.
        """
        parts: list[str] = []
        expect_operand = True
        for raw in ids:
            token_id = int(raw)
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
            token = self.vocabulary[token_id]
            if token == END:
                break
            if expect_operand:
                parts.append(token)
                expect_operand = token in ("(", "-")  # after '(' or a unary minus an operand follows
            elif token == ")":
                parts.append(token)
            else:
                parts.append(f" {token} " if token in ("+", "-") else token)
                expect_operand = True
        return "".join(parts).strip()

    def encode(self, text: str) -> list[int]:
        """Return the token ids of a formula, ending with END (a unary ``+`` is dropped).

        Raises:
            InvalidExpression: when the text is not a valid formula, uses a constant or a variable
                outside the vocabulary, or does not fit the grammar (longer than ``max_tokens``, two
                unary minuses in a row, parentheses nested deeper than 15).
        """
        MetaReward(text, self.num_variables)  # raises InvalidExpression with a precise message
        ids: list[int] = []
        columns: list[int] = []
        position = 0
        stripped = text.rstrip()
        expect_operand = True
        while position < len(stripped):
            match = _TOKEN_RE.match(stripped, position)
            if match is None or match.end() == position:
                raise InvalidExpression(f"{stripped[position:position + 10]!r} at column {position + 1} cannot be "
                                        f"written with the grammar's tokens {self.vocabulary}", text=text,
                                        column=position + 1)
            column = match.start(match.lastindex) + 1
            variable, number, symbol = match.groups()
            position = match.end()
            if variable is not None:
                if variable not in self._index:
                    raise InvalidExpression(f"variable {variable!r} at column {column} is not in the grammar "
                                            f"(g1..g{self.num_variables})", text=text, column=column)
                ids.append(self._index[variable])
                expect_operand = False
            elif number is not None:
                value = float(number)
                matches = [i for i, v in enumerate(self.constant_values) if math.isclose(v, value, rel_tol=1e-12)]
                if not matches:
                    raise InvalidExpression(f"constant {number!r} at column {column} is not in the grammar's "
                                            f"vocabulary {list(self.constants)}; use one of them", text=text,
                                            column=column)
                ids.append(int(self.constant_ids[matches[0]]))
                expect_operand = False
            else:
                if symbol == "+" and expect_operand:
                    continue  # unary plus is the identity
                ids.append(self._index[symbol])
                expect_operand = symbol != ")"
            columns.append(column)
        ids.append(self.end_id)
        columns.append(len(stripped) + 1)
        if len(ids) > self.max_tokens:
            raise InvalidExpression(f"{text!r} needs {len(ids)} tokens including END, more than "
                                    f"max_tokens={self.max_tokens}", text=text)
        for t in range(len(ids)):
            try:
                allowed = self.valid_next(ids[:t])
            except ValueError:  # pragma: no cover - the previous iteration checked the prefix
                raise
            if not allowed[ids[t]]:
                token = self.vocabulary[ids[t]]
                reason = ("two unary minuses in a row are not in the grammar (write '--x' as 'x')"
                          if token == "-" and t > 0 and ids[t - 1] == self.minus_id else
                          f"parentheses nest deeper than {MAX_PAREN_DEPTH}" if token == "(" else
                          "it does not fit the grammar")
                raise InvalidExpression(f"{token!r} at column {columns[t]} of {text!r}: {reason}",
                                        text=text, column=columns[t])
        return ids

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, uniform: bool = False, end_bias: float = 2.0) -> list[int]:
        """Draw a random formula token by token under the mask.

        Args:
            rng: the generator drawn from.
            uniform: draw uniformly among the valid tokens; else proportionally to
                ``token_weights`` with ``)`` and END up-weighted by
                ``1 + end_bias * len(prefix) / max_tokens`` so that lengths stay moderate.
            end_bias: see ``uniform``.

        Returns:
            A complete token sequence (ending with END).
        """
        ids: list[int] = []
        while True:
            mask = self.valid_next(ids)
            if uniform:
                weights = mask.astype(float)
            else:
                weights = np.where(mask, self.token_weights, 0.0)
                boost = 1.0 + end_bias * len(ids) / self.max_tokens
                weights[self.end_id] *= boost
                weights[self.close_id] *= boost
            token = int(rng.choice(self.vocab_size, p=weights / weights.sum()))
            ids.append(token)
            if token == self.end_id:
                return ids

    def sample_text(self, rng: np.random.Generator, **kwargs: Any) -> str:
        """Return the decoded text of :meth:`sample` (a valid formula); ``kwargs`` go to :meth:`sample`."""
        return self.decode(self.sample(rng, **kwargs))

    # ------------------------------------------------------------------ trees
    def to_tree(self, text: str) -> Tree:
        """Return the expression tree of a formula.

        Returns:
            Nested tuples ``("var", i) | ("const", token) | ("neg", t) | ("bin", op, l, r)``; unary
            ``+`` is dropped and ``--x`` becomes ``x``.

        Raises:
            InvalidExpression: for invalid text or a constant outside the vocabulary.

        Example:
            >>> from derl_gym.rewards import Grammar
            >>> tree = Grammar(4).to_tree("g1 + 0.5*g2")
            >>> tree
            ('bin', '+', ('var', 0), ('bin', '*', ('const', '0.5'), ('var', 1)))
            >>> Grammar(4).render(tree)
            'g1 + 0.5*g2'
        """
        import ast

        reward = MetaReward(text, self.num_variables)
        op_names = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

        def convert(node: Any) -> Tree:
            if isinstance(node, ast.Constant):
                value = float(node.value)
                for token, v in zip(self.constants, self.constant_values):
                    if math.isclose(v, value, rel_tol=1e-12):
                        return ("const", token)
                raise InvalidExpression(f"constant {node.value!r} at column {node.col_offset + 1} is not in the "
                                        f"grammar's vocabulary {list(self.constants)}", text=text,
                                        column=node.col_offset + 1)
            if isinstance(node, ast.Name):
                return ("var", int(node.id[1:]) - 1)
            if isinstance(node, ast.UnaryOp):
                inner = convert(node.operand)
                return _negate(inner) if isinstance(node.op, ast.USub) else inner
            return ("bin", op_names[type(node.op)], convert(node.left), convert(node.right))

        return convert(reward._tree.body)  # noqa: SLF001 (same package; the checked tree)

    def render(self, tree: Tree) -> str:
        """Return the text of an expression tree with the parentheses it needs."""
        kind = tree[0]
        if kind == "var":
            return f"g{tree[1] + 1}"
        if kind == "const":
            return tree[1]
        if kind == "neg":
            inner = self.render(tree[1])
            return "-" + (f"({inner})" if tree[1][0] == "bin" else inner)
        _, op, left, right = tree
        prec = _PRECEDENCE[op]
        left_text, right_text = self.render(left), self.render(right)
        if left[0] == "bin" and _PRECEDENCE[left[1]] < prec:
            left_text = f"({left_text})"
        if right[0] == "bin":
            right_prec = _PRECEDENCE[right[1]]
            associative = op == "+" or (op == "*" and right[1] == "*")
            if right_prec < prec or (right_prec == prec and not associative):
                right_text = f"({right_text})"
        return f"{left_text} {op} {right_text}" if op in ("+", "-") else f"{left_text}{op}{right_text}"

    def fits(self, text: str) -> bool:
        """Tell whether a formula encodes with this grammar.

        Returns:
            True when ``text`` is valid, uses only vocabulary tokens and fits ``max_tokens``.
        """
        try:
            self.encode(text)
        except InvalidExpression:
            return False
        return True

    def random_tree(self, rng: np.random.Generator, max_depth: int = 2) -> Tree:
        """Return a random small tree (grow method, at most ``max_depth`` binary levels)."""
        if max_depth <= 0 or rng.random() < 0.4:
            if not len(self.constants) or rng.random() < 0.7:
                leaf: Tree = ("var", int(rng.integers(self.num_variables)))
            else:
                leaf = ("const", self.constants[int(rng.integers(len(self.constants)))])
            return _negate(leaf) if rng.random() < 0.1 else leaf
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        return ("bin", op, self.random_tree(rng, max_depth - 1), self.random_tree(rng, max_depth - 1))

    def mutate(self, text: str, rng: np.random.Generator, attempts: int = 20) -> str:
        """Mutate a formula (the evolutionary baseline's operator).

        A random subtree is replaced by a fresh small random one, a constant changed to another
        vocabulary constant, or a binary operator swapped.

        Returns:
            The mutated formula, which always encodes within ``max_tokens``; the parent ``text``
            unchanged after ``attempts`` failed tries.

        Raises:
            InvalidExpression: for invalid text.

        Example:
            >>> import numpy as np
            >>> from derl_gym.rewards import Grammar
            >>> grammar = Grammar(4)
            >>> child = grammar.mutate("g1 + g2", np.random.default_rng(0))
            >>> child != "g1 + g2" and grammar.fits(child)
            True
        """
        tree = self.to_tree(text)
        parent = self.render(tree)
        paths = _paths(tree)
        const_paths = [p for p in paths if _get(tree, p)[0] == "const"]
        op_paths = [p for p in paths if _get(tree, p)[0] == "bin"]
        kinds = ["subtree"] + (["constant"] if const_paths and len(self.constants) > 1 else []) + \
                (["operator"] if op_paths else [])
        for _ in range(attempts):
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "subtree":
                path = paths[int(rng.integers(len(paths)))]
                child = _replace(tree, path, self.random_tree(rng))
            elif kind == "constant":
                path = const_paths[int(rng.integers(len(const_paths)))]
                others = [c for c in self.constants if c != _get(tree, path)[1]]
                child = _replace(tree, path, ("const", others[int(rng.integers(len(others)))]))
            else:
                path = op_paths[int(rng.integers(len(op_paths)))]
                _, op, left, right = _get(tree, path)
                others = [o for o in OPERATORS if o != op]
                child = _replace(tree, path, ("bin", others[int(rng.integers(len(others)))], left, right))
            out = self.render(child)
            if out != parent and self.fits(out):
                return out
        return text

    def crossover(self, a: str, b: str, rng: np.random.Generator, attempts: int = 20) -> str:
        """Cross two formulas: a random subtree of ``a`` replaced by a random subtree of ``b``.

        Returns:
            The child, which always encodes within ``max_tokens``; ``a`` after ``attempts`` failed tries.

        Raises:
            InvalidExpression: for invalid text.

        Example:
            >>> import numpy as np
            >>> from derl_gym.rewards import Grammar
            >>> Grammar(4).fits(Grammar(4).crossover("g1 + g2", "g3*g4", np.random.default_rng(0)))
            True
        """
        tree_a, tree_b = self.to_tree(a), self.to_tree(b)
        paths_a, paths_b = _paths(tree_a), _paths(tree_b)
        for _ in range(attempts):
            donor = _get(tree_b, paths_b[int(rng.integers(len(paths_b)))])
            child = _replace(tree_a, paths_a[int(rng.integers(len(paths_a)))], donor)
            out = self.render(child)
            if self.fits(out):
                return out
        return a

    def __repr__(self) -> str:
        return (f"Grammar(num_variables={self.num_variables}, constants={list(self.constants)}, "
                f"max_tokens={self.max_tokens})")


# ---------------------------------------------------------------------- tree helpers

def _negate(tree: Tree) -> Tree:
    return tree[1] if tree[0] == "neg" else ("neg", tree)


def _paths(tree: Tree, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Return the paths (child-index tuples) of every node, root first."""
    out = [prefix]
    if tree[0] == "neg":
        out += _paths(tree[1], prefix + (1,))
    elif tree[0] == "bin":
        out += _paths(tree[2], prefix + (2,))
        out += _paths(tree[3], prefix + (3,))
    return out


def _get(tree: Tree, path: tuple[int, ...]) -> Tree:
    for index in path:
        tree = tree[index]
    return tree


def _replace(tree: Tree, path: tuple[int, ...], new: Tree) -> Tree:
    if not path:
        return new
    head, rest = path[0], path[1:]
    replaced = _replace(tree[head], rest, new)
    if tree[0] == "neg":
        return _negate(replaced)
    return tree[:head] + (replaced,) + tree[head + 1:]
