"""Helpers of the kill-and-resume tests: read a run's store while another process writes it, and kill -9
that process (its whole process group) once the store shows the wanted state."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest


def read_store(run_dir: Path, sql: str) -> tuple[list[tuple], int]:
    """Return the rows of ``sql`` on ``run_dir/store.sqlite`` and its number of checkpoints.

    ``([], 0)`` while the store or its tables do not exist yet (the run is starting).
    """
    path = run_dir / "store.sqlite"
    if not path.exists():
        return [], 0
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            rows = list(con.execute(sql))
            checkpoints = con.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        finally:
            con.close()
        return rows, checkpoints
    except sqlite3.OperationalError:  # tables not created yet
        return [], 0


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 120.0,
                 poll_s: float = 0.05) -> None:
    """Poll ``ready()`` until it is true, then SIGKILL ``proc``'s process group (as kill -9 of the whole job).

    Fails the test with ``proc``'s output when it exits first, and with ``what`` (what never happened)
    after ``timeout_s``; the group is killed and reaped either way.
    """
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode()
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {timeout_s:.0f} s")
            time.sleep(poll_s)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
