"""The Meta-Reward language: safe parsing, vectorised evaluation and a canonical form.

A Meta-Reward is an arithmetic formula over the reward primitives ``g1..gK`` such as
``g1 + 0.5*(g2 - g4/3)``. It is *untrusted text* (written by a meta-optimizer or a language
model), so it is never evaluated by Python: the text is parsed with :mod:`ast` (``mode="eval"``)
and every node is checked against a whitelist:

- finite ``int``/``float`` literals with ``|c| <= 1e6`` (no ``bool``, complex, strings, ``nan``/``inf``);
- the variables ``g1..gK`` and the primitive names given as aliases;
- binary ``+ - * /``, unary ``-`` and ``+``, parentheses.

Anything else (calls, attributes, subscripts, ``**``, ``//``, ``%``, comparisons, boolean
operators, lambdas, comprehensions, names outside the set, ...) raises :class:`InvalidExpression`
(a :class:`ValueError`) whose message names the offending token, its 1-based column and the rule
broken. Limits: at most 512 characters (printable ASCII only, so look-alike unicode names cannot
sneak in), nesting depth at most 32 (parentheses plus unary operators enclosing a node).

The checked tree is compiled once into a tree of numpy operations:
:meth:`MetaReward.evaluate` maps ``values[N, K]`` to ``ndarray[N]`` in a handful of vectorised
operations. Semantics (chosen so that any formula is a total, bounded function):

- *protected division*: where ``|denominator| < 1e-9`` the quotient is ``0``;
- non-finite results (``nan``, ``inf``, including from non-finite inputs) become ``0``;
- results are clipped to ``[-1e6, 1e6]``.

:attr:`MetaReward.canonical` is a string that is equal for algebraically equal formulas
(``g2+g1``, ``g1+g2`` and ``2*g1/2+g2`` all give ``g1 + g2``). It is computed with sympy from the
checked tree (never from the text with ``sympify``, which evaluates), as a reduced rational
function with non-integer coefficients rounded to 6 significant digits. Division by a constant
is folded exactly; division by anything that contains a variable stays an opaque ``pdiv`` node
(printed back as ``((a)/(b))``), because protected division makes ``g1/g1`` differ from ``1``
(it is 0 where ``g1 = 0``). So two formulas share a canonical form only when they evaluate alike,
which is what a cache / deduplication key needs; some equal formulas with variable denominators
(``g1/(2*g1)`` and ``0.5*(g1/g1)``) keep different keys.
Formulas whose expanded rational form would be very large fall back to sympy's automatic
normal form (commutative reordering and like-term collection, no expansion), which keeps
canonicalisation bounded in time at the price of merging fewer equivalent formulas.
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import re
import threading
import warnings
from typing import Any, Callable, Sequence, Union

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "InvalidExpression",
    "MetaReward",
    "canonicalize",
    "MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_CONSTANT",
    "DIV_EPS",
    "OUTPUT_CLIP",
    "CANONICAL_DIGITS",
]

#: Longest accepted formula text, in characters.
MAX_LENGTH = 512
#: Deepest accepted nesting (parentheses plus unary operators enclosing a node).
MAX_DEPTH = 32
#: Largest accepted absolute value of a number literal.
MAX_CONSTANT = 1e6
#: Protected division: a denominator with ``|d| < DIV_EPS`` gives a quotient of 0.
DIV_EPS = 1e-9
#: Outputs of :meth:`MetaReward.evaluate` are clipped to ``[-OUTPUT_CLIP, OUTPUT_CLIP]``.
OUTPUT_CLIP = 1e6
#: Significant digits kept for non-integer coefficients in :attr:`MetaReward.canonical`.
CANONICAL_DIGITS = 6
#: Above this many (estimated) expanded terms the canonical form skips expansion/cancellation.
_CANONICAL_MAX_TERMS = 400
#: Largest variable index :meth:`MetaReward.infer` accepts (its name table has one entry per variable).
_MAX_INFERRED_VARIABLES = 1024
#: Integer powers up to this exponent are printed as repeated products (``(g1*g1)``), higher as ``**``.
_CANONICAL_MAX_POWER = 8

_ALLOWED_RULE = ("a formula may only use numbers, the variables, binary + - * /, unary - and +, "
                 "and parentheses")
_VAR_RE = re.compile(r"g([1-9][0-9]*)")

_BINOPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_FORBIDDEN_BINOPS: dict[type, str] = {
    ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<",
    ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}
_UNARY_SYMBOL: dict[type, str] = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~"}
_CONSTRUCT_NAMES: dict[type, str] = {
    ast.Call: "function call", ast.Attribute: "attribute access", ast.Subscript: "subscript",
    ast.Compare: "comparison", ast.BoolOp: "boolean operator", ast.Lambda: "lambda",
    ast.IfExp: "conditional expression", ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension", ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression", ast.Tuple: "tuple", ast.List: "list",
    ast.Dict: "dict", ast.Set: "set", ast.Starred: "starred expression",
    ast.NamedExpr: "assignment expression", ast.JoinedStr: "f-string", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "slice",
}

Variables = Union[int, Sequence[str], Any]  # Any: a PrimitiveSet (duck-typed: ``.names``)


class InvalidExpression(ValueError):
    """Raised for text that is not a valid Meta-Reward; the message says where and why.

    Attributes:
        text: the formula.
        column: the 1-based column of the offending token (``None`` when the whole text is at
            fault, e.g. empty or too long).

    Example:
        >>> from derl_gym.rewards import InvalidExpression, MetaReward
        >>> try:
        ...     MetaReward("g1 ** 2")
        ... except InvalidExpression as error:
        ...     print(error.column, error)
        4 '**' at column 4 is not allowed: only the binary operators + - * / are allowed (in 'g1 ** 2')
    """

    def __init__(self, message: str, text: str | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.text = text
        self.column = column


# ------------------------------------------------------------------------------ variables

def _resolve_variables(variables: Variables) -> tuple[int, tuple[str, ...]]:
    """Return ``(K, alias_names)``; ``alias_names[i]`` is the alias of ``g{i+1}`` (``""``: none)."""
    if isinstance(variables, bool):
        raise TypeError("variables must be an int K, a sequence of primitive names or a PrimitiveSet, "
                        f"got {variables!r}")
    if isinstance(variables, (int, np.integer)):
        k = int(variables)
        if k < 1:
            raise ValueError(f"the number of variables must be >= 1, got {k}")
        return k, ("",) * k
    names = getattr(variables, "names", None)  # PrimitiveSet
    if names is None:
        if isinstance(variables, str):
            raise TypeError(f"variables must be an int K or a sequence of names, got the string {variables!r}; "
                            f"wrap a single name in a list: [{variables!r}]")
        names = [getattr(v, "name", v) for v in variables]  # names or Primitive objects
    names = [str(n) for n in names]
    if not names:
        raise ValueError("variables must name at least one primitive")
    aliases: list[str] = []
    for i, name in enumerate(names):
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"variable alias {name!r} (g{i + 1}) must be an ASCII identifier")
        match = _VAR_RE.fullmatch(name)
        if match:
            if int(match.group(1)) != i + 1:
                raise ValueError(f"alias {name!r} at position {i + 1} clashes with the positional variable "
                                 f"{name}; rename it")
            aliases.append("")
        else:
            aliases.append(name)
    seen = [a for a in aliases if a]
    duplicates = sorted({a for a in seen if seen.count(a) > 1})
    if duplicates:
        raise ValueError(f"duplicate variable aliases: {duplicates}")
    return len(names), tuple(aliases)


def _name_table(k: int, aliases: tuple[str, ...]) -> dict[str, int]:
    table = {f"g{i + 1}": i for i in range(k)}
    table.update({a: i for i, a in enumerate(aliases) if a})
    return table


# ------------------------------------------------------------------------------ checking

def _snippet(text: str, node: ast.AST, limit: int = 24) -> str:
    segment = ast.get_source_segment(text, node) or type(node).__name__
    return segment if len(segment) <= limit else segment[: limit - 3] + "..."


def _fail(text: str, token: str, column: int | None, rule: str) -> InvalidExpression:
    where = f" at column {column}" if column is not None else ""
    return InvalidExpression(f"{token!r}{where} is not allowed: {rule} (in {text[:80]!r}"
                             f"{'...' if len(text) > 80 else ''})", text=text, column=column)


def _prescan(text: str) -> list[int]:
    """Check characters and parenthesis depth; return the open-paren depth before each column."""
    if not isinstance(text, str):
        raise InvalidExpression(f"a Meta-Reward must be a str, got {type(text).__name__}: {text!r:.60}")
    if len(text) > MAX_LENGTH:
        raise InvalidExpression(f"formula is {len(text)} characters long; at most {MAX_LENGTH} are allowed "
                                "(shorten it)", text=text[:80])
    if not text.strip():
        raise InvalidExpression("empty formula: write an expression over the variables, e.g. 'g1 + 0.5*g2'",
                                text=text)
    depth_before = [0] * (len(text) + 1)
    depth = 0
    for i, ch in enumerate(text):
        depth_before[i] = depth
        if not (" " <= ch <= "~" or ch == "\t"):
            what = "non-ASCII character" if ord(ch) > 127 else "control character"
            raise _fail(text, ch, i + 1, f"{what}s are not allowed; use ASCII letters, digits, "
                                         "+ - * / ( ) . and spaces")
        if ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise _fail(text, ch, i + 1, f"nesting depth exceeds {MAX_DEPTH}; flatten the formula")
        elif ch == ")":
            depth = max(depth - 1, 0)
    depth_before[len(text)] = depth
    return depth_before


def _operator_column(text: str, node: ast.BinOp, symbol: str) -> int | None:
    """Return the 1-based column of a binary operator (it is not stored in the AST)."""
    start, stop = getattr(node.left, "end_col_offset", None), getattr(node.right, "col_offset", None)
    if start is None or stop is None:
        return None
    index = text.find(symbol, start, stop)
    return index + 1 if index >= 0 else start + 1


def _check(text: str, tree: ast.Expression, names: dict[str, int], k: int,
           depth_before: list[int]) -> None:
    """Walk the tree; raise :class:`InvalidExpression` at the first node outside the whitelist."""
    var_rule = (f"the variables are g1..g{k}" +
                (f" and the aliases {', '.join(n for n in names if not _VAR_RE.fullmatch(n))}"
                 if len(names) > k else ""))
    stack: list[tuple[ast.AST, int]] = [(tree.body, 0)]
    while stack:
        node, unary_depth = stack.pop()
        column = getattr(node, "col_offset", None)
        col1 = column + 1 if column is not None else None
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _BINOPS:
                symbol = _FORBIDDEN_BINOPS.get(op, type(node.op).__name__)
                raise _fail(text, symbol, _operator_column(text, node, symbol),
                            "only the binary operators + - * / are allowed")
            stack.append((node.right, unary_depth))
            stack.append((node.left, unary_depth))
        elif isinstance(node, ast.UnaryOp):
            symbol = _UNARY_SYMBOL.get(type(node.op), type(node.op).__name__)
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                raise _fail(text, symbol, col1, "only the unary operators - and + are allowed")
            depth = unary_depth + 1 + (depth_before[column] if column is not None else 0)
            if depth > MAX_DEPTH:
                raise _fail(text, symbol, col1, f"nesting depth exceeds {MAX_DEPTH}; flatten the formula")
            stack.append((node.operand, unary_depth + 1))
        elif isinstance(node, ast.Constant):
            value = node.value
            if type(value) not in (int, float):
                kind = {bool: "boolean", complex: "complex number", str: "string", bytes: "bytes"}.get(
                    type(value), type(value).__name__)
                raise _fail(text, _snippet(text, node), col1,
                            f"{kind} literals are not allowed; only finite int/float numbers")
            if isinstance(value, float) and not math.isfinite(value):
                raise _fail(text, _snippet(text, node), col1, "number literals must be finite")
            if abs(value) > MAX_CONSTANT:
                raise _fail(text, _snippet(text, node), col1,
                            f"number literals must satisfy |c| <= {MAX_CONSTANT:g}")
        elif isinstance(node, ast.Name):
            if node.id not in names:
                raise _fail(text, node.id, col1, f"unknown name; {var_rule}")
        else:
            construct = _CONSTRUCT_NAMES.get(type(node), type(node).__name__)
            raise _fail(text, _snippet(text, node), col1, f"{construct} is not part of the language; {_ALLOWED_RULE}")


#: Serialises ``ast.parse``: CPython 3.11 keeps the AST constructor's recursion counter per interpreter,
#: not per thread, so parses in several threads (final_test's seeds) can fail with "SystemError: AST
#: constructor recursion depth mismatch"; ``warnings.catch_warnings`` is not thread-safe either.
_PARSE_LOCK = threading.Lock()


def _parse(text: str, names: dict[str, int], k: int) -> ast.Expression:
    """Return the checked tree of ``text`` over ``names``; raises :class:`InvalidExpression`."""
    tree, depth_before = _parse_unchecked(text)
    _check(text, tree, names, k, depth_before)
    return tree


def _parse_unchecked(text: str) -> tuple[ast.Expression, list[int]]:
    """Return ``(tree, depth_before)``: the syntax tree of ``text`` (columns refer to ``text``) before
    the whitelist check, and the parenthesis depth before each column (see :func:`_prescan`)."""
    depth_before = _prescan(text)
    try:
        with _PARSE_LOCK, warnings.catch_warnings():  # e.g. "invalid decimal literal" for '3g1': the error follows
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        # positions refer to the stripped text; shift them back
        shift = len(text) - len(text.lstrip())
        if exc.offset and 0 < exc.offset + shift <= len(text):
            col = exc.offset + shift
            where = f"column {col} near {text[col - 1]!r}"
        else:  # the parser ran out of input
            col = len(text.rstrip()) + 1
            where = f"column {col} (end of formula; is an operand or ')' missing?)"
        raise InvalidExpression(f"syntax error at {where}: {exc.msg}; {_ALLOWED_RULE} "
                                f"(in {text[:80]!r})", text=text, column=col) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes, absurd nesting
        raise InvalidExpression(f"cannot parse formula: {exc}", text=text) from None
    shift = len(text) - len(text.lstrip())
    if shift:  # the stripped text was parsed: shift columns back onto the original text
        for node in ast.walk(tree):
            for attr in ("col_offset", "end_col_offset"):
                if getattr(node, attr, None) is not None:
                    setattr(node, attr, getattr(node, attr) + shift)
    return tree, depth_before


# ------------------------------------------------------------------------------ compiling



def _protected_div(a: Any, b: Any) -> Any:
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    shape = np.broadcast_shapes(a_arr.shape, b_arr.shape)
    out = np.zeros(shape, dtype=np.float64)
    np.divide(a_arr, b_arr, out=out, where=np.abs(b_arr) >= DIV_EPS)
    return out if shape else float(out)


_NUMPY_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: _protected_div,
}


def _binary(fn: Callable[..., Any], left: Any, right: Any, divide: bool) -> Callable[[Any], Any]:
    """Return ``columns -> (ndarray, is_temporary)`` for one binary operation.

    Temporaries (results of earlier operations, never input columns) are overwritten in place to
    save allocations; protected division zeroes the quotient where ``|denominator| < DIV_EPS``.
    """
    if isinstance(right, float):
        if divide and abs(right) < DIV_EPS:
            def zero(cols: Any) -> Any:
                value, _ = left(cols)
                return np.zeros(value.shape, dtype=np.float64), True
            return zero

        def with_right_constant(cols: Any) -> Any:
            value, temp = left(cols)
            return fn(value, right, out=value if temp else None), True
        return with_right_constant

    def with_arrays(cols: Any) -> Any:
        if isinstance(left, float):
            lvalue, ltemp = left, False
        else:
            lvalue, ltemp = left(cols)
        rvalue, rtemp = right(cols)
        bad = np.abs(rvalue) < DIV_EPS if divide else None
        out = lvalue if ltemp else (rvalue if rtemp else None)
        result = fn(lvalue, rvalue, out=out)
        if bad is not None:
            np.copyto(result, 0.0, where=bad)
        return result, True
    return with_arrays


def _compile(node: ast.AST, names: dict[str, int]) -> Any:
    """Return a float (constant subtree, folded) or a function ``columns -> (ndarray[N], is_temporary)``."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        index = names[node.id]
        return lambda cols, _i=index: (cols[_i], False)
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, names)
        if isinstance(node.op, ast.UAdd):
            return inner
        if isinstance(inner, float):
            return -inner

        def negate(cols: Any, _f: Any = inner) -> Any:
            value, temp = _f(cols)
            return np.negative(value, out=value if temp else None), True
        return negate
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left, names), _compile(node.right, names)
        divide = isinstance(node.op, ast.Div)
        if isinstance(left, float) and isinstance(right, float):
            with np.errstate(all="ignore"):
                return float(_NUMPY_BINOPS[type(node.op)](left, right))
        fn = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}[type(node.op)]
        return _binary(fn, left, right, divide)
    raise AssertionError(f"unchecked node {ast.dump(node)}")  # _check guarantees this is unreachable


def _degree(node: ast.AST) -> int:
    """Return the degree of a checked tree in its variables: 0 for a constant, 1 for a variable, the
    larger side for ``+``/``-``, the sum of both sides for ``*``; ``/`` adds 2 when the denominator
    holds a variable (dividing by a variable is not polynomial) and 0 when it is a constant."""
    if isinstance(node, ast.BinOp):
        left, right = _degree(node.left), _degree(node.right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return max(left, right)
        if isinstance(node.op, ast.Mult):
            return left + right
        return left + (2 if right else 0)
    if isinstance(node, ast.UnaryOp):
        return _degree(node.operand)
    return 1 if isinstance(node, ast.Name) else 0


def _count_nodes(node: ast.AST) -> int:
    if isinstance(node, ast.BinOp):
        return 1 + _count_nodes(node.left) + _count_nodes(node.right)
    if isinstance(node, ast.UnaryOp):
        return 1 + _count_nodes(node.operand)
    return 1


# ------------------------------------------------------------------------------ canonical form

def _term_estimate(node: ast.AST) -> tuple[float, float]:
    """Upper bound on (numerator terms, denominator terms) of the expanded rational function."""
    if isinstance(node, ast.BinOp):
        ln, ld = _term_estimate(node.left)
        rn, rd = _term_estimate(node.right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return ln * rd + rn * ld, ld * rd
        if isinstance(node.op, ast.Mult):
            return ln * rn, ld * rd
        return ln * rd, ld * rn
    if isinstance(node, ast.UnaryOp):
        return _term_estimate(node.operand)
    return 1.0, 1.0


def _to_sympy(node: ast.AST, names: dict[str, int], symbols: list[Any]) -> Any:
    import sympy

    if isinstance(node, ast.Constant):
        value = node.value
        return sympy.Integer(value) if isinstance(value, int) else sympy.Rational(repr(float(value)))
    if isinstance(node, ast.Name):
        return symbols[names[node.id]]
    if isinstance(node, ast.UnaryOp):
        inner = _to_sympy(node.operand, names, symbols)
        return -inner if isinstance(node.op, ast.USub) else inner
    left, right = _to_sympy(node.left, names, symbols), _to_sympy(node.right, names, symbols)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if right.is_number:  # a constant denominator: exact unless protected division zeroes it
        return sympy.Integer(0) if abs(float(right)) < DIV_EPS else left / right
    # A variable denominator stays an opaque node: x/x is not 1 under protected division (0 at x = 0).
    if right.could_extract_minus_sign():  # (-a)/(-b) == a/b, protection included: one key for both
        left, right = -left, -right
    return _protected_div_function()(left, right)


@functools.lru_cache(maxsize=1)
def _protected_div_function() -> Any:
    """Return the sympy function ``pdiv(a, b)`` standing for protected division by a non-constant."""
    import sympy

    return sympy.Function("pdiv", nargs=2)


def _round_sig(value: float, digits: int = CANONICAL_DIGITS) -> str:
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0") else text


@functools.lru_cache(maxsize=1)
def _printer_class() -> type:
    from sympy.printing.str import StrPrinter

    class _CanonicalPrinter(StrPrinter):
        """Prints floats with a fixed number of significant digits."""

        def _print_Float(self, expr: Any) -> str:  # noqa: N802 (sympy naming)
            return _round_sig(float(expr))

        def _print_Function(self, expr: Any) -> str:  # noqa: N802
            if expr.func.__name__ == "pdiv":  # print protected division back in the language
                numerator, denominator = (self._print(arg) for arg in expr.args)
                return f"(({numerator})/({denominator}))"
            return super()._print_Function(expr)

        def _print_Pow(self, expr: Any, rational: bool = False) -> str:  # noqa: N802
            # integer powers as repeated products so that the canonical form stays in the language
            base, exponent = expr.as_base_exp()
            if exponent.is_Integer and int(exponent) != -1 and 0 < abs(int(exponent)) <= _CANONICAL_MAX_POWER:
                from sympy.printing.precedence import PRECEDENCE

                factor = self.parenthesize(base, PRECEDENCE["Mul"], strict=False)
                product = "*".join([factor] * abs(int(exponent)))
                if int(exponent) > 0:
                    return f"({product})" if abs(int(exponent)) > 1 else product
                return f"(1/({product}))"
            return super()._print_Pow(expr, rational=rational)

    return _CanonicalPrinter


def _sympy_canonical(expr: Any, full: bool) -> str:
    import sympy

    if full:
        expr = sympy.cancel(sympy.together(expr))
    replacements = {r: sympy.Float(_round_sig(float(r)))
                    for r in expr.atoms(sympy.Rational) if not r.is_Integer}
    if replacements:
        expr = expr.xreplace(replacements)
    return _printer_class()(dict(order="lex")).doprint(expr)


@functools.lru_cache(maxsize=4096)
def _canonical_cached(text: str, k: int, aliases: tuple[str, ...]) -> str:
    import sympy

    names = _name_table(k, aliases)
    tree = _parse(text, names, k)
    symbols = list(sympy.symbols(f"g1:{k + 1}"))
    expr = _to_sympy(tree.body, names, symbols)
    num, den = _term_estimate(tree.body)
    full = num + den <= _CANONICAL_MAX_TERMS
    if not full:
        logger.debug("canonical form of %r skips expansion (about %g terms)", text, num + den)
    try:
        return _sympy_canonical(expr, full)
    except (RecursionError, MemoryError, sympy.PolynomialError) as exc:  # pragma: no cover - defensive
        logger.warning("canonical form of %r fell back to the unexpanded form: %s", text, exc)
        return _sympy_canonical(expr, False)


# ------------------------------------------------------------------------------ MetaReward

class MetaReward:
    """A checked, compiled Meta-Reward formula over the variables ``g1..gK``.

    The text is parsed with :mod:`ast` against a whitelist and never evaluated by Python (see the
    module docstring for the language and its semantics). Equality and hashing use the canonical
    form. Instances pickle as text + variables and recompile on load.

    Args:
        text: the formula, e.g. ``"g1 + 0.5*(g2 - g4/3)"``.
        variables: an int ``K`` (variables ``g1..gK``), a sequence of ``K`` primitive names (they
            become aliases of ``g1..gK``; ``Primitive`` objects work too) or a ``PrimitiveSet`` (its
            variables with its names as aliases).

    Attributes:
        text: the formula as given.
        num_variables: ``K``.
        aliases: the alias name of each variable (``""`` for none).

    Raises:
        InvalidExpression: for text that is not a valid formula (the message names the token,
            its column and the rule broken).

    Example:
        >>> import numpy as np
        >>> from derl_gym.rewards import MetaReward, agent_primitives
        >>> reward = MetaReward("success + 0.5*progress_last", agent_primitives())  # names alias g1..g4
        >>> reward([1.0, 0.0, 0.0, 0.5])                     # one row of g1..g4 -> a float
        1.25
        >>> reward.evaluate(np.array([[1, 0, 0, 0.5], [0, 0, 0, 1.0]]))   # [N, K] -> [N], vectorised
        array([1.25, 0.5 ])
        >>> reward.canonical, reward.complexity, reward.variables_used
        ('g1 + 0.5*g4', 5, ('g1', 'g4'))
        >>> MetaReward("g1/g2", 2)([1.0, 0.0])               # protected division: x/0 gives 0
        0.0
        >>> MetaReward("g2 + g1") == MetaReward("2*g1/2 + g2")  # equal canonical forms
        True
    """

    __slots__ = ("text", "num_variables", "aliases", "_names", "_tree", "_fn", "_canonical")

    def __init__(self, text: str, variables: Variables = 4) -> None:
        self.num_variables, self.aliases = _resolve_variables(variables)
        self._names = _name_table(self.num_variables, self.aliases)
        self.text = text
        self._tree = _parse(text, self._names, self.num_variables)
        self._fn = _compile(self._tree.body, self._names)
        self._canonical: str | None = None

    @classmethod
    def parse(cls, text: str, variables: Variables = 4) -> "MetaReward":
        """Parse a formula (the same as the constructor).

        Returns:
            The :class:`MetaReward` for ``text``.

        Raises:
            InvalidExpression: for invalid text.
        """
        return cls(text, variables)

    @classmethod
    def infer(cls, text: str) -> "MetaReward":
        """Parse a formula over as many variables as it names, for text whose primitive set is not
        known (stored formulas, reports): ``K`` is the largest ``i`` of the ``g<i>`` it reads (1 for a
        constant). Aliases are unknown here, so any other name is rejected.

        Returns:
            The :class:`MetaReward` for ``text`` over ``g1..gK``.

        Raises:
            InvalidExpression: for invalid text, a name that is not ``g<i>``, or an index above
                1024 (pass the variables to the constructor instead).

        Example:
            >>> from derl_gym.rewards import MetaReward
            >>> reward = MetaReward.infer("g1 + 0.5*g10")
            >>> reward.num_variables, reward.variables_used, reward.degree
            (10, ('g1', 'g10'), 1)
        """
        tree, _ = _parse_unchecked(text)
        indices = [int(m.group(1)) for node in ast.walk(tree) if isinstance(node, ast.Name)
                   for m in [_VAR_RE.fullmatch(node.id)] if m]
        k = max(indices, default=1)
        if k > _MAX_INFERRED_VARIABLES:
            raise InvalidExpression(f"variable g{k} in {text[:80]!r} is beyond g{_MAX_INFERRED_VARIABLES}, the "
                                    "largest index MetaReward.infer accepts; pass the number of variables to "
                                    "MetaReward(text, K) instead", text=text)
        return cls(text, k)

    # ---------------------------------------------------------------- properties
    @property
    def variable_names(self) -> tuple[str, ...]:
        """The positional variable names ``("g1", ..., "gK")``."""
        return tuple(f"g{i + 1}" for i in range(self.num_variables))

    @property
    def canonical(self) -> str:
        """The canonical string (equal for algebraically equal formulas; computed lazily, cached)."""
        if self._canonical is None:
            self._canonical = _canonical_cached(self.text, self.num_variables, self.aliases)
        return self._canonical

    @property
    def complexity(self) -> int:
        """Number of AST nodes (numbers, variables, unary and binary operations)."""
        return _count_nodes(self._tree.body)

    @property
    def variables_used(self) -> tuple[str, ...]:
        """Sorted (by index) tuple of the ``g`` names the formula reads, aliases resolved."""
        used = {self._names[n.id] for n in ast.walk(self._tree) if isinstance(n, ast.Name)}
        return tuple(f"g{i + 1}" for i in sorted(used))

    @property
    def degree(self) -> int:
        """The formula's degree in its variables, read off the tree as written (not simplified):
        0 for a constant, 1 for a weighted sum of variables plus constants (``g1 + 0.5*g2``), the
        sum of the factors' degrees for a product; dividing by a term that holds a variable adds 2.
        A degree of 2 or more means the formula is not affine in its variables."""
        return _degree(self._tree.body)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """Evaluate the formula on a batch of primitive values.

        Protected division (``|d| < 1e-9`` gives 0), non-finite results become 0, and the output is
        clipped to ``[-1e6, 1e6]``.

        Args:
            values: an array ``[N, K]``, one row of ``g1..gK`` per sample.

        Returns:
            A float64 array ``[N]``: the formula on each row.

        Raises:
            ValueError: when ``values`` is not 2-D with K columns.
        """
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.num_variables:
            raise ValueError(f"values must have shape [N, {self.num_variables}] (one column per variable "
                             f"g1..g{self.num_variables}), got shape {array.shape}; pass a single row "
                             "to __call__ or reshape with values.reshape(-1, K)")
        n = array.shape[0]
        if isinstance(self._fn, float):
            result = np.full(n, self._fn, dtype=np.float64)
        else:
            columns = np.ascontiguousarray(array.T) if n > 64 else array.T
            with np.errstate(all="ignore"):
                result, temporary = self._fn(columns)
            if not temporary:  # a bare input column: do not alias the input
                result = np.array(result, dtype=np.float64)
        result[~np.isfinite(result)] = 0.0
        np.clip(result, -OUTPUT_CLIP, OUTPUT_CLIP, out=result)
        return result

    def __call__(self, values: np.ndarray) -> Any:
        """Evaluate the formula on one row or a batch.

        Returns:
            A float for one row ``values[K]``, a float64 array ``[N]`` for ``values[N, K]``.
        """
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 1:
            if array.shape[0] != self.num_variables:
                raise ValueError(f"a single row must have {self.num_variables} values (g1..g{self.num_variables}), "
                                 f"got {array.shape[0]}")
            return float(self.evaluate(array[None, :])[0])
        return self.evaluate(array)

    # ---------------------------------------------------------------- dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetaReward):
            return NotImplemented
        return self.canonical == other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"MetaReward({self.text!r}, K={self.num_variables})"

    def __str__(self) -> str:
        return self.text

    def __getstate__(self) -> dict[str, Any]:
        return {"text": self.text, "num_variables": self.num_variables, "aliases": self.aliases,
                "canonical": self._canonical}

    def __setstate__(self, state: dict[str, Any]) -> None:
        aliases = tuple(state["aliases"])
        variables: Any = [a or f"g{i + 1}" for i, a in enumerate(aliases)]
        MetaReward.__init__(self, state["text"], variables)
        self._canonical = state.get("canonical")


def canonicalize(text: str, variables: Variables = 4) -> str:
    """Return the canonical string of a formula (see :attr:`MetaReward.canonical`).

    Args:
        text: the formula.
        variables: as for :class:`MetaReward`.

    Returns:
        The canonical string, equal for formulas that evaluate alike.

    Raises:
        InvalidExpression: for invalid text.

    Example:
        >>> from derl_gym.rewards import canonicalize
        >>> canonicalize("g2+g1"), canonicalize("2*g1/2 + g2"), canonicalize("g1/g1")
        ('g1 + g2', 'g1 + g2', '((g1)/(g1))')
    """
    return MetaReward(text, variables).canonical
