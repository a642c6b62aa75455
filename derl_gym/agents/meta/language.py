"""Prompts for a language-model meta-optimizer (the paper's meta-prompt).

A language model plays the meta-optimizer by reading a prompt that describes the task and the
primitives, shows a few example formulas and (optionally) the formulas tried so far with their
validation scores, and answering with one formula. This module builds that prompt
(:func:`build_meta_prompt`) and pulls the formula out of a free-form completion
(:func:`extract_formula`). DERL's language-model policy
(:class:`derl_gym.agents.meta.lm_policy.CausalLMPolicy`) reads it with ``answer="plain"`` and writes
the formula under the grammar constraint; :class:`derl_gym.envs.meta.MetaRewardTextEnv` uses the
same builder for its observation, so the same model can act in ``derl_gym/MetaRewardText-v0``.
"""

from __future__ import annotations

import re
from typing import Sequence

_FORMULA_TAG = re.compile(r"<formula>(.*?)</formula>", re.S | re.I)
_FORMULA_LINE = re.compile(r"^\s*(?:formula|answer|reward)\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def describe_variables(num_variables: int) -> str:
    """Return a generic primitive description ``g1..gK`` (one per line) when no PrimitiveSet is known.

    Example:
        >>> from derl_gym.agents.meta.language import describe_variables
        >>> print(describe_variables(2))
        g1: primitive reward 1 (a number in [0, 1])
        g2: primitive reward 2 (a number in [0, 1])
    """
    return "\n".join(f"g{k + 1}: primitive reward {k + 1} (a number in [0, 1])" for k in range(num_variables))


def build_meta_prompt(primitives: str, history: Sequence[tuple[str, float | None, str | None]] = (),
                      *, max_history: int = 10, task: str = "", constants: Sequence[str] = (),
                      examples: Sequence[str] = (), answer: str = "tag", max_chars: int | None = None) -> str:
    """Return the meta-optimizer prompt text.

    ``primitives`` is a description of ``g1..gK`` (``PrimitiveSet.describe()`` or
    :func:`describe_variables`); ``history`` lists ``(formula, score or None, error or None)`` of
    earlier attempts (the ``max_history`` most recent are shown, best score marked); ``task`` is an
    optional sentence about the inner task; ``constants`` optionally lists suggested numbers;
    ``examples`` lists a few example formulas; ``answer="tag"`` asks for the formula inside
    ``<formula></formula>``, ``answer="plain"`` for the bare formula (constrained decoding).
    ``max_chars`` trims the oldest history lines until the prompt fits (the instructions are kept).

    Example:
        >>> from derl_gym.agents.meta.language import build_meta_prompt, describe_variables
        >>> history = [("g1", 0.4, None), ("g1 + g2", 0.6, None), ("g1/", None, "unexpected end")]
        >>> prompt = build_meta_prompt(describe_variables(2), history)
        >>> print(prompt[prompt.index("Formulas tried"):])
        Formulas tried so far (formula -> validation score):
          g1 -> 0.400
          g1 + g2 -> 0.600  (best)
          g1/ -> invalid (unexpected end)
        An agent is trained on your formula and its validation success rate (0 to 1) is your score.
        Answer with one formula inside <formula></formula>.
        >>> len(build_meta_prompt(describe_variables(2), history, max_chars=500)) <= 500  # oldest attempts dropped
        True
    """
    head = [
        "You design the reward function of a reinforcement-learning agent.",
        *( [f"Task: {task}"] if task else [] ),
        "Write a Meta-Reward: an arithmetic formula over these primitives:",
        primitives,
        "Allowed: the variables above (or their names), numbers, + - * /, unary minus and parentheses.",
    ]
    if answer not in ("tag", "plain"):
        raise ValueError(f"answer must be 'tag' or 'plain', got {answer!r}")
    if constants:
        head.append("Suggested constants: " + ", ".join(map(str, constants)))
    if examples:
        head.append("Example formulas: " + "; ".join(map(str, examples)))
    tail = ["An agent is trained on your formula and its validation success rate (0 to 1) is your score.",
            "Answer with one formula inside <formula></formula>." if answer == "tag" else
            "Answer with the formula only."]
    shown = list(history)[-max_history:] if max_history > 0 else []
    scored = [s for _, s, _ in shown if s is not None]
    best = max(scored) if scored else None

    def render(lines_history: Sequence[tuple[str, float | None, str | None]]) -> str:
        lines = list(head)
        if lines_history:
            lines.append("Formulas tried so far (formula -> validation score):")
            for formula, score, error in lines_history:
                if error:
                    lines.append(f"  {formula} -> invalid ({error})")
                else:
                    mark = "  (best)" if score is not None and best is not None and score == best else ""
                    lines.append(f"  {formula} -> {score:.3f}{mark}" if score is not None else f"  {formula} -> ?")
        return "\n".join(lines + tail)

    text = render(shown)
    while max_chars is not None and len(text) > max_chars and shown:
        shown = shown[1:]
        text = render(shown)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text


def extract_formula(completion: str) -> str:
    """Return the formula in a language model's answer.

    Looks for the last ``<formula>...</formula>``, then a ``formula: ...`` line, else returns the
    last non-empty line; surrounding backticks and a trailing period are removed.

    Example:
        >>> from derl_gym.agents.meta.language import extract_formula
        >>> extract_formula("I would try <formula>g1 + 0.5*g2</formula>."), extract_formula("Formula: `g1 - g3`.")
        ('g1 + 0.5*g2', 'g1 - g3')
    """
    tagged = _FORMULA_TAG.findall(completion)
    if tagged:
        text = tagged[-1]
    else:
        lines = _FORMULA_LINE.findall(completion)
        if lines:
            text = lines[-1]
        else:
            rows = [row for row in completion.strip().splitlines() if row.strip()]
            text = rows[-1] if rows else ""
    previous = None
    while previous != text:  # peel backticks, spaces and trailing periods in any order
        previous = text
        text = text.strip().strip("`").rstrip(".")
    return text
