"""Command-line pieces shared by the benchmark scripts that train inner runs from a preset (or the stand-in)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence


def int_list(text: str | None) -> list[int]:
    """Return the integers of a comma-separated list (``"0,1, 2,"`` -> ``[0, 1, 2]``; ``None`` -> ``[]``)."""
    return [int(s) for s in (text or "").split(",") if s.strip()]


def add_run_flags(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """Add ``--reuse-across-versions`` and ``--quick`` (stand-in inner loop; ``quick_help`` says what it runs)."""
    parser.add_argument("--reuse-across-versions", action="store_true",
                        help="reuse stored runs of the same spec trained under other derl-gym source / library versions")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` (``sys.argv[1:]`` when None, read before imports that may touch it), set logging to
    WARNING; returns ``(args, argv as a list)`` (the list for the command line the results record)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args, argv


def inner_loop(quick: bool, preset: str, total_timesteps: int | None = None, eval_episodes: int | None = None,
               validation: str | None = None) -> tuple[Any, Callable[..., Any]]:
    """Return ``(spec, job_fn)``: the stand-in spec and job with ``quick``, else ``preset`` (its
    ``total_timesteps`` overridden when given; its selection split ``validation`` when given, see
    :func:`~derl_gym.runtime.presets.with_validation`) and :func:`~derl_gym.runtime.inner.run_inner`;
    ``eval_episodes`` overrides the spec's either way. The spec is not prepared."""
    if quick:
        from derl_gym.runtime.standin import standin_inner, standin_spec

        spec, job_fn = standin_spec(), standin_inner
    else:
        from derl_gym.runtime.inner import run_inner
        from derl_gym.runtime.presets import get_preset, with_validation

        overrides = {} if total_timesteps is None else {"total_timesteps": total_timesteps}
        spec, job_fn = get_preset(preset, **overrides), run_inner
        if validation is not None:
            spec = with_validation(spec, validation)
    if eval_episodes is not None:
        spec = spec.replace(eval_episodes=eval_episodes)
    return spec, job_fn


def preset_with_n_envs(preset: str, n_envs: int | None, **overrides: Any):
    """Return ``get_preset(preset, **overrides)`` with ``n_envs`` envs per worker and ``n_steps`` rescaled so
    that each PPO update still sees the preset's ``n_steps x n_envs`` steps (``n_envs`` None: the preset's)."""
    from derl_gym.runtime.presets import get_preset

    spec = get_preset(preset, **overrides)
    if n_envs and n_envs != spec.agent.n_envs:
        algo = dict(spec.agent.algo_kwargs)
        algo["n_steps"] = max(1, int(algo.get("n_steps", 128)) * spec.agent.n_envs // n_envs)
        spec = get_preset(preset, **overrides, n_envs=n_envs, algo_kwargs=algo)
    return spec
