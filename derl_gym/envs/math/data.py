"""GSM8K and MATH data: JSONL files from a local folder, the Hugging Face hub only when asked, and splits.

Files are JSONL: GSM8K ``{"question", "answer"}``; MATH ``{"problem", "solution", "answer",
"subject", "level"}`` (``answer``, ``subject``, ``level`` optional). Where problems come from is
``source=`` (:func:`data_sources`):

- local files: the ``data_dir=`` argument, then the ``DERL_GYM_DATA`` environment variable, each either a
  folder holding ``gsm8k/`` and ``math/`` subfolders or the dataset folder itself. Expected file names:
  ``gsm8k/train.jsonl``, ``gsm8k/test.jsonl``; ``math/<split>.jsonl`` (the test split also accepts
  ``math/math500_test.jsonl``). A MATH split may also be any JSONL file: pass ``data_file=`` or
  ``split="/path/to/file.jsonl"``.
- the Hugging Face hub via ``datasets`` (``openai/gsm8k`` config ``main``; ``HuggingFaceH4/MATH-500``):
  with ``source="hub"``, or by default when no local folder is given at all. Only then is the hub
  probed (a TCP connection, a few seconds at most); ``DERL_GYM_OFFLINE=1`` skips it. With local data
  given, nothing here opens a socket.

Splits: ``train`` and ``validation`` are carved from the train file: validation is a deterministic
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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from derl_gym.envs.math.answers import extract_boxed, gsm8k_ground_truth

logger = logging.getLogger(__name__)

__all__ = [
    "MathProblem",
    "MathDataNotFoundError",
    "MathDataError",
    "SOURCES",
    "data_sources",
    "resolve_data_root",
    "load_jsonl",
    "split_train_validation",
    "load_gsm8k",
    "load_math",
]

@dataclass(frozen=True)
class MathProblem:
    """One problem: a stable id, the question text, the ground-truth answer and metadata.

    Example:
        >>> from derl_gym.envs.math import MathProblem
        >>> MathProblem("demo-1", "What is 2 + 2?", "4").ground_truth
        '4'
    """

    problem_id: str
    question: str
    ground_truth: str
    solution: str = ""
    subject: str = ""
    level: int | None = None


class MathDataNotFoundError(FileNotFoundError):
    """Raised when no data file is found; the message lists every path tried and the fixes.

    Example:
        >>> from derl_gym.envs.math import MathDataNotFoundError, load_gsm8k
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     try:
        ...         load_gsm8k("test", data_dir=empty)
        ...     except MathDataNotFoundError as error:
        ...         print("gsm8k/test.jsonl" in str(error))
        True
    """


class MathDataError(ValueError):
    """Raised for a malformed data file; the message names the file and line.

    Example:
        >>> import pathlib, tempfile
        >>> from derl_gym.envs.math import MathDataError, load_jsonl
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "bad.jsonl")
        ...     _ = path.write_text('{"question": "1 + 1?"}\\n')
        ...     try:
        ...         load_jsonl(path, required=("question", "answer"))
        ...     except MathDataError as error:
        ...         print("bad.jsonl:1" in str(error), "'answer'" in str(error))
        True True
    """


GSM8K_FILES = {"train": ("train.jsonl",), "test": ("test.jsonl",)}
MATH_FILES = {"train": ("train.jsonl",), "test": ("test.jsonl", "math500_test.jsonl")}
HUB_DATASETS = {"gsm8k": ("openai/gsm8k", "main"), "math": ("HuggingFaceH4/MATH-500", None)}
SPLITS = ("train", "validation", "test")
#: Values of ``source=``: where problems are read from (see :func:`data_sources`).
SOURCES = ("auto", "local", "hub")


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

    Example:
        >>> import pathlib, tempfile
        >>> from derl_gym.envs.math import resolve_data_root
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (pathlib.Path(tmp) / "gsm8k").mkdir()
        ...     _ = (pathlib.Path(tmp) / "gsm8k" / "test.jsonl").write_text("")
        ...     path, tried = resolve_data_root("gsm8k", "test", data_dir=tmp)
        ...     path.relative_to(tmp).as_posix(), path in tried
        ('gsm8k/test.jsonl', True)
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

    Example:
        >>> import pathlib, tempfile
        >>> from derl_gym.envs.math import load_jsonl
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "rows.jsonl")
        ...     _ = path.write_text('{"question": "1 + 1?", "answer": "#### 2"}\\n\\n{"question": "2 + 2?", "answer": "#### 4"}\\n')
        ...     [(line, row["question"]) for line, row in load_jsonl(path, required=("question", "answer"))]
        [(1, '1 + 1?'), (3, '2 + 2?')]
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
    """Return True when huggingface.co accepts a TCP connection within ``timeout`` seconds.

    Called only when the hub is asked for (``source="hub"``, or ``"auto"`` with no local data given).
    """
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


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() in ("1", "true", "True", "yes")


def _load_from_hub(dataset: str, split_file: str) -> list[dict[str, Any]] | None:
    """Return records from the Hugging Face hub, or None when unavailable (never raises, never hangs)."""
    if _flag("DERL_GYM_OFFLINE"):
        return None
    if dataset == "math" and split_file != "test":
        return None  # MATH-500 has only a test split
    try:
        import datasets  # noqa: F401
    except Exception:  # noqa: BLE001
        return None
    offline = _flag("HF_HUB_OFFLINE") or _flag("HF_DATASETS_OFFLINE")
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


def data_sources(source: str = "auto", data_dir: str | os.PathLike | None = None,
                 use_hub: bool | None = None) -> tuple[bool, bool]:
    """Return ``(read local files, ask the hub)`` for a ``source`` setting.

    ``"local"``: only ``data_dir`` / ``$DERL_GYM_DATA``; the network is never touched. ``"hub"``: only
    the Hugging Face hub. ``"auto"`` (default): local files when a local root is given (``data_dir`` or
    ``$DERL_GYM_DATA``; missing files are then an error and the hub is not probed), else the hub. The
    older ``use_hub`` flag still works with ``"auto"``: ``False`` = local only, ``True`` = local files,
    then the hub.

    Example:
        >>> from derl_gym.envs.math import data_sources
        >>> data_sources("local"), data_sources("hub"), data_sources("auto", data_dir="/data")
        ((True, False), (False, True), (True, False))
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if use_hub is not None and source != "auto":
        if source == "hub" and not use_hub:
            raise ValueError("source='hub' contradicts use_hub=False; pass only source=")
    elif use_hub is not None:
        return True, bool(use_hub)
    if source == "local":
        return True, False
    if source == "hub":
        return False, True
    local_given = data_dir is not None or bool(os.environ.get("DERL_GYM_DATA"))
    return True, not local_given


def _not_found(dataset: str, split: str, tried: Sequence[Path], hub_note: str) -> MathDataNotFoundError:
    expected = ("gsm8k/train.jsonl, gsm8k/test.jsonl" if dataset == "gsm8k"
                else "math/<split>.jsonl (math/test.jsonl or math/math500_test.jsonl for test), or data_file=")
    tried_text = "\n  ".join(str(p) for p in tried) or "(no local folder given: data_dir=None and DERL_GYM_DATA unset)"
    return MathDataNotFoundError(
        f"no {dataset} data for split {split!r}. Paths tried:\n  {tried_text}\n"
        f"Hugging Face hub: {hub_note}.\nExpected file names under a data root: {expected}. "
        f"Fix: pass data_dir=<folder holding {dataset}/>, or set DERL_GYM_DATA to it"
        + (", or data_file=<file.jsonl>" if dataset == "math" else "") + ".")


def _hub_note(asked: bool) -> str:
    if not asked:
        return ("not asked (local data was given: data_dir= or DERL_GYM_DATA); pass source='hub' to load "
                "from the Hugging Face hub")
    if _flag("DERL_GYM_OFFLINE"):
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

    Example:
        >>> from derl_gym.envs.math import MathProblem, split_train_validation
        >>> problems = [MathProblem(f"p{i}", f"What is {i} + 1?", str(i + 1)) for i in range(10)]
        >>> train = split_train_validation(problems, "train")
        >>> validation = split_train_validation(problems, "validation")
        >>> len(train), len(validation), set(train).isdisjoint(validation)
        (8, 2, True)
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
               validation_fraction: float = 0.2, use_hub: bool | None = None, source: str = "auto"
               ) -> list[MathProblem]:
    """Return the GSM8K problems of ``split`` (``train``, ``validation`` or ``test``).

    ``train``/``validation`` are the 80/20 partition of ``gsm8k/train.jsonl`` made by
    :func:`split_train_validation`; ``test`` is ``gsm8k/test.jsonl``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: a folder holding ``gsm8k/`` (or the ``gsm8k`` folder itself); else ``$DERL_GYM_DATA``.
        validation_fraction: the share of the train file held out as ``validation``.
        use_hub: the older switch for ``source="auto"`` (see :func:`data_sources`).
        source: where to look (:func:`data_sources`): by default local files when
            ``data_dir``/``$DERL_GYM_DATA`` is given, the hub only otherwise.

    Returns:
        The problems, in file order; ``problem_id`` is ``gsm8k-<file>-<line>``.

    Raises:
        MathDataNotFoundError: no file found; the message lists the paths tried.
        MathDataError: a malformed line (the message names file and line).
        ValueError: an unknown ``split``.

    Example:
        >>> import json, pathlib, tempfile
        >>> from derl_gym.envs.math import load_gsm8k
        >>> rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\\n#### {i + 1}"} for i in range(10)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (pathlib.Path(tmp) / "gsm8k").mkdir()
        ...     _ = (pathlib.Path(tmp) / "gsm8k" / "train.jsonl").write_text("\\n".join(map(json.dumps, rows)))
        ...     train = load_gsm8k("train", data_dir=tmp)
        ...     validation = load_gsm8k("validation", data_dir=tmp)
        >>> len(train), len(validation)
        (8, 2)
        >>> train[0].problem_id, train[0].ground_truth
        ('gsm8k-train-00001', '1')
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GSM8K split {split!r}; choose one of {SPLITS}")
    split_file = "test" if split == "test" else "train"
    local, hub = data_sources(source, data_dir, use_hub)
    path, tried = resolve_data_root("gsm8k", split_file, data_dir) if local else (None, [])
    if path is not None:
        problems = _gsm8k_records(load_jsonl(path, ("question", "answer")), f"gsm8k-{split_file}", str(path))
    else:
        records = _load_from_hub("gsm8k", split_file) if hub else None
        if records is None:
            raise _not_found("gsm8k", split, tried, _hub_note(hub))
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
              subjects: Sequence[str] | None = None, use_hub: bool | None = None, source: str = "auto"
              ) -> list[MathProblem]:
    """Return the MATH problems of ``split``, optionally filtered by ``levels`` and ``subjects``.

    Args:
        split: ``"train"``, ``"validation"``, ``"test"`` or a path to a ``.jsonl`` file (all of it).
        data_dir: a folder holding ``math/`` (or the ``math`` folder itself); else ``$DERL_GYM_DATA``.
        data_file: read this file as the source: all of it for ``test`` or a path split, the 80/20
            partition for ``train``/``validation``.
        validation_fraction: the share held out as ``validation``.
        holdout_from: ``"test"`` carves ``train``/``validation`` from the test file (for MATH-500,
            which has no train file).
        levels: keep only these difficulty levels (1-5).
        subjects: keep only these subjects (e.g. ``"Algebra"``).
        use_hub: the older switch for ``source="auto"`` (see :func:`data_sources`).
        source: as for :func:`load_gsm8k` (a ``data_file`` or path split is always local).

    Returns:
        The problems, in file order.

    Raises:
        MathDataNotFoundError: no file found; the message lists the paths tried.
        MathDataError: a malformed line (the message names file and line).
        ValueError: an unknown ``split``, or filters that leave nothing.

    Example:
        >>> import json, pathlib, tempfile
        >>> from derl_gym.envs.math import load_math
        >>> rows = [{"problem": f"Compute ${i}^2$.", "solution": f"${i}^2 = \\\\boxed{{{i * i}}}$", "level": f"Level {1 + i % 5}",
        ...          "subject": "Algebra"} for i in range(10)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "math_sample.jsonl")
        ...     _ = path.write_text("\\n".join(map(json.dumps, rows)))
        ...     everything = load_math(split=str(path))
        ...     easy = load_math(split=str(path), levels=[1])
        >>> len(everything), [problem.ground_truth for problem in easy]
        (10, ['0', '25'])
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
        local, hub = data_sources(source, data_dir, use_hub)
        path, tried = resolve_data_root("math", source_split, data_dir) if local else (None, [])
        if path is not None:
            problems = _math_records(load_jsonl(path, required), f"math-{path.stem}", str(path))
        else:
            records = _load_from_hub("math", source_split) if hub else None
            if records is None:
                err = _not_found("math", split, tried, _hub_note(hub))
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
