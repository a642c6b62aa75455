"""The paper's math primitives (g1 strict match, g2 boxed format, g3 explicit steps, g4 loose match).

Each reads the last step of a trajectory: the response (``info["response"]`` or the action) and what
the env put in ``info`` (``correct``, ``ground_truth``, ``dataset``). All values are in [0, 1].
"""

from __future__ import annotations

import re

from derl_gym.envs.math.answers import NUMBER_RE, extract_boxed, normalize_math_answer, parse_number
from derl_gym.rewards.primitives import Primitive, PrimitiveSet, Step, Trajectory

__all__ = ["count_step_markers", "step_structure_score", "loose_match", "math_primitives"]

_STEP_MARKER_RE = re.compile(
    r"^(?:step\s*\d+\b|\d{1,2}\s*[.):](?!\d)|(?:first|firstly|second|secondly|third|thirdly|next|then|finally)\b)",
    re.I)


def count_step_markers(text: str) -> int:
    """Return how many lines of ``text`` start with an explicit step marker.

    A line (after leading whitespace and markdown ``#``, ``*``, ``-``, ``>`` decorations) is a step
    marker when it starts, case-insensitively, with ``Step <n>``, a list number ``<n>.``/``<n>)``/``<n>:``
    (n < 100, not a decimal like ``3.5``), or one of the sequence words First(ly), Second(ly),
    Third(ly), Next, Then, Finally.

    Example:
        >>> from derl_gym.envs.math import count_step_markers
        >>> count_step_markers("Step 1: 3 + 4 = 7.\\n2. Double it: 14.\\nThe answer is 14.")
        2
    """
    if not isinstance(text, str):
        return 0
    count = 0
    for line in text.splitlines():
        stripped = line.lstrip(" \t#*->").lstrip()
        if _STEP_MARKER_RE.match(stripped):
            count += 1
    return count


def step_structure_score(text: str) -> float:
    """Return the explicit-steps score of a response (primitive ``explicit_steps``).

    1.0 when at least two lines carry step markers (:func:`count_step_markers`); 0.5 when there are
    fewer markers but at least two non-empty reasoning lines besides the last non-empty line (the one
    that usually holds the final answer); else 0.0.

    Example:
        >>> from derl_gym.envs.math import step_structure_score
        >>> step_structure_score("First, 3 + 4 = 7.\\nThen 7 * 2 = 14.\\n#### 14")
        1.0
        >>> step_structure_score("3 + 4 = 7\\n7 * 2 = 14\\n#### 14"), step_structure_score("#### 14")
        (0.5, 0.0)
    """
    if not isinstance(text, str) or not text.strip():
        return 0.0
    if count_step_markers(text) >= 2:
        return 1.0
    lines = [line for line in text.splitlines() if line.strip()]
    return 0.5 if len(lines) - 1 >= 2 else 0.0


def loose_match(response: str, ground_truth: str, numeric: bool | None = None) -> bool:
    """Return True when the ground truth appears anywhere in ``response``.

    Numeric ground truths (GSM8K, or any that :func:`parse_number` reads when ``numeric`` is None)
    match when some number in the response equals it (``1,234`` matches ``1234``), or, unless
    ``numeric`` is True, when the normalised truth appears in the normalised response but not inside a
    longer number (``\\dfrac{3}{56}`` matches ``\\frac{3}{56}``; ``420`` never matches ``42``). Other
    answers match when the normalised ground truth is a substring of the normalised response.

    Example:
        >>> from derl_gym.envs.math import loose_match
        >>> loose_match("so she has 1,234 apples left", "1234"), loose_match("she has 1,233", "1234")
        (True, False)
        >>> loose_match(r"the side is $\\sqrt{2}$ units", r"\\sqrt{2}")
        True
        >>> loose_match("the total is 420", "42")  # a number is never matched as a substring
        False
    """
    if not isinstance(response, str) or not response or not ground_truth:
        return False
    truth_value = parse_number(ground_truth) if numeric is not False else None
    if truth_value is not None:
        for match in NUMBER_RE.finditer(response):
            if parse_number(match.group(0)) == truth_value:
                return True
        if numeric:
            return False
        # a LaTeX number (\frac{3}{56}) is not one NUMBER_RE match: look for its text, but never as part of
        # a longer number ("42" in "420" or "1.42")
        needle = normalize_math_answer(ground_truth)
        return bool(needle) and re.search(rf"(?<![\d.]){re.escape(needle)}(?!\d)",
                                          normalize_math_answer(response)) is not None
    needle = normalize_math_answer(ground_truth)
    return bool(needle) and needle in normalize_math_answer(response)


def _last_step(trajectory: Trajectory) -> Step | None:
    return trajectory.steps[-1] if trajectory.steps else None


def _response(step: Step) -> str:
    if isinstance(step.info.get("response"), str):
        return step.info["response"]
    return step.action if isinstance(step.action, str) else ""


def _strict(trajectory: Trajectory) -> float:
    step = _last_step(trajectory)
    if step is None:
        return 0.0
    if "correct" in step.info:
        return float(bool(step.info["correct"]))
    return float(float(step.reward) >= 1.0)


def _boxed(trajectory: Trajectory) -> float:
    step = _last_step(trajectory)
    return float(step is not None and bool(extract_boxed(_response(step))))


def _steps(trajectory: Trajectory) -> float:
    step = _last_step(trajectory)
    return 0.0 if step is None else step_structure_score(_response(step))


def _loose(trajectory: Trajectory) -> float:
    step = _last_step(trajectory)
    if step is None:
        return 0.0
    if step.info.get("correct"):
        return 1.0
    truth = step.info.get("ground_truth")
    if not isinstance(truth, str):
        return 0.0
    numeric = True if step.info.get("dataset") == "gsm8k" else None
    return float(loose_match(_response(step), truth, numeric=numeric))


def math_primitives() -> PrimitiveSet:
    """Return the paper's math primitive set (all in [0, 1], read from the last step's action/info).

    - g1 ``strict_match``: 1 when the extracted final answer equals the ground truth (= task reward;
      ``info["correct"]``).
    - g2 ``boxed_format``: 1 when the response contains a balanced, non-empty ``\\boxed{...}``.
    - g3 ``explicit_steps``: :func:`step_structure_score` (1 for >= 2 step-marker lines, 0.5 for >= 2
      plain reasoning lines before the answer line, else 0).
    - g4 ``loose_match``: 1 when the ground truth appears anywhere in the response
      (:func:`loose_match`) or the answer is correct.

    Example:
        >>> from derl_gym.envs.math import math_primitives
        >>> from derl_gym.rewards import Step, Trajectory
        >>> response = "Step 1: 3 + 4 = 7.\\nStep 2: 7 * 2 = 14.\\nSo \\\\boxed{14}."
        >>> info = {"correct": True, "ground_truth": "14", "dataset": "gsm8k"}
        >>> episode = Trajectory("What is (3 + 4) * 2?", {}, [Step(response, "", 1.0, True, False, info)])
        >>> primitives = math_primitives()
        >>> primitives.names, primitives.compute(episode).tolist()
        (['strict_match', 'boxed_format', 'explicit_steps', 'loose_match'], [1.0, 1.0, 1.0, 1.0])
    """
    return PrimitiveSet([
        Primitive("strict_match", "1 if the extracted final answer equals the ground truth (the task reward)", _strict),
        Primitive("boxed_format", "1 if the response contains a non-empty \\boxed{...}", _boxed),
        Primitive("explicit_steps", "1 if >= 2 lines start with step markers (Step n, n., First/Next/Then/Finally), "
                  "0.5 if >= 2 reasoning lines precede the answer line, else 0", _steps),
        Primitive("loose_match", "1 if the ground truth appears anywhere in the response", _loose),
    ], name="math")
