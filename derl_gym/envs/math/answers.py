"""Answer extraction for GSM8K and MATH: final answers of responses and references, as text or numbers.

Pure text functions with no state: the last ``\\boxed{...}`` (balanced braces), the last number,
exact numbers as :class:`~fractions.Fraction`, GSM8K's ``#### N`` reference, MATH's reference
(``answer`` field or the solution's last box), a response's MATH answer, and the normalised string form
used by the string-comparison fallback of :mod:`derl_gym.envs.math.grading`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Iterator

__all__ = [
    "extract_boxed",
    "extract_last_number",
    "parse_number",
    "gsm8k_ground_truth",
    "extract_gsm8k_answer",
    "math_ground_truth",
    "extract_math_answer",
    "normalize_math_answer",
    "NUMBER_RE",
]

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
#: A number as written in text (``1,234``, ``-3.5``, ``$12``, ``1/2``).
NUMBER_RE = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_MAX_NUMBER_CHARS = 200


def _balanced(text: str, start: int) -> str | None:
    """Return the contents of the brace group opening at ``text[start] == '{'`` (None if unclosed)."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{ \} \\) never opens or closes a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Return ``{open_index: close_index}`` for every matched ``{...}`` in one linear pass (escapes skipped)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _boxed_spans(text: str) -> Iterator[str]:
    pairs: dict[int, int] | None = None
    for match in _BOXED_RE.finditer(text):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            if i in pairs:
                yield text[i + 1:pairs[i]]
        elif i > match.end() and i < len(text):  # "\boxed 5" form: up to whitespace or $
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                yield token.group(0)


def extract_boxed(text: str) -> str | None:
    """Return the stripped contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    Braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``); escaped braces do not count;
    an unclosed box is ignored. Returns None when there is none.

    Example:
        >>> extract_boxed(r"so x = \\boxed{\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> extract_boxed("no box here") is None
        True
    """
    if not isinstance(text, str) or "\\" not in text:
        return None
    last = None
    for content in _boxed_spans(text):
        last = content
    return last.strip() if last is not None else None


def extract_last_number(text: str) -> str | None:
    """Return the last number in ``text`` as written (``1,234``, ``-3.5``, ``$12``, ``1/2``), or None.

    Example:
        >>> extract_last_number("She paid $1,234 then 3.5 more, so -7 left")
        '-7'
        >>> extract_last_number("none") is None
        True
    """
    if not isinstance(text, str):
        return None
    last = None
    for match in NUMBER_RE.finditer(text):
        last = match.group(0)
    return last.strip() if last is not None else None


def parse_number(text: str | None) -> Fraction | None:
    """Return ``text`` as an exact :class:`~fractions.Fraction`, or None when it is not one number.

    Accepts commas, ``$``, ``%``, surrounding ``$...$``, LaTeX ``\\$``/``\\%``/``\\!``, ``\\text{...}``
    units after the number, trailing ``.``/``.0``, ``a/b`` and ``\\frac{a}{b}`` (``\\dfrac``).

    Example:
        >>> parse_number("$1,234.50")
        Fraction(2469, 2)
        >>> parse_number(r"\\frac{3}{4}")
        Fraction(3, 4)
        >>> parse_number("x + 1") is None
        True
    """
    if text is None:
        return None
    s = str(text).strip()
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}", " ", s)
    s = s.replace("\\$", "").replace("\\%", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("$", "").replace("%", "").replace(",", "").replace(" ", "").rstrip(".")
    frac = re.fullmatch(r"(-?)\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    try:
        if frac:
            value = Fraction(frac.group(2)) / Fraction(frac.group(3))
            return -value if frac.group(1) else value
        if re.fullmatch(r"[-+]?\d+(?:\.\d*)?(?:/\d+(?:\.\d+)?)?|[-+]?\.\d+", s):
            if "/" in s:
                num, den = s.split("/")
                return Fraction(num) / Fraction(den)
            return Fraction(s)
    except (ValueError, ZeroDivisionError, ArithmeticError):
        return None
    return None


def gsm8k_ground_truth(answer_field: str) -> str | None:
    """Return the final answer after ``#### `` in a GSM8K ``answer`` field, commas removed (None if absent).

    Example:
        >>> gsm8k_ground_truth("3 + 4 = 7 apples, doubled is 1,400.\\n#### 1,400")
        '1400'
    """
    if not isinstance(answer_field, str):
        return None
    matches = re.findall(r"####\s*([^\n]+)", answer_field)
    if not matches:
        return None
    return matches[-1].strip().replace(",", "").rstrip(".") or None


def extract_gsm8k_answer(response: str) -> str | None:
    """Return the model's final answer text: last ``\\boxed{}``, else last ``#### N``, else the last number.

    Inside a box the number is taken from its content (``\\boxed{\\$18}`` -> ``\\$18``; ``\\boxed{18
    \\text{ dollars}}`` keeps the text, which :func:`parse_number` ignores). Returns None when nothing
    number-like is found.

    Example:
        >>> extract_gsm8k_answer(r"3 + 4 = 7, so \\boxed{7}")
        '7'
        >>> extract_gsm8k_answer("Step 1: 2 * 3 = 6.\\n#### 6")
        '6'
    """
    if not isinstance(response, str) or not response:
        return None
    return extract_boxed(response) or _gsm8k_unboxed_answer(response)


def _gsm8k_unboxed_answer(response: str) -> str | None:
    """Return :func:`extract_gsm8k_answer`'s answer of a response without a box: the number of the last
    ``#### N`` that has one, else the last number."""
    for candidate in reversed(re.findall(r"####\s*([^\n]*)", response)):
        number = extract_last_number(candidate)
        if number is not None:
            return number
    return extract_last_number(response)


def math_ground_truth(record: dict[str, Any]) -> str | None:
    """Return a MATH record's ground truth: its ``answer`` field, else the last ``\\boxed{}`` of ``solution``.

    Example:
        >>> math_ground_truth({"problem": "1+1?", "solution": r"It is \\boxed{2}."})
        '2'
        >>> math_ground_truth({"answer": r"\\frac{1}{2}", "solution": ""})
        '\\\\frac{1}{2}'
    """
    answer = record.get("answer")
    if isinstance(answer, str) and answer.strip():
        return answer.strip()
    return extract_boxed(str(record.get("solution", "")))


_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.I)


def extract_math_answer(response: str) -> str | None:
    """Return the model's final answer: last ``\\boxed{}``, else ``answer is X``, else ``#### X``, else the last number.

    ``answer is X`` takes the rest of that line up to a sentence end, with ``$`` delimiters removed.
    Returns None when nothing is found.

    Example:
        >>> extract_math_answer(r"Thus the final answer is $\\frac{\\pi}{2}$.")
        '\\\\frac{\\\\pi}{2}'
    """
    if not isinstance(response, str) or not response:
        return None
    return extract_boxed(response) or _math_unboxed_answer(response)


def _math_unboxed_answer(response: str) -> str | None:
    """Return :func:`extract_math_answer`'s answer of a response without a box: ``answer is X``, else
    ``#### X``, else the last number."""
    phrases = _ANSWER_IS_RE.findall(response)
    if phrases:
        candidate = phrases[-1].strip()
        dollar = re.search(r"(?<!\\)\$\$?(.+?)(?<!\\)\$", candidate)
        if dollar:
            candidate = dollar.group(1)
        else:
            candidate = re.split(r"\.(?:\s|$)|(?<!\d)\.(?!\d)", candidate)[0]
        candidate = candidate.strip().rstrip(".").strip()
        if candidate:
            return candidate
    hashes = re.findall(r"####\s*([^\n]+)", response)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip()
    return extract_last_number(response)


def normalize_math_answer(answer: str) -> str:
    """Return a canonical string for a LaTeX answer, for the string-comparison fallback.

    Drops whitespace, ``$``, ``\\left``/``\\right``, spacing commands, ``\\text{}`` wrappers, degree
    marks, ``\\%``, a leading ``x=``; maps ``\\dfrac``/``\\tfrac`` to ``\\frac``; strips outer braces
    and a trailing period.

    Example:
        >>> normalize_math_answer(r"$x = \\dfrac{1}{2}$")
        '\\\\frac{1}{2}'
    """
    s = str(answer)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "")
    for token in ("\\!", "\\,", "\\;", "\\:", "\\ ", "$", "\\%", "%"):
        s = s.replace(token, "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^[a-zA-Z]=", "", s)
    s = s.rstrip(".")
    while s.startswith("{") and s.endswith("}") and _balanced(s, 0) == s[1:-1]:
        s = s[1:-1]
    return s
