"""The meta layer's runtime: inner-loop specs, runners, the SQLite store, the evaluator, the evolve
loop and reports.

Light names (specs and results) are imported eagerly; everything else is imported on first access,
so ``import derl_gym.runtime`` stays cheap (no torch, matplotlib or ray)::

    from derl_gym.runtime import ProcessRunner, ResultStore, Evaluator, run_evolution
"""

from __future__ import annotations

import importlib
from typing import Any

from derl_gym.runtime.spec import (STATUS_FAILED, STATUS_OK, STATUS_TIMEOUT, AgentSpec, EnvSpec, InnerLoopSpec,
                                   InnerResult, PrimitiveSpec)

_LAZY = {
    "ProcessRunner": "derl_gym.runtime.runners",
    "RayRunner": "derl_gym.runtime.runners",
    "InlineRunner": "derl_gym.runtime.runners",
    "make_runner": "derl_gym.runtime.runners",
    "ResultStore": "derl_gym.runtime.store",
    "Evaluator": "derl_gym.runtime.evaluator",
    "run_evolution": "derl_gym.runtime.evolve",
    "final_test": "derl_gym.runtime.evolve",
    "compare": "derl_gym.runtime.evolve",
    "EvolutionResult": "derl_gym.runtime.evolve",
    "IterationRecord": "derl_gym.runtime.evolve",
    "FinalTest": "derl_gym.runtime.evolve",
    "CompareResult": "derl_gym.runtime.evolve",
    "write_report": "derl_gym.runtime.report",
    "classify_formula": "derl_gym.runtime.report",
    "run_inner": "derl_gym.runtime.inner",
    "get_preset": "derl_gym.runtime.presets",
    "describe_presets": "derl_gym.runtime.presets",
    "standin_inner": "derl_gym.runtime.standin",
    "standin_spec": "derl_gym.runtime.standin",
}

__all__ = ["AgentSpec", "EnvSpec", "InnerLoopSpec", "InnerResult", "PrimitiveSpec", "STATUS_OK", "STATUS_FAILED",
           "STATUS_TIMEOUT", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import the lazily exported names on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'derl_gym.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
