"""GSM8K and MATH as one-step Gymnasium envs (``derl_gym/GSM8K-v0``, ``derl_gym/MATH-v0``).

One episode = one problem. :meth:`reset` picks a problem (seeded: a shuffled order that visits every
problem of the split once per pass), the observation is the problem text, the action is the model's
answer text, and :meth:`step` ends the episode with task reward 1.0 when the extracted final answer is
correct, else 0.0. Problems come from :mod:`derl_gym.envs.math.data`, answers are extracted by
:mod:`derl_gym.envs.math.answers` and graded by :mod:`derl_gym.envs.math.grading` (a MATH env owns a
:class:`~derl_gym.envs.math.grading.MathGrader`, closed by :meth:`close`).
"""

from __future__ import annotations

import logging
import os
import string
import unicodedata
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from derl_gym.envs.math.answers import extract_gsm8k_answer, extract_last_number, extract_math_answer, parse_number
from derl_gym.envs.math.data import MathProblem, load_gsm8k, load_math
from derl_gym.envs.math.grading import MathGrader, gsm8k_equivalent
from derl_gym.envs.math.primitives import math_primitives
from derl_gym.rewards.primitives import PrimitiveSet

logger = logging.getLogger(__name__)

__all__ = ["CHARSET", "EXTRA_CHARS", "DEFAULT_OBSERVATION_LENGTH", "DEFAULT_ACTION_LENGTH", "normalize_text",
           "GSM8KEnv", "MATHEnv"]

#: Non-ASCII characters kept as they are in observations (common in GSM8K / MATH text).
EXTRA_CHARS = "’‘“”–—€£¢¥°×÷±≤≥≠≈∞π√·•…éèêëáàâäíìîïóòôöúùûüñçÉÀÅåøæ½¼¾²³¹µ"
#: The charset of both Text spaces: printable ASCII (incl. whitespace) plus :data:`EXTRA_CHARS`.
CHARSET: str = string.printable + EXTRA_CHARS
_CHARSET_SET = frozenset(CHARSET)
_REPLACEMENTS = {
    "\xa0": " ", "\u2028": "\n", "\u2029": "\n", "\u200b": "", "\u200c": "", "\u200d": "",
    "\ufeff": "", "\u2009": " ", "\u202f": " ", "\u2212": "-", "\u2032": "'", "\u2033": '"',
}
#: Default observation max length (characters). GSM8K questions are <= 985 characters and
#: MATH-500 problems <= 1,733; longer problems are truncated with a warning (pass ``max_length``).
DEFAULT_OBSERVATION_LENGTH = {"gsm8k": 4096, "math": 8192}
#: Default action max length (characters). Longer responses are truncated to their first
#: ``action_max_length`` characters (like a generation budget), reported as ``info["action_truncated"]``.
DEFAULT_ACTION_LENGTH = 8192


def normalize_text(text: str, charset: frozenset[str] = _CHARSET_SET) -> str:
    """Return ``text`` with every character mapped into ``charset``.

    Known look-alikes are replaced (no-break space -> space, line separator -> newline, zero-width
    characters dropped, minus sign -> ``-``); other characters outside the charset are NFKD-decomposed
    with combining marks dropped (``ō`` -> ``o``), and what still does not fit becomes ``?``.

    Example:
        >>> from derl_gym.envs.math import normalize_text
        >>> normalize_text("Kōji paid 5\\u00a0€ \\u2212 2 = 3 ✓")
        'Koji paid 5 € - 2 = 3 ?'
    """
    if all(ch in charset for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch in charset:
            out.append(ch)
            continue
        if ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
            continue
        decomposed = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if decomposed and all(c in charset for c in decomposed):
            out.append(decomposed)
        else:
            out.append("?")
    return "".join(out)


class _MathEnv(gym.Env[str, str]):
    """Shared one-step question-answering env over a list of :class:`MathProblem`."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    dataset = "math"

    def __init__(self, problems: Sequence[MathProblem], split: str, *, seed: int | None = None,
                 max_length: int | None = None, action_max_length: int = DEFAULT_ACTION_LENGTH,
                 render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'ansi'")
        if not problems:
            raise ValueError("no problems to serve")
        self.render_mode = render_mode
        self.split = split
        self._init_seed = seed
        limit = int(max_length) if max_length is not None else DEFAULT_OBSERVATION_LENGTH[self.dataset]
        if limit < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length!r}")
        if action_max_length < 1:
            raise ValueError(f"action_max_length must be >= 1, got {action_max_length!r}")
        texts = [normalize_text(p.question) for p in problems]
        too_long = sum(len(t) > limit for t in texts)
        if too_long:
            logger.warning("%d %s problems are longer than max_length=%d characters and are truncated; "
                           "pass a larger max_length to keep them whole", too_long, self.dataset, limit)
        self.problems: list[MathProblem] = list(problems)
        self._observations = [t[:limit] for t in texts]
        self.observation_space = spaces.Text(max_length=limit, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(max_length=int(action_max_length), min_length=0, charset=CHARSET)
        self._order: np.ndarray | None = None
        self._cursor = 0
        self._current: int | None = None
        self._done = True
        self._last_response = ""

    # -- helpers ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.problems)

    @property
    def primitives(self) -> PrimitiveSet:
        """The env's default primitive set, :func:`math_primitives`: what ``MetaRewardWrapper(env, expr)`` uses.

        g1 ``strict_match``, g2 ``boxed_format``, g3 ``explicit_steps``, g4 ``loose_match``. A new set on
        each access; for another one pass ``primitives=`` to the wrapper.
        """
        return math_primitives()

    @property
    def num_problems(self) -> int:
        """Number of problems in this split."""
        return len(self.problems)

    @property
    def current_problem(self) -> MathProblem | None:
        """The problem of the current episode (None before the first reset)."""
        return None if self._current is None else self.problems[self._current]

    def extract_answer(self, response: str) -> str | None:
        """Return the final answer extracted from ``response`` (None when there is none)."""
        raise NotImplementedError

    def is_correct(self, extracted: str | None, ground_truth: str) -> bool:
        """Return True when ``extracted`` matches ``ground_truth``."""
        raise NotImplementedError

    def _base_info(self, problem: MathProblem) -> dict[str, Any]:
        info: dict[str, Any] = {"problem_id": problem.problem_id, "task": self._observations[self._current or 0],
                                "split": self.split, "dataset": self.dataset}
        if self.dataset == "math":
            info["subject"] = problem.subject
            info["level"] = -1 if problem.level is None else int(problem.level)
        return info

    # -- gym API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode; returns ``(problem text, info)``.

        With ``seed`` the visiting order is reshuffled from it (same seed -> same problems). Without,
        the next problem of the current shuffled pass is served; a new pass reshuffles.
        ``options={"index": i}`` or ``{"problem_id": "..."}`` serves that problem instead.
        """
        if seed is None and self._order is None:
            seed = self._init_seed
        super().reset(seed=seed)
        if seed is not None or self._order is None:
            self._order = self.np_random.permutation(len(self.problems))
            self._cursor = 0
        options = options or {}
        if "index" in options:
            index = int(options["index"])
            if not 0 <= index < len(self.problems):
                raise ValueError(f"options['index']={index} out of range [0, {len(self.problems)})")
        elif "problem_id" in options:
            ids = [p.problem_id for p in self.problems]
            if options["problem_id"] not in ids:
                raise ValueError(f"unknown problem_id {options['problem_id']!r} in split {self.split!r}")
            index = ids.index(options["problem_id"])
        else:
            if self._cursor >= len(self._order):
                self._order = self.np_random.permutation(len(self.problems))
                self._cursor = 0
            index = int(self._order[self._cursor])
            self._cursor += 1
        self._current = index
        self._done = False
        self._last_response = ""
        problem = self.problems[index]
        info = self._base_info(problem)
        info.update({"won": False, "progress": 0.0, "valid_action": True, "state_changed": False})
        return self._observations[index], info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Answer the current problem; returns ``(problem text, reward, True, False, info)``.

        Any action is accepted: non-strings are converted (bytes decoded as UTF-8), text longer than
        ``action_space.max_length`` is cut to its start (``info["action_truncated"]``). Reward 1.0 when
        the extracted answer is correct, else 0.0.
        """
        if self._current is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode is over (one answer per problem); call reset() for the next problem")
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        elif action is None:
            action = ""
        elif not isinstance(action, str):
            action = str(action)
        truncated_action = len(action) > self.action_space.max_length
        response = action[: self.action_space.max_length]
        problem = self.problems[self._current]
        try:
            extracted = self.extract_answer(response)
            correct = self.is_correct(extracted, problem.ground_truth)
        except Exception as exc:  # noqa: BLE001  (a bad answer never crashes the env)
            logger.warning("answer checking failed on problem %s: %s", problem.problem_id, exc)
            extracted, correct = None, False
        self._done = True
        self._last_response = response
        info = self._base_info(problem)
        info.update({
            "ground_truth": problem.ground_truth,
            "extracted_answer": extracted,
            "correct": bool(correct),
            "response": response,
            "valid_action": extracted is not None,
            "won": bool(correct),
            "progress": float(bool(correct)),
            "state_changed": True,
            "action_truncated": truncated_action,
        })
        return self._observations[self._current], float(bool(correct)), True, False, info

    def render(self) -> str | None:
        """Return the current problem and the last response as text (``render_mode="ansi"``), else None."""
        if self.render_mode != "ansi" or self._current is None:
            return None
        text = f"[{self.problems[self._current].problem_id}] {self._observations[self._current]}"
        if self._last_response:
            text += f"\n--- response ---\n{self._last_response}"
        return text


class GSM8KEnv(_MathEnv):
    """GSM8K grade-school word problems, one step per problem (registered as ``derl_gym/GSM8K-v0``).

    The observation is the question; the action is the whole response. Reward 1.0 when the
    response's final number (last ``\\boxed{}``, else ``#### N``, else last number) equals the ``####``
    answer, else 0.0; the episode ends after that one step. ``info`` carries ``correct``,
    ``extracted_answer``, ``ground_truth`` and the primitive inputs (``won``, ``progress``,
    ``valid_action``).

    Args:
        split: ``"train"`` (80% of train.jsonl), ``"validation"`` (the other 20%) or ``"test"``.
        data_dir: a folder holding ``gsm8k/`` (else ``$DERL_GYM_DATA``; the hub when asked with
            ``source="hub"`` or when no local folder is given, see
            :func:`~derl_gym.envs.math.data.data_sources`).
        seed: seeds the order problems are served in (``reset(seed=...)`` reseeds it).
        max_length: observation length in characters (longer questions are truncated with a warning).
        action_max_length: responses are cut to this many characters (``info["action_truncated"]``).
        validation_fraction: the share of the train file held out as ``validation``.
        max_problems: keep only the first this many problems of the split.
        use_hub: the older switch for ``source="auto"``.
        render_mode: None or ``"ansi"``.
        source: ``"auto"``, ``"local"`` or ``"hub"`` (:func:`~derl_gym.envs.math.data.data_sources`).

    Raises:
        MathDataNotFoundError: no data file found (the message lists the paths tried).

    Example:
        >>> import json, pathlib, tempfile
        >>> import gymnasium as gym
        >>> import derl_gym  # registers derl_gym/GSM8K-v0
        >>> tmp = tempfile.TemporaryDirectory()
        >>> (pathlib.Path(tmp.name) / "gsm8k").mkdir()
        >>> rows = [{"question": "Tom has 3 apples and buys 4 more. How many now?", "answer": "3 + 4 = 7\\n#### 7"}]
        >>> _ = (pathlib.Path(tmp.name) / "gsm8k" / "test.jsonl").write_text("\\n".join(map(json.dumps, rows)))
        >>> env = gym.make("derl_gym/GSM8K-v0", split="test", data_dir=tmp.name)
        >>> question, info = env.reset(seed=0)
        >>> question
        'Tom has 3 apples and buys 4 more. How many now?'
        >>> _, reward, terminated, truncated, info = env.step("3 + 4 = 7, so \\\\boxed{7}")
        >>> reward, terminated, info["extracted_answer"], info["ground_truth"]
        (1.0, True, '7', '7')
        >>> env.close(); tmp.cleanup()
    """

    dataset = "gsm8k"

    def __init__(self, split: str = "train", data_dir: str | os.PathLike | None = None, seed: int | None = None,
                 max_length: int | None = None, action_max_length: int = DEFAULT_ACTION_LENGTH,
                 validation_fraction: float = 0.2, max_problems: int | None = None, use_hub: bool | None = None,
                 render_mode: str | None = None, source: str = "auto") -> None:
        problems = load_gsm8k(split, data_dir=data_dir, validation_fraction=validation_fraction, use_hub=use_hub,
                              source=source)
        if max_problems is not None:
            problems = problems[: int(max_problems)]
        super().__init__(problems, split, seed=seed, max_length=max_length,
                         action_max_length=action_max_length, render_mode=render_mode)

    def extract_answer(self, response: str) -> str | None:
        """Return the final answer text of ``response`` (:func:`extract_gsm8k_answer`), None when no number."""
        extracted = extract_gsm8k_answer(response)
        if extracted is None:
            return None
        if parse_number(extracted) is None and parse_number(extract_last_number(extracted)) is None:
            return None  # e.g. \boxed{x}: not a GSM8K answer
        return extracted

    def is_correct(self, extracted: str | None, ground_truth: str) -> bool:
        """Return True when the numbers are equal (:func:`gsm8k_equivalent`)."""
        return gsm8k_equivalent(extracted, ground_truth)


class MATHEnv(_MathEnv):
    """MATH competition problems, one step per problem (registered as ``derl_gym/MATH-v0``).

    Reward 1.0 when the response's final answer is equivalent to the ground truth (the env's
    :class:`~derl_gym.envs.math.grading.MathGrader`, math-verify in a child process; each check bounded
    by ``verify_timeout`` seconds, no signals, so any thread may step it). ``info`` is as for
    :class:`GSM8KEnv`, plus ``subject`` and ``level``. Call ``close()`` to end the grader's process.

    Args:
        split: ``"test"`` (``math/test.jsonl`` or ``math/math500_test.jsonl``), ``"train"``/``"validation"``
            (80/20 of ``math/train.jsonl``, or of the test file with ``holdout_from="test"``), or a path
            to any JSONL file.
        data_dir: a folder holding ``math/`` (else ``$DERL_GYM_DATA``, or the hub as for :class:`GSM8KEnv`).
        data_file: the source JSONL file, named directly.
        seed, max_length, action_max_length, validation_fraction, max_problems, use_hub, render_mode,
            source: as for :class:`GSM8KEnv`.
        holdout_from: ``"test"`` carves ``train``/``validation`` from the test file.
        levels: keep only these levels (1-5).
        subjects: keep only these subjects.
        verify_timeout: seconds per math-verify check; None checks in this process with no limit.

    Raises:
        MathDataNotFoundError: no data file found (the message lists the paths tried).

    Example:
        >>> import json, pathlib, tempfile
        >>> from derl_gym.envs.math import MATHEnv
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name, "tiny_math.jsonl")
        >>> row = {"problem": "Simplify $\\\\frac{2}{4}$.", "solution": "$\\\\frac{2}{4} = \\\\boxed{\\\\frac{1}{2}}$",
        ...        "subject": "Prealgebra", "level": "Level 1"}
        >>> _ = path.write_text(json.dumps(row) + "\\n")
        >>> env = MATHEnv(split=str(path), verify_timeout=None)  # None: math-verify in this process
        >>> problem, info = env.reset(seed=0)
        >>> problem, info["subject"], info["level"]
        ('Simplify $\\\\frac{2}{4}$.', 'Prealgebra', 1)
        >>> _, reward, terminated, _, info = env.step("Divide both by 2: \\\\boxed{0.5}")
        >>> reward, info["extracted_answer"]
        (1.0, '0.5')
        >>> env.close(); tmp.cleanup()
    """

    dataset = "math"

    def __init__(self, split: str = "test", data_dir: str | os.PathLike | None = None,
                 data_file: str | os.PathLike | None = None, seed: int | None = None,
                 max_length: int | None = None, action_max_length: int = DEFAULT_ACTION_LENGTH,
                 validation_fraction: float = 0.2, holdout_from: str | None = None,
                 levels: Sequence[int] | None = None, subjects: Sequence[str] | None = None,
                 max_problems: int | None = None, verify_timeout: float | None = 5.0,
                 use_hub: bool | None = None, render_mode: str | None = None, source: str = "auto") -> None:
        problems = load_math(split, data_dir=data_dir, data_file=data_file,
                             validation_fraction=validation_fraction, holdout_from=holdout_from,
                             levels=levels, subjects=subjects, use_hub=use_hub, source=source)
        if max_problems is not None:
            problems = problems[: int(max_problems)]
        self.verify_timeout = verify_timeout
        self._grader: MathGrader | None = None
        super().__init__(problems, split, seed=seed, max_length=max_length,
                         action_max_length=action_max_length, render_mode=render_mode)

    def extract_answer(self, response: str) -> str | None:
        """Return the final answer text of ``response`` (:func:`extract_math_answer`)."""
        return extract_math_answer(response)

    @property
    def grader(self) -> MathGrader:
        """The env's :class:`~derl_gym.envs.math.grading.MathGrader` (made on first use with ``verify_timeout``).

        Assign another one (``env.grader = shared``) to share a math-verify process between envs.
        """
        grader = self.__dict__.get("_grader")
        if grader is None:
            grader = self._grader = MathGrader(self.__dict__.get("verify_timeout", 5.0))
        return grader

    @grader.setter
    def grader(self, grader: MathGrader) -> None:
        if not isinstance(grader, MathGrader):
            raise TypeError(f"grader must be a MathGrader, got {type(grader).__name__}")
        self._grader = grader

    def is_correct(self, extracted: str | None, ground_truth: str) -> bool:
        """Return True when the answers are equivalent (``self.grader``, see :func:`~derl_gym.envs.math.grading.math_equivalent`)."""
        return self.grader.equivalent(extracted, ground_truth)

    def close(self) -> None:
        """End the grader's math-verify process, if one was started (a later step starts a new one)."""
        grader = self.__dict__.get("_grader")
        if grader is not None:
            grader.close()
        super().close()
