"""GSM8K and MATH as one-step Gymnasium envs, with data loading, answer checking and primitives.

One episode = one problem. :meth:`reset` picks a problem (seeded: a shuffled order that visits
every problem of the split once per pass), the observation is the problem text, the action is the
model's answer text, and :meth:`step` ends the episode with task reward 1.0 when the extracted final
answer is correct, else 0.0.

Answer checking
---------------
- **GSM8K**: the ground truth is the number after ``#### `` in the dataset's ``answer`` field (commas
  removed). The response's answer is its last ``\\boxed{...}``, else its last ``#### N``, else its
  last number; answers are compared numerically as exact fractions (``1,234`` = ``1234.0`` =
  ``$1234``; ``0.5`` = ``1/2`` = ``\\frac{1}{2}``).
- **MATH**: the ground truth is the record's ``answer`` field, or else the last ``\\boxed{...}`` of its
  ``solution`` (balanced braces). The response's answer is its last ``\\boxed{...}``, else an
  ``answer is X`` / ``answer: X`` phrase, else a ``#### X`` line, else its last number. Equivalence is
  decided by the maintained checker ``math-verify`` (``\\frac{1}{2}`` = ``0.5``, ``\\sqrt{4}`` = ``2``,
  ``1,-2`` = ``-2,1`` as sets ...), with a normalised string comparison as a fallback. math-verify can
  run for a long time on hostile input (``9^{9^{9^9}}``); see :func:`math_equivalent` for how calls
  are kept bounded in the main thread (a SIGALRM timer that preserves any outer timer, e.g.
  pytest-timeout's) and in other threads (input screening, since signals are unavailable there).

Data
----
Files are JSONL: GSM8K ``{"question", "answer"}``; MATH ``{"problem", "solution", "answer",
"subject", "level"}`` (``answer``, ``subject``, ``level`` optional). A data root is resolved in this
order: the ``data_dir=`` argument, then the ``DERL_GYM_DATA`` environment variable, then the Hugging
Face hub via ``datasets`` (``openai/gsm8k`` config ``main``; ``HuggingFaceH4/MATH-500``), tried last,
skipped when ``DERL_GYM_OFFLINE=1`` or when the hub does not answer within a few seconds. A data
root may be either a folder holding ``gsm8k/`` and ``math/`` subfolders or the dataset folder itself.
Expected file names: ``gsm8k/train.jsonl``, ``gsm8k/test.jsonl``; ``math/<split>.jsonl`` (the test
split also accepts ``math/math500_test.jsonl``). A MATH split may also be any JSONL file: pass
``data_file=`` or ``split="/path/to/file.jsonl"``.

Splits
------
``train`` and ``validation`` are carved from the train file: validation is a deterministic
``validation_fraction`` (20%) of it, chosen by ranking problems by the SHA-256 of their text (so the
choice does not depend on file order or on any RNG), and train is the rest. ``test`` is the test
file. MATH-500 ships only a test file: to train/validate on it pass ``holdout_from="test"``, which
carves ``train``/``validation`` from the test file (80/20, as above) -- those problems then overlap the
``test`` split, so report test scores only on problems you did not train on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import string
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from derl_gym.rewards.primitives import Primitive, PrimitiveSet, Step, Trajectory

logger = logging.getLogger(__name__)

__all__ = [
    "MathProblem",
    "MathDataNotFoundError",
    "MathDataError",
    "CHARSET",
    "normalize_text",
    "resolve_data_root",
    "load_gsm8k",
    "load_math",
    "load_jsonl",
    "split_train_validation",
    "extract_boxed",
    "extract_last_number",
    "parse_number",
    "gsm8k_ground_truth",
    "extract_gsm8k_answer",
    "gsm8k_equivalent",
    "math_ground_truth",
    "extract_math_answer",
    "normalize_math_answer",
    "math_equivalent",
    "count_step_markers",
    "step_structure_score",
    "loose_match",
    "math_primitives",
    "GSM8KEnv",
    "MATHEnv",
]

# ----------------------------------------------------------------------------- text spaces

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


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class MathProblem:
    """One problem: a stable id, the question text, the ground-truth answer and metadata."""

    problem_id: str
    question: str
    ground_truth: str
    solution: str = ""
    subject: str = ""
    level: int | None = None


class MathDataNotFoundError(FileNotFoundError):
    """Raised when no data file is found; the message lists every path tried and the fixes."""


class MathDataError(ValueError):
    """Raised for a malformed data file; the message names the file and line."""


GSM8K_FILES = {"train": ("train.jsonl",), "test": ("test.jsonl",)}
MATH_FILES = {"train": ("train.jsonl",), "test": ("test.jsonl", "math500_test.jsonl")}
HUB_DATASETS = {"gsm8k": ("openai/gsm8k", "main"), "math": ("HuggingFaceH4/MATH-500", None)}
SPLITS = ("train", "validation", "test")


def _candidate_dirs(dataset: str, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """Return (origin, folder) pairs to search, in resolution order."""
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("data_dir", Path(data_dir).expanduser()))
    env_value = os.environ.get("DERL_GYM_DATA")
    if env_value:
        roots.append(("DERL_GYM_DATA", Path(env_value).expanduser()))
    dirs: list[tuple[str, Path]] = []
    for origin, root in roots:
        dirs.append((origin, root / dataset))
        dirs.append((origin, root))
    return dirs


def resolve_data_root(dataset: str, split_file: str, data_dir: str | os.PathLike | None = None
                      ) -> tuple[Path | None, list[Path]]:
    """Find the local JSONL for ``dataset`` (``"gsm8k"``/``"math"``) and ``split_file`` (``"train"``/``"test"``).

    Returns ``(path or None, paths_tried)``. Looks in ``data_dir`` then ``$DERL_GYM_DATA``, each as a
    root holding ``<dataset>/`` or as the dataset folder itself.
    """
    names = (GSM8K_FILES if dataset == "gsm8k" else MATH_FILES)[split_file]
    tried: list[Path] = []
    for _origin, folder in _candidate_dirs(dataset, data_dir):
        for name in names:
            path = folder / name
            tried.append(path)
            if path.is_file():
                return path, tried
    return None, tried


def load_jsonl(path: str | os.PathLike, required: Sequence[str]) -> list[tuple[int, dict[str, Any]]]:
    """Read a JSONL file; returns ``[(line_number, record), ...]`` (blank lines skipped).

    Raises :class:`MathDataError` naming the file and line for invalid JSON, a non-object line or a
    missing/non-string required field.
    """
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MathDataError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno}); "
                                    f"each line must be one JSON object") from None
            _check_record(record, required, f"{path}:{lineno}")
            rows.append((lineno, record))
    if not rows:
        raise MathDataError(f"{path}: no records (the file is empty)")
    return rows


def _check_record(record: Any, required: Sequence[str], where: str) -> None:
    """Raise :class:`MathDataError` at ``where`` unless ``record`` is a dict with string ``required`` fields."""
    if not isinstance(record, dict):
        raise MathDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in required:
        if not isinstance(record.get(key), str):
            raise MathDataError(f"{where}: missing or non-string field {key!r}; "
                                f"required fields: {list(required)}, found: {sorted(record)}")


def _hub_rows(records: Sequence[dict[str, Any]], required: Sequence[str], source: str
              ) -> list[tuple[int, dict[str, Any]]]:
    rows = list(enumerate(records, start=1))
    for index, record in rows:
        _check_record(record, required, f"{source} row {index}")
    return rows


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Return True when huggingface.co accepts a TCP connection within ``timeout`` seconds."""
    import socket

    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result.append(True)
        except Exception:  # noqa: BLE001  (any failure means: not reachable)
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # getaddrinfo ignores socket timeouts; the join bounds it
    return bool(result and result[0])


def _load_from_hub(dataset: str, split_file: str) -> list[dict[str, Any]] | None:
    """Return records from the Hugging Face hub, or None when unavailable (never raises, never hangs)."""
    if os.environ.get("DERL_GYM_OFFLINE", "").strip() in ("1", "true", "True", "yes"):
        return None
    if dataset == "math" and split_file != "test":
        return None  # MATH-500 has only a test split
    try:
        import datasets  # noqa: F401
    except Exception:  # noqa: BLE001
        return None
    offline = any(os.environ.get(v, "").strip() in ("1", "true", "True", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline and not _hub_reachable():
        return None
    name, config = HUB_DATASETS[dataset]
    try:
        from datasets import load_dataset

        ds = load_dataset(name, config, split=split_file) if config else load_dataset(name, split=split_file)
        return [dict(row) for row in ds]
    except Exception as exc:  # noqa: BLE001
        logger.info("could not load %s/%s from the hub: %s", name, split_file, exc)
        return None


def _not_found(dataset: str, split: str, tried: Sequence[Path], hub_note: str) -> MathDataNotFoundError:
    expected = ("gsm8k/train.jsonl, gsm8k/test.jsonl" if dataset == "gsm8k"
                else "math/<split>.jsonl (math/test.jsonl or math/math500_test.jsonl for test), or data_file=")
    tried_text = "\n  ".join(str(p) for p in tried) or "(no local folder given: data_dir=None and DERL_GYM_DATA unset)"
    return MathDataNotFoundError(
        f"no {dataset} data for split {split!r}. Paths tried:\n  {tried_text}\n"
        f"Hugging Face hub: {hub_note}.\nExpected file names under a data root: {expected}. "
        f"Fix: pass data_dir=<folder holding {dataset}/>, or set DERL_GYM_DATA to it"
        + (", or data_file=<file.jsonl>" if dataset == "math" else "") + ".")


def _hub_note() -> str:
    if os.environ.get("DERL_GYM_OFFLINE", "").strip() in ("1", "true", "True", "yes"):
        return "skipped (DERL_GYM_OFFLINE=1)"
    return "not available (no `datasets`, offline, or unreachable)"


def _stable_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_train_validation(problems: Sequence[MathProblem], split: str,
                           validation_fraction: float = 0.2) -> list[MathProblem]:
    """Return the ``train`` or ``validation`` part of ``problems``.

    Validation = the ``round(validation_fraction * n)`` problems with the smallest SHA-256 of their
    question text (ties broken by id): deterministic and independent of file order. Train = the rest,
    in original order. ``validation_fraction=0`` gives train = everything.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation' here, got {split!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    n_val = int(round(validation_fraction * len(problems)))
    ranked = sorted(range(len(problems)), key=lambda i: (_stable_key(problems[i].question), problems[i].problem_id))
    val_idx = set(ranked[:n_val])
    chosen = [p for i, p in enumerate(problems) if (i in val_idx) == (split == "validation")]
    if not chosen:
        raise ValueError(f"split {split!r} is empty ({len(problems)} problems, validation_fraction="
                         f"{validation_fraction}); use more data or another validation_fraction")
    return chosen


def _gsm8k_records(rows: Sequence[tuple[int, dict[str, Any]]], prefix: str, source: str) -> list[MathProblem]:
    problems = []
    for lineno, rec in rows:
        truth = gsm8k_ground_truth(rec["answer"])
        if truth is None:
            raise MathDataError(f"{source}:{lineno}: GSM8K answer has no '#### N' final answer: "
                                f"{rec['answer'][-80:]!r}")
        problems.append(MathProblem(problem_id=f"{prefix}-{lineno:05d}", question=rec["question"],
                                    ground_truth=truth, solution=rec["answer"]))
    return problems


def load_gsm8k(split: str = "train", data_dir: str | os.PathLike | None = None,
               validation_fraction: float = 0.2, use_hub: bool = True) -> list[MathProblem]:
    """Return the GSM8K problems of ``split`` (``train``, ``validation`` or ``test``).

    ``train``/``validation`` are the 80/20 partition of ``gsm8k/train.jsonl`` made by
    :func:`split_train_validation`. Raises :class:`MathDataNotFoundError` listing the paths tried.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GSM8K split {split!r}; choose one of {SPLITS}")
    split_file = "test" if split == "test" else "train"
    path, tried = resolve_data_root("gsm8k", split_file, data_dir)
    if path is not None:
        problems = _gsm8k_records(load_jsonl(path, ("question", "answer")), f"gsm8k-{split_file}", str(path))
    else:
        records = _load_from_hub("gsm8k", split_file) if use_hub else None
        if records is None:
            raise _not_found("gsm8k", split, tried, _hub_note() if use_hub else "skipped (use_hub=False)")
        problems = _gsm8k_records(_hub_rows(records, ("question", "answer"), "hub:openai/gsm8k"),
                                  f"gsm8k-{split_file}", "hub:openai/gsm8k")
    if split == "test":
        return problems
    return split_train_validation(problems, split, validation_fraction)


def _math_records(rows: Sequence[tuple[int, dict[str, Any]]], prefix: str, source: str) -> list[MathProblem]:
    problems = []
    for lineno, rec in rows:
        answer = rec.get("answer")
        truth = answer.strip() if isinstance(answer, str) and answer.strip() else extract_boxed(rec["solution"])
        if not truth:
            raise MathDataError(f"{source}:{lineno}: no 'answer' field and no \\boxed{{...}} in the solution")
        level = rec.get("level")
        if isinstance(level, str):
            digits = re.findall(r"\d+", level)
            level = int(digits[0]) if digits else None
        uid = rec.get("unique_id")
        problem_id = f"{prefix}:{uid}" if isinstance(uid, str) and uid else f"{prefix}-{lineno:05d}"
        problems.append(MathProblem(problem_id=problem_id, question=rec["problem"], ground_truth=truth,
                                    solution=rec["solution"], subject=str(rec.get("subject") or ""),
                                    level=level if isinstance(level, int) else None))
    return problems


def load_math(split: str = "test", data_dir: str | os.PathLike | None = None,
              data_file: str | os.PathLike | None = None, validation_fraction: float = 0.2,
              holdout_from: str | None = None, levels: Sequence[int] | None = None,
              subjects: Sequence[str] | None = None, use_hub: bool = True) -> list[MathProblem]:
    """Return the MATH problems of ``split``, optionally filtered by ``levels`` and ``subjects``.

    ``split`` is ``train``, ``validation``, ``test`` or a path to a ``.jsonl`` file (all of it).
    ``data_file=`` reads that file as the source: all of it for ``test`` or a path split, the 80/20
    partition for ``train``/``validation``. ``holdout_from="test"`` carves ``train``/``validation``
    from the test file (for MATH-500, which has no train file). Raises :class:`MathDataNotFoundError`
    listing the paths tried, or ``ValueError`` when filters leave nothing.
    """
    if holdout_from not in (None, "test"):
        raise ValueError(f"holdout_from must be None or 'test', got {holdout_from!r}")
    is_path = split not in SPLITS
    if is_path and not str(split).endswith(".jsonl"):
        raise ValueError(f"unknown MATH split {split!r}; choose one of {SPLITS} or give a path to a .jsonl file")
    source_split = "test" if (split == "test" or holdout_from == "test") else "train"
    required = ("problem", "solution")
    if is_path or data_file is not None:
        path = Path(split if is_path else data_file).expanduser()  # type: ignore[arg-type]
        if not path.is_file():
            raise MathDataNotFoundError(f"MATH data file {str(path)!r} does not exist; pass an existing "
                                        f"JSONL file with fields problem, solution[, answer, subject, level]")
        problems = _math_records(load_jsonl(path, required), f"math-{path.stem}", str(path))
    else:
        path, tried = resolve_data_root("math", source_split, data_dir)
        if path is not None:
            problems = _math_records(load_jsonl(path, required), f"math-{path.stem}", str(path))
        else:
            records = _load_from_hub("math", source_split) if use_hub else None
            if records is None:
                err = _not_found("math", split, tried, _hub_note() if use_hub else "skipped (use_hub=False)")
                if source_split == "train":
                    err = MathDataNotFoundError(
                        f"{err}\nMATH-500 ships only a test file: supply a MATH train JSONL "
                        f"(math/train.jsonl or data_file=), or pass holdout_from='test' to carve "
                        f"train/validation (80/20) from the test file.")
                raise err
            problems = _math_records(_hub_rows(records, required, "hub:MATH-500"), "math-hub-test", "hub:MATH-500")
    if levels is not None:
        wanted_levels = {int(lv) for lv in levels}
        problems = [p for p in problems if p.level in wanted_levels]
    if subjects is not None:
        wanted = {s.strip().lower() for s in subjects}
        problems = [p for p in problems if p.subject.strip().lower() in wanted]
    if not problems:
        raise ValueError(f"no MATH problems left after filtering levels={levels!r}, subjects={subjects!r}")
    if split in ("train", "validation"):
        return split_train_validation(problems, split, validation_fraction)
    return problems


# ----------------------------------------------------------------------------- answer extraction

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER_RE = re.compile(r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
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
    """
    if not isinstance(text, str) or "\\" not in text:
        return None
    last = None
    for content in _boxed_spans(text):
        last = content
    return last.strip() if last is not None else None


def extract_last_number(text: str) -> str | None:
    """Return the last number in ``text`` as written (``1,234``, ``-3.5``, ``$12``, ``1/2``), or None."""
    if not isinstance(text, str):
        return None
    last = None
    for match in _NUMBER_RE.finditer(text):
        last = match.group(0)
    return last.strip() if last is not None else None


def parse_number(text: str | None) -> Fraction | None:
    """Return ``text`` as an exact :class:`~fractions.Fraction`, or None when it is not one number.

    Accepts commas, ``$``, ``%``, surrounding ``$...$``, LaTeX ``\\$``/``\\%``/``\\!``, ``\\text{...}``
    units after the number, trailing ``.``/``.0``, ``a/b`` and ``\\frac{a}{b}`` (``\\dfrac``).
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
    """Return the final answer after ``#### `` in a GSM8K ``answer`` field, commas removed (None if absent)."""
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
    """
    if not isinstance(response, str) or not response:
        return None
    boxed = extract_boxed(response)
    if boxed:
        return boxed
    hashes = re.findall(r"####\s*([^\n]*)", response)
    for candidate in reversed(hashes):
        number = extract_last_number(candidate)
        if number is not None:
            return number
    return extract_last_number(response)


def gsm8k_equivalent(predicted: str | None, ground_truth: str) -> bool:
    """Return True when ``predicted`` and ``ground_truth`` denote the same number (exact, as fractions).

    When ``predicted`` (e.g. a box with words) is not a plain number, its last number is used.
    """
    truth = parse_number(ground_truth)
    if predicted is None or truth is None:
        return False
    value = parse_number(predicted)
    if value is None:
        value = parse_number(extract_last_number(predicted))
    return value is not None and value == truth


def math_ground_truth(record: dict[str, Any]) -> str | None:
    """Return a MATH record's ground truth: its ``answer`` field, else the last ``\\boxed{}`` of ``solution``."""
    answer = record.get("answer")
    if isinstance(answer, str) and answer.strip():
        return answer.strip()
    return extract_boxed(str(record.get("solution", "")))


_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.I)


def extract_math_answer(response: str) -> str | None:
    """Return the model's final answer: last ``\\boxed{}``, else ``answer is X``, else ``#### X``, else the last number.

    ``answer is X`` takes the rest of that line up to a sentence end, with ``$`` delimiters removed.
    Returns None when nothing is found.
    """
    if not isinstance(response, str) or not response:
        return None
    boxed = extract_boxed(response)
    if boxed:
        return boxed
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


class _VerifyTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so math-verify's ``except Exception`` cannot swallow it."""


def _can_use_alarm() -> bool:
    """Return True when a SIGALRM timer can bound a call here: POSIX, main thread, Python-level handler."""
    return (hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) is not None)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Limit the body to ``seconds`` with SIGALRM (main thread only), preserving any outer ITIMER_REAL timer."""
    if not seconds or seconds <= 0 or not _can_use_alarm():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _VerifyTimeout()

    old_handler = signal.signal(signal.SIGALRM, handler)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    if 0 < old_delay < seconds:  # an outer timer (e.g. pytest-timeout) is due first: honour it
        signal.setitimer(signal.ITIMER_REAL, old_delay)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = max(old_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


#: Answers longer than this skip math-verify (string comparison only).
MAX_VERIFY_CHARS = 512
_RISKY_RE = re.compile(
    r"\^\s*\{?\s*\(?\s*-?\d{4,}"          # huge integer exponents: 2^{12345}
    r"|\d{4,}\s*!"                        # factorials of big numbers: 10000!
    r"|[)}\]]\s*!"                        # factorials of groups: (10^{10})!
    r"|\^\s*\{[^{}]*\^"                   # power towers: 9^{9^{9}}
    r"|\^\s*\d\s*\^"                       # 9^9^9
)


def _risky_for_unbounded(answer: str) -> bool:
    """Return True when ``answer`` could make sympy run for a long time (used when no timer can be set)."""
    return len(answer) > 256 or bool(_RISKY_RE.search(answer)) or answer.count("^") > 6 or answer.count("!") > 2


def _math_verify(gold: str, predicted: str, timeout: float | None) -> bool | None:
    """Return math-verify's verdict, or None when it is unavailable, errors, times out or was skipped."""
    bounded = bool(timeout and timeout > 0 and _can_use_alarm())
    if not bounded and (_risky_for_unbounded(gold) or _risky_for_unbounded(predicted)):
        return None
    try:
        import math_verify.grader
        import math_verify.parser
        from math_verify import parse, verify
    except Exception:  # noqa: BLE001
        return None
    # We bound the calls ourselves (see _time_limit / _risky_for_unbounded), so math-verify's
    # one-time "timeout is disabled" warning would be misleading; mark it as already shown.
    for module in (math_verify.parser, math_verify.grader):
        if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
            module.TIMEOUT_WARNING_SHOWN = True
    try:
        with _time_limit(timeout if bounded else None):
            gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
            pred_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=None)
            if not gold_parsed or not pred_parsed:
                return None
            return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except _VerifyTimeout:
        logger.info("math-verify timed out after %ss on %r vs %r", timeout, gold[:80], predicted[:80])
        return None
    except Exception as exc:  # noqa: BLE001
        logger.debug("math-verify failed on %r vs %r: %s", gold[:80], predicted[:80], exc)
        return None


def math_equivalent(predicted: str | None, ground_truth: str, timeout: float | None = 5.0) -> bool:
    """Return True when ``predicted`` is mathematically equivalent to ``ground_truth``.

    True when the normalised strings (:func:`normalize_math_answer`) are equal, or when math-verify
    (``math_verify.parse`` + ``verify``) says so. math-verify is skipped for answers over
    :data:`MAX_VERIFY_CHARS`. In the main thread each check is bounded by ``timeout`` seconds via
    SIGALRM (an outer ITIMER_REAL timer is preserved); in other threads, on platforms without
    ``setitimer``, or with ``timeout=None``, signals cannot be used, so answers that could make sympy run long (huge exponents or
    factorials, power towers) are not given to math-verify and only the string comparison applies.
    """
    if predicted is None or not str(predicted).strip() or not ground_truth:
        return False
    predicted = str(predicted).strip()
    normalized = normalize_math_answer(predicted)
    if normalized and normalized == normalize_math_answer(ground_truth):
        return True
    if len(predicted) > MAX_VERIFY_CHARS or len(ground_truth) > MAX_VERIFY_CHARS:
        return False
    return bool(_math_verify(ground_truth, predicted, timeout))


# ----------------------------------------------------------------------------- primitives

_STEP_MARKER_RE = re.compile(
    r"^(?:step\s*\d+\b|\d{1,2}\s*[.):](?!\d)|(?:first|firstly|second|secondly|third|thirdly|next|then|finally)\b)",
    re.I)


def count_step_markers(text: str) -> int:
    """Return how many lines of ``text`` start with an explicit step marker.

    A line (after leading whitespace and markdown ``#``, ``*``, ``-``, ``>`` decorations) is a step
    marker when it starts, case-insensitively, with ``Step <n>``, a list number ``<n>.``/``<n>)``/``<n>:``
    (n < 100, not a decimal like ``3.5``), or one of the sequence words First(ly), Second(ly),
    Third(ly), Next, Then, Finally.
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
    match when any number in the response equals it (``1,234`` matches ``1234``). Other answers
    match when the normalised ground truth is a substring of the normalised response.
    """
    if not isinstance(response, str) or not response or not ground_truth:
        return False
    truth_value = parse_number(ground_truth) if numeric is not False else None
    if truth_value is not None:
        for match in _NUMBER_RE.finditer(response):
            if parse_number(match.group(0)) == truth_value:
                return True
        if numeric:
            return False
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
    """
    return PrimitiveSet([
        Primitive("strict_match", "1 if the extracted final answer equals the ground truth (the task reward)", _strict),
        Primitive("boxed_format", "1 if the response contains a non-empty \\boxed{...}", _boxed),
        Primitive("explicit_steps", "1 if >= 2 lines start with step markers (Step n, n., First/Next/Then/Finally), "
                  "0.5 if >= 2 reasoning lines precede the answer line, else 0", _steps),
        Primitive("loose_match", "1 if the ground truth appears anywhere in the response", _loose),
    ], name="math")


# ----------------------------------------------------------------------------- envs

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

    ``split``: ``train`` (80% of train.jsonl), ``validation`` (the other 20%) or ``test``. Data comes
    from ``data_dir``, ``$DERL_GYM_DATA`` or the hub (see the module docstring). Reward 1.0 when the
    response's final number (last ``\\boxed{}``, else ``#### N``, else last number) equals the ``####``
    answer.
    """

    dataset = "gsm8k"

    def __init__(self, split: str = "train", data_dir: str | os.PathLike | None = None, seed: int | None = None,
                 max_length: int | None = None, action_max_length: int = DEFAULT_ACTION_LENGTH,
                 validation_fraction: float = 0.2, max_problems: int | None = None, use_hub: bool = True,
                 render_mode: str | None = None) -> None:
        problems = load_gsm8k(split, data_dir=data_dir, validation_fraction=validation_fraction, use_hub=use_hub)
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

    ``split``: ``test`` (``math/test.jsonl`` or ``math/math500_test.jsonl``), ``train``/``validation``
    (80/20 of ``math/train.jsonl``, or of the test file with ``holdout_from="test"``), or a path to any
    JSONL file. ``data_file=`` names the source file directly. ``levels``/``subjects`` filter problems.
    Reward 1.0 when the response's final answer is equivalent to the ground truth
    (:func:`math_equivalent`, math-verify; each check bounded by ``verify_timeout`` seconds).
    """

    dataset = "math"

    def __init__(self, split: str = "test", data_dir: str | os.PathLike | None = None,
                 data_file: str | os.PathLike | None = None, seed: int | None = None,
                 max_length: int | None = None, action_max_length: int = DEFAULT_ACTION_LENGTH,
                 validation_fraction: float = 0.2, holdout_from: str | None = None,
                 levels: Sequence[int] | None = None, subjects: Sequence[str] | None = None,
                 max_problems: int | None = None, verify_timeout: float | None = 5.0, use_hub: bool = True,
                 render_mode: str | None = None) -> None:
        problems = load_math(split, data_dir=data_dir, data_file=data_file,
                             validation_fraction=validation_fraction, holdout_from=holdout_from,
                             levels=levels, subjects=subjects, use_hub=use_hub)
        if max_problems is not None:
            problems = problems[: int(max_problems)]
        self.verify_timeout = verify_timeout
        super().__init__(problems, split, seed=seed, max_length=max_length,
                         action_max_length=action_max_length, render_mode=render_mode)

    def extract_answer(self, response: str) -> str | None:
        """Return the final answer text of ``response`` (:func:`extract_math_answer`)."""
        return extract_math_answer(response)

    def is_correct(self, extracted: str | None, ground_truth: str) -> bool:
        """Return True when the answers are equivalent (:func:`math_equivalent`)."""
        return math_equivalent(extracted, ground_truth, timeout=self.verify_timeout)

