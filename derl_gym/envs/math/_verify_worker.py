"""math-verify in a child process: the worker that :class:`derl_gym.envs.math.grading.MathGrader` starts.

Run as a script (``python _verify_worker.py``), never imported by the parent. It imports only
``math_verify`` (not derl_gym), answers ``{"ready": true}`` once imported (or ``{"ready": false,
"error": ...}`` when math-verify is missing), then reads one JSON request per line
(``{"gold": str, "predicted": str}``) and writes one JSON answer per line (``{"verdict": true | false |
null}``; null when a side does not parse or math-verify fails). math-verify's own signal-based
timeouts are off (``parsing_timeout=None``, ``timeout_seconds=None``): the parent bounds each request by
killing this process, so no signal handler is needed anywhere.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> int:
    """Serve requests from stdin until it closes; returns the exit status (0)."""
    logging.disable(logging.WARNING)  # math-verify's "timeout is disabled" notice: the parent enforces it
    out = sys.stdout
    try:
        from math_verify import parse, verify
    except Exception as exc:  # noqa: BLE001
        out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 0
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        verdict = None
        try:
            request = json.loads(line)
            gold = parse("\\boxed{" + str(request["gold"]) + "}", parsing_timeout=None)
            predicted = parse("\\boxed{" + str(request["predicted"]) + "}", parsing_timeout=None)
            if gold and predicted:
                verdict = bool(verify(gold, predicted, timeout_seconds=None))
        except Exception:  # noqa: BLE001  (any failure is "no verdict")
            verdict = None
        out.write(json.dumps({"verdict": verdict}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
