"""Shared pytest fixtures (kept minimal and generic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Return the shared data folder (``$DERL_GYM_DATA``, else ``<repo>/../shared/data``); skip if absent."""
    env_value = os.environ.get("DERL_GYM_DATA")
    path = Path(env_value).expanduser() if env_value else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (set DERL_GYM_DATA)")
    return path


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread, restoring the previous count afterwards.

    The models trained in tests are tiny: on a shared 2-core machine extra threads only fight over
    the CPU (10-20x slower). ``run_inner`` itself also pins one thread, and this restores it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
