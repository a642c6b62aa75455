"""Fixtures shared by the runtime tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def log(tmp_path, monkeypatch):
    """Return the path where :func:`derl_gym.runtime.standin.standin_inner` logs every execution
    (``DERL_GYM_STANDIN_LOG``), so a test can count inner trainings across processes."""
    path = tmp_path / "executions.log"
    monkeypatch.setenv("DERL_GYM_STANDIN_LOG", str(path))
    return path
