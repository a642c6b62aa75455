"""Answer grading for GSM8K and MATH: is an extracted answer equal to the reference?

- **GSM8K** (:func:`gsm8k_equivalent`): exact comparison of numbers as fractions (``1,234`` =
  ``1234.0``; ``0.5`` = ``\\frac{1}{2}``). Pure Python on bounded input: nothing to time out.
- **MATH** (:func:`math_equivalent`, :class:`MathGrader`): equal normalised strings
  (:func:`~derl_gym.envs.math.answers.normalize_math_answer`), else the maintained checker
  ``math-verify`` (``\\sqrt{4}`` = ``2``, ``1,-2`` = ``-2,1`` as sets ...).

math-verify can run for a very long time on hostile input (``9^{9^{9^9}}``), and its own time limits
are ``signal.alarm`` timers: they install a process-wide SIGALRM handler and refuse to run outside the
main thread. Here math-verify runs instead in a child process owned by a :class:`MathGrader`; a check
that overruns its ``timeout`` kills that process (a new one starts for the next check). No signal
handler is installed and no module flag of math-verify is changed, so grading works the same in the
main thread, in worker threads and in Ray actors. Each :class:`~derl_gym.envs.math.env.MATHEnv` owns
one grader (closed by ``env.close()``).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from derl_gym.envs.math.answers import extract_last_number, normalize_math_answer, parse_number

logger = logging.getLogger(__name__)

__all__ = ["MAX_VERIFY_CHARS", "MathGrader", "gsm8k_equivalent", "math_equivalent"]

#: Answers longer than this skip math-verify (string comparison only).
MAX_VERIFY_CHARS = 512
_WORKER_SCRIPT = Path(__file__).with_name("_verify_worker.py")
# Run the worker file without putting its folder (this package, which has modules named env, data ...)
# on sys.path, and without importing derl_gym: the child imports math_verify only.
_WORKER_BOOT = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"

_RISKY_RE = re.compile(
    r"\^\s*\{?\s*\(?\s*-?\d{4,}"          # huge integer exponents: 2^{12345}
    r"|\d{4,}\s*!"                        # factorials of big numbers: 10000!
    r"|[)}\]]\s*!"                        # factorials of groups: (10^{10})!
    r"|\^\s*\{[^{}]*\^"                   # power towers: 9^{9^{9}}
    r"|\^\s*\d\s*\^"                       # 9^9^9
)


def gsm8k_equivalent(predicted: str | None, ground_truth: str) -> bool:
    """Return True when ``predicted`` and ``ground_truth`` denote the same number (exact, as fractions).

    When ``predicted`` (e.g. a box with words) is not a plain number, its last number is used.

    Example:
        >>> from derl_gym.envs.math import gsm8k_equivalent
        >>> gsm8k_equivalent("$1,800.00", "1800"), gsm8k_equivalent("18 dollars", "18"), gsm8k_equivalent("17", "18")
        (True, True, False)
    """
    truth = parse_number(ground_truth)
    if predicted is None or truth is None:
        return False
    value = parse_number(predicted)
    if value is None:
        value = parse_number(extract_last_number(predicted))
    return value is not None and value == truth


def _risky_for_unbounded(answer: str) -> bool:
    """Return True when ``answer`` could make sympy run for a long time (screened when no time limit is set)."""
    return len(answer) > 256 or bool(_RISKY_RE.search(answer)) or answer.count("^") > 6 or answer.count("!") > 2


def _verify_in_process(gold: str, predicted: str) -> bool | None:
    """Return math-verify's verdict computed here with no time limit (None when unavailable or failing)."""
    try:
        from math_verify import parse, verify
    except Exception:  # noqa: BLE001
        return None
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
        pred_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return None
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception as exc:  # noqa: BLE001
        logger.debug("math-verify failed on %r vs %r: %s", gold[:80], predicted[:80], exc)
        return None


class MathGrader:
    """Decides MATH answer equivalence, with math-verify bounded by ``timeout`` seconds per check.

    ``timeout`` > 0: math-verify runs in a child process started on the first check that needs it
    (about a second, not counted against the limit); a check that overruns is abandoned (verdict:
    not equivalent), the child is killed and a new one serves the next check. ``timeout=None`` (or 0):
    math-verify runs in this process with no limit, and answers that could make sympy run for long
    (huge exponents or factorials, power towers) are not given to it. Thread-safe (checks are
    serialised per grader); uses no signals. Close it (``close()``, ``with MathGrader() as g``) to end
    the child; an unclosed child also ends when this process exits (its stdin closes).

    Args:
        timeout: seconds per math-verify check, or None for no limit (see above).
        startup_timeout: seconds to wait for the child to import math-verify.

    Example:
        >>> from derl_gym.envs.math import MathGrader
        >>> with MathGrader(timeout=None) as grader:  # in-process math-verify, no child process
        ...     grader.equivalent(r"2\\sqrt{2}", r"\\sqrt{8}"), grader.equivalent("3", "4"), grader.starts
        (True, False, 0)
    """

    def __init__(self, timeout: float | None = 5.0, startup_timeout: float = 120.0) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout!r}")
        self.timeout = float(timeout) if timeout else None
        self.startup_timeout = float(startup_timeout)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] | None = None
        self._unavailable: str | None = None  # why math-verify cannot be used (no retry)
        self.timeouts = 0  #: checks abandoned because they overran ``timeout``
        self.starts = 0  #: child processes started so far

    # -- public -------------------------------------------------------------------------------
    def equivalent(self, predicted: str | None, ground_truth: str) -> bool:
        """Return True when ``predicted`` is mathematically equivalent to ``ground_truth`` (see :func:`math_equivalent`)."""
        if predicted is None or not str(predicted).strip() or not ground_truth:
            return False
        predicted = str(predicted).strip()
        normalized = normalize_math_answer(predicted)
        if normalized and normalized == normalize_math_answer(ground_truth):
            return True
        if len(predicted) > MAX_VERIFY_CHARS or len(ground_truth) > MAX_VERIFY_CHARS:
            return False
        return bool(self.verify(ground_truth, predicted))

    def verify(self, gold: str, predicted: str) -> bool | None:
        """Return math-verify's verdict on ``predicted`` against ``gold``: True/False, or None when it
        gave none (unavailable, unparsable, failed or over the time limit)."""
        if self.timeout is None:
            if _risky_for_unbounded(gold) or _risky_for_unbounded(predicted):
                return None
            return _verify_in_process(gold, predicted)
        with self._lock:
            if self._unavailable is not None:
                return None
            if self._proc is None and not self._start():
                return None
            return self._ask(gold, predicted)

    def close(self) -> None:
        """End the child process, if any (a later check starts a new one)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only (a copied grader starts its own child)."""
        return {"timeout": self.timeout, "startup_timeout": self.startup_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["timeout"], state["startup_timeout"])

    # -- child process ------------------------------------------------------------------------
    def _start(self) -> bool:
        """Start the child and wait until it has imported math-verify; returns whether it is usable."""
        try:
            proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT, str(_WORKER_SCRIPT)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, encoding="utf-8", bufsize=1)
        except OSError as exc:
            self._unavailable = f"could not start the math-verify process: {exc}"
            logger.warning("%s; MATH answers are compared as strings only", self._unavailable)
            return False
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True,
                         name="math-verify-reader").start()
        self.starts += 1
        self._proc, self._lines = proc, lines
        reply = self._read(self.startup_timeout)
        if not reply or not reply.get("ready"):
            why = (reply or {}).get("error") or "no answer from the math-verify process"
            self._stop()
            self._unavailable = str(why)
            logger.warning("math-verify is unavailable (%s); MATH answers are compared as strings only", why)
            return False
        return True

    def _ask(self, gold: str, predicted: str) -> bool | None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"gold": gold, "predicted": predicted}) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            self._stop()
            return None
        reply = self._read(self.timeout)
        if reply is None:  # over the limit (or the child died): kill it, a new one serves the next check
            self.timeouts += 1
            logger.info("math-verify gave no verdict within %ss on %r vs %r; abandoned", self.timeout,
                        gold[:80], predicted[:80])
            self._stop()
            return None
        verdict = reply.get("verdict")
        return None if verdict is None else bool(verdict)

    def _read(self, seconds: float | None) -> dict[str, Any] | None:
        """Return the child's next JSON line within ``seconds`` (None on timeout, EOF or bad output)."""
        assert self._lines is not None
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            line = self._lines.get(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            return None
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            return None
        return reply if isinstance(reply, dict) else None

    def _stop(self) -> None:
        proc, self._proc, self._lines = self._proc, None, None
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            logger.debug("stopping the math-verify process failed", exc_info=True)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except Exception:  # noqa: BLE001
                pass


def _pump(stream: IO[str] | None, lines: "queue.Queue[str | None]") -> None:
    """Copy ``stream``'s lines into ``lines`` until EOF, then put None."""
    try:
        if stream is not None:
            for line in stream:
                lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def math_equivalent(predicted: str | None, ground_truth: str, timeout: float | None = 5.0,
                    grader: MathGrader | None = None) -> bool:
    """Return True when ``predicted`` is mathematically equivalent to ``ground_truth``.

    True when the normalised strings (:func:`~derl_gym.envs.math.answers.normalize_math_answer`) are
    equal, or when math-verify (``math_verify.parse`` + ``verify``) says so; math-verify is skipped for
    answers over :data:`MAX_VERIFY_CHARS` characters. With ``grader`` its settings apply (reuse one
    :class:`MathGrader` for many checks). Without, a check that needs math-verify uses a grader made
    for this call with ``timeout`` (starting its process costs about a second); ``timeout=None``
    checks in this process with no limit, screening out answers that could make sympy run long.
    Works in any thread; installs no signal handler.

    Example:
        >>> from derl_gym.envs.math import math_equivalent
        >>> math_equivalent(r"x = \\dfrac{1}{2}", r"\\frac{1}{2}")  # equal once normalised: math-verify not needed
        True
        >>> math_equivalent(r"\\frac{1}{2}", "0.5", timeout=None), math_equivalent("3", "4", timeout=None)
        (True, False)
    """
    if grader is not None:
        return grader.equivalent(predicted, ground_truth)
    with MathGrader(timeout) as once:  # its process starts only when math-verify is needed
        return once.equivalent(predicted, ground_truth)
