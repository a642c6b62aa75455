"""The ``derl-gym`` command line.

Commands::

    derl-gym list                                  envs, presets, primitives
    derl-gym evolve --preset alfworld-tiny --method derl --run-dir runs/demo
    derl-gym compare --preset alfworld-tiny --methods derl,random,outcome,avg --budget 8 --seeds 0,1
    derl-gym report runs/demo                      markdown + PNG plots
    derl-gym export runs/demo --out reward.json    the best formula + primitives + scores as JSON
    derl-gym play derl_gym/GSM8K-v0                play a text env in the terminal
    derl-gym tiny-model DIR --layers 2 --hidden 64 a random-weight Qwen2 LM + tokenizer, offline

``evolve`` and ``compare`` are resumable: run the same command on the same ``--run-dir`` again after
an interruption (even ``kill -9``) and finished inner trainings are not redone; after an upgrade of
derl-gym or of a training library they print which versions changed and retrain (the cache key
includes the versions) unless ``--reuse-across-versions`` is given. ``--standin`` swaps
the inner loop for a millisecond stand-in (:mod:`derl_gym.runtime.standin`) to try the pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from derl_gym.agents.meta import ALL_METHODS, COLD_START_METHODS  # the one list of methods (with --no-cold-start)
from derl_gym.runtime.selection import SELECTION_SCORES

#: Defaults of ``derl-gym evolve`` (``make demo`` uses them): at most 4 x 4 = 16 inner trainings plus 3
#: for the final test; an alfworld-tiny inner run takes about 30 s of CPU (4 envs; equivalent formulas hit
#: the cache); the demo took 14 min from a fresh clone with two other inner runs sharing the 2 cores.
DEFAULT_ITERATIONS = 4
DEFAULT_GROUP_SIZE = 4
STANDIN_PRESET = "standin"


def _out(text: str = "") -> None:
    """Print to stdout (the CLI's only output channel besides progress bars on stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------- helpers

def _error(reason: object) -> int:
    """Write ``error: <reason>`` to stderr and return 2, the exit code of a command given bad input."""
    sys.stderr.write(f"error: {reason}\n")
    return 2


def _example_run(run_dir: str) -> None:
    """Fill ``run_dir`` with a finished one-iteration stand-in ``evolve`` run (method ``outcome``) for the
    examples of the commands that read a run directory; its stdout is dropped."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        main(["evolve", "--preset", "standin", "--method", "outcome", "--iterations", "1", "--no-test",
              "--backend", "inline", "--run-dir", run_dir, "--no-progress", "--report-to", "none"])


def _load_spec(preset: str, seed: int | None = None, args: argparse.Namespace | None = None):
    """Return the preset's spec with ``--seed``, ``--eval-episodes`` and ``--validation`` applied."""
    if preset == STANDIN_PRESET:
        from derl_gym.runtime.standin import standin_spec

        spec = standin_spec()
    else:
        from derl_gym.runtime.presets import get_preset

        spec = get_preset(preset)
    if args is not None and getattr(args, "eval_episodes", None) is not None:
        if args.eval_episodes < 1:
            raise SystemExit(f"error: --eval-episodes must be >= 1, got {args.eval_episodes}")
        spec = spec.replace(eval_episodes=int(args.eval_episodes))
    if args is not None and getattr(args, "validation", "paper") not in (None, "paper"):
        from derl_gym.runtime.presets import with_validation

        try:
            spec = with_validation(spec, args.validation)
        except ValueError as exc:
            raise SystemExit(f"error: --validation: {exc}") from None
    return spec if seed is None else spec.replace(seed=int(seed))


def _job_fn(args: argparse.Namespace):
    inner = "standin" if (args.standin or args.preset == STANDIN_PRESET) else args.inner
    if inner == "standin":
        from derl_gym.runtime.standin import standin_inner

        return standin_inner
    if inner == "run_inner":
        from derl_gym.runtime.inner import run_inner

        return run_inner
    module, _, attr = inner.partition(":")
    if not module or not attr:
        raise SystemExit(f"--inner {inner!r} must be 'run_inner', 'standin' or 'package.module:function'")
    import importlib

    return getattr(importlib.import_module(module), attr)


def _make_runner(args: argparse.Namespace, spec: Any):
    """Prepare the preset's envs once in this process (real inner loop only), then start the runner."""
    from derl_gym.runtime.runners import make_runner

    if _job_fn(args).__name__ == "run_inner":
        _out("preparing environments (the first use of a preset generates and caches its games) ...")
        started = time.perf_counter()
        spec.prepare()
        _out(f"environments ready ({time.perf_counter() - started:.0f} s)")

    gpus = float(getattr(args, "gpus_per_job", 0) or 0)
    workers = args.workers
    if gpus > 0 and args.backend == "process" and workers is None:
        # local processes all see every GPU: run as many LM jobs at once as there are GPU sets
        import torch

        workers = max(1, int(torch.cuda.device_count() // gpus)) if torch.cuda.is_available() else 1
    return make_runner(args.backend, workers=workers, timeout=args.timeout, retries=args.retries,
                       job_fn=_job_fn(args), ray_address=args.ray_address, num_gpus_per_job=gpus)


class _Progress:
    """tqdm bar over inner evaluations plus one printed line per iteration."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="formula", file=sys.stderr, dynamic_ncols=True,
                            leave=False)

    def on_result(self, result, from_cache: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"last={result.score:.2f}{' (cached)' if from_cache else ''}")

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            _out(text)

    def on_iteration(self, record) -> None:
        """Print one iteration's line; a resumed iteration also advances the bar past its formulas."""
        if record.resumed and self.bar is not None:
            self.bar.update(len(record.expressions))
        self.line(_iteration_line(record))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _iteration_line(record) -> str:
    tag = " (resumed)" if record.resumed else ""
    failed = int(getattr(record, "failed", sum(s != "ok" for s in record.statuses)))
    stopped = sum(s == "stopped" for s in record.statuses)  # multi-fidelity: stopped early, not failed
    cached = sum(bool(c) for c in record.cached)
    counts = (f"({record.trained if not record.resumed else '-'} trained, {cached} cached, {failed} failed, "
              + (f"{stopped} stopped, " if stopped else "") + f"{record.wall_seconds:.0f} s)")
    if record.best_expression is None:
        why = "failed; no update" if not stopped else "failed or stopped early"
        return (f"[{record.method}] iteration {record.iteration}{tag}: no scored formula (all {len(record.statuses)} "
                f"inner runs {why})  {counts}")
    return (f"[{record.method}] iteration {record.iteration}{tag}: best {record.best_score:.3f}  "
            f"mean {record.mean_score:.3f}  {counts}  best formula: {record.best_expression}")


def _optimizer_kwargs(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Return the meta-optimizer keyword arguments for ``method``: ``--optimizer-kwargs``, plus for
    DERL / DERL-pop ``cold_start=False`` with ``--no-cold-start`` and ``meta_model`` with ``--meta-model``
    (the optimizer's own defaults otherwise: cold start on the shipped seed formulas, GRU policy)."""
    try:
        kwargs = json.loads(args.optimizer_kwargs) if args.optimizer_kwargs else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --optimizer-kwargs must be a JSON object, e.g. '{{\"lr\": 0.003}}': {exc}") from None
    if not isinstance(kwargs, dict):
        raise SystemExit(f"error: --optimizer-kwargs must be a JSON object, got {args.optimizer_kwargs!r}")
    if kwargs and set(kwargs) <= set(ALL_METHODS):  # {"derl": {...}, "cmaes": {...}}: per method
        kwargs = dict(kwargs.get(method) or {})
    if method in COLD_START_METHODS and args.no_cold_start:
        kwargs.setdefault("cold_start", False)
    if method in COLD_START_METHODS and getattr(args, "meta_model", None):
        kwargs.setdefault("meta_model", args.meta_model)
    return kwargs


def _meta_prompt_kwargs(kwargs: dict[str, Any], spec: Any) -> dict[str, Any]:
    """Return ``kwargs`` plus the language-model meta-prompt's task and primitives when it names a
    ``meta_model`` (kept out of the run key: they follow from the preset)."""
    if not kwargs.get("meta_model"):
        return kwargs
    return {"task": spec.description or "", "primitives": spec.primitives.build().describe(), **kwargs}


def _parse_seeds(text: str) -> list[int]:
    """Return seeds from ``"N"`` (0..N-1) or a comma-separated list (``"0,3"``, ``"5,"``)."""
    text = str(text).strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds {text!r} must be a positive count N or a comma-separated list of seeds") from None


def _signal_key(args: argparse.Namespace) -> dict[str, Any]:
    """Return the meta-signal options that make a different experiment (part of the run key); the
    defaults add nothing, so run directories written before these options existed still resume."""
    key: dict[str, Any] = {}
    if args.seeds_per_formula != 1:
        key["seeds_per_formula"] = args.seeds_per_formula
    if getattr(args, "multi_fidelity", False):
        key["multi_fidelity"] = True
    if getattr(args, "selection_score", "validation") != "validation":
        key["selection_score"] = args.selection_score
    return key


def _open_run_dir(args: argparse.Namespace, run_dir: Path, key: dict[str, Any], spec: Any):
    """Open ``run_dir``'s store, refuse a different experiment there, record the command and the code and
    library versions (printing which changed since the run last ran); returns the store."""
    from derl_gym.runtime.store import ResultStore
    from derl_gym.runtime.versions import describe_changes, record_versions

    run_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(run_dir)
    previous = store.get_meta("run_key")
    if previous is not None and previous != key:
        diff = {k: (previous.get(k), v) for k, v in key.items() if previous.get(k) != v}
        store.close()
        raise SystemExit(f"error: {run_dir} holds a different run ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
                         "re-run with the same arguments to resume, or pass a new --run-dir")
    store.set_meta("run_key", key)
    store.set_meta("command", " ".join(shlex.quote(a) for a in ["derl-gym", *args.argv]))
    store.set_meta("args", {k: v for k, v in vars(args).items() if k not in ("func", "argv")})
    store.set_meta("spec", spec.to_dict())
    store.set_meta("spec_hash", spec.spec_hash())  # the cache key: spec + code and library versions
    store.set_meta("spec_hash_base", spec.spec_hash(include_versions=False))
    changes = record_versions(store, spec.agent.algorithm, reuse_across_versions=args.reuse_across_versions,
                              warn=False)  # printed here instead
    if changes:
        _out(f"note: {describe_changes(changes, reuse_across_versions=args.reuse_across_versions)}")
    return store


def _finish_run(run_dir: Path, store: Any, report_to: str, paths: dict[str, Path], start: float | None = None) -> int:
    """Write the run's report, close ``store``, print the wall time since ``start`` (when given), ``paths`` and
    the paths of the report, the plots and (for ``report_to="tensorboard"``) the logs, labels aligned.

    Returns:
        The exit code of a finished ``evolve``/``compare``, 0.
    """
    from derl_gym.runtime.report import write_report

    report = write_report(run_dir, store)
    store.close()
    rows = {"wall time": f"{time.perf_counter() - start:.0f} s"} if start is not None else {}
    rows.update({label: str(path.resolve()) for label, path in paths.items()})
    rows["report"] = str(report.markdown.resolve())
    rows["plots"] = ", ".join(str(p.resolve()) for p in report.plots)
    if report_to == "tensorboard":
        rows["logs"] = f"tensorboard --logdir {(run_dir / 'tensorboard').resolve()}"
    width = max(map(len, rows)) + 2
    for label, value in rows.items():
        _out(f"{label + ':':<{width}}{value}")
    return 0


# ----------------------------------------------------------------------------------- commands

def cmd_list(args: argparse.Namespace) -> int:
    """``derl-gym list``: print the registered envs, the presets (with budgets) and each preset's primitives.

    Args:
        args: the parsed command line (no options).

    Returns:
        The exit code, 0 (a preset whose primitives cannot be built, e.g. for a missing optional
        dependency, is listed with the reason).

    Example:
        >>> import contextlib, io
        >>> out = io.StringIO()
        >>> with contextlib.redirect_stdout(out):
        ...     code = cmd_list(build_parser().parse_args(["list"]))
        >>> lines = out.getvalue().splitlines()
        >>> code, lines[0], "  derl_gym/ALFWorld-v0" in lines, "Presets (derl-gym evolve --preset NAME):" in lines
        (0, 'Environments:', True, True)
        >>> lines[lines.index("  standin:") + 1][:36]         # the stand-in's g1, its kind and bounds
        '    g1 (success, episode, [0, 1]): 1'
    """
    import gymnasium as gym

    import derl_gym  # noqa: F401

    _out("Environments:")
    for env_id in sorted(k for k in gym.registry if k.startswith("derl_gym/")):
        _out(f"  {env_id}")
    _out("")
    _out("Presets (derl-gym evolve --preset NAME):")
    try:
        from derl_gym.runtime.presets import describe_presets, preset_names

        for line in describe_presets().splitlines():
            _out(f"  {line}")
        names = preset_names()
    except ImportError as exc:
        _out(f"  (presets unavailable: {exc})")
        names = []
    _out(f"  {STANDIN_PRESET}: stand-in inner loop (no training; scores formulas on synthetic data, for demos/tests)")
    _out("")
    _out("Primitives (Meta-Reward variables g1..gK) per preset:")
    for name in [*names, STANDIN_PRESET]:
        try:
            pset = _load_spec(name).primitives.build()
            _out(f"  {name}:")
            for line in pset.describe().splitlines():
                _out(f"    {line}")
        except Exception as exc:  # noqa: BLE001 - list what can be listed
            _out(f"  {name}: (primitives unavailable: {type(exc).__name__}: {exc})")
    return 0


def _report_to(args: argparse.Namespace) -> str:
    """Return the tracking backend of ``--report-to`` (default: tensorboard when installed); exits with the
    fix when the backend asked for is not installed."""
    from derl_gym.runtime.tracking import check_report_to

    try:
        return check_report_to(getattr(args, "report_to", None) or "auto")
    except ImportError as exc:
        raise SystemExit(f"error: --report-to {args.report_to}: {exc}") from None


def cmd_evolve(args: argparse.Namespace) -> int:
    """``derl-gym evolve``: run (or resume) one method, retrain the best formula, test it next to ``outcome`` and
    ``avg``, and write the report.

    Prints one line per iteration, the best formula, the final test table (unless ``--no-test``) and the
    paths written under ``--run-dir`` (``store.sqlite``, ``report.md``, the PNG plots). The same command
    on the same run directory resumes; another experiment there is refused (``SystemExit``).

    Args:
        args: the parsed command line (:func:`build_parser`) with ``args.argv``, the arguments as given
            (stored as the run's command; :func:`main` sets it).

    Returns:
        The exit code, 0.

    Raises:
        SystemExit: when the run directory holds a different run, or for bad option values.

    Example:
        >>> import contextlib, io, tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     argv = ["evolve", "--preset", "standin", "--method", "random", "--iterations", "2", "--group-size",
        ...             "2", "--backend", "inline", "--test-seeds", "0", "--run-dir", run_dir, "--no-progress",
        ...             "--report-to", "none"]
        ...     args = build_parser().parse_args(argv)
        ...     args.argv = argv
        ...     out = io.StringIO()
        ...     with contextlib.redirect_stdout(out):
        ...         code = cmd_evolve(args)
        ...     written = sorted(p.name for p in Path(run_dir).iterdir())
        >>> lines = out.getvalue().splitlines()
        >>> code, sum(line.startswith("[random] iteration") for line in lines), written
        (0, 2, ['primitives.png', 'report.md', 'store.sqlite', 'structure.png', 'validation.png'])
        >>> [line.split(" | ")[0] for line in lines if line.startswith("| ") and "`" in line]   # the final test
        ['| best (random)', '| outcome', '| avg']
    """
    from derl_gym.agents.meta import make_optimizer
    from derl_gym.runtime.evolve import baseline_formulas, final_test, run_evolution

    report_to = _report_to(args)
    spec = _load_spec(args.preset, args.seed, args)
    run_dir = Path(args.run_dir or f"runs/{args.preset}-{args.method}-s{args.seed}")
    num_variables = len(spec.primitives.build())
    start = time.perf_counter()
    store = _open_run_dir(args, run_dir, {
        "command": "evolve", "preset": args.preset, "method": args.method, "seed": args.seed,
        "group_size": args.group_size, "spec_hash": spec.spec_hash(include_versions=False), "inner": args.inner,
        "optimizer_kwargs": _optimizer_kwargs(args, args.method), **_signal_key(args)}, spec)
    _out(f"derl-gym evolve: preset {args.preset} ({spec.spec_hash()}), method {args.method}, "
         f"{args.iterations} iterations x group {args.group_size}, backend {args.backend}, run dir {run_dir}")
    optimizer = make_optimizer(args.method, num_variables, seed=args.seed,
                               **_meta_prompt_kwargs(_optimizer_kwargs(args, args.method), spec))
    progress = _Progress(args.iterations * args.group_size, not args.no_progress, f"{args.method}")
    runner = _make_runner(args, spec)
    try:
        result = run_evolution(spec, optimizer, runner, store, args.iterations, args.group_size, seed=args.seed,
                               method=args.method, progress=progress.on_iteration, on_result=progress.on_result,
                               reuse_across_versions=args.reuse_across_versions,
                               seeds_per_formula=args.seeds_per_formula, score_test_splits=args.score_test_splits,
                               report_to=report_to, multi_fidelity=True if args.multi_fidelity else None,
                               selection_score=args.selection_score)
        progress.close()
        if result.best_expression is None:
            failed = sum(r.failed for r in result.records)
            _out(f"no scored formula: all {failed} inner runs failed or timed out ({result.trained} inner trainings); "
                 "see the errors in the store (evaluations.error) or rerun with -v")
        else:
            _out(f"best formula: {result.best_expression}  (validation {result.best_score:.3f}; "
                 f"{result.trained} inner trainings, {result.cache_hits} cache hits)")
        store.set_meta("evolution", {"best_expression": result.best_expression, "best_score": result.best_score,
                                     "best_canonical": result.best_canonical, "trained": result.trained})
        if not args.no_test:
            seeds = [int(s) for s in str(args.test_seeds).split(",") if s.strip()] or [args.seed]
            formulas = {f"best ({args.method})": result.best_expression, **baseline_formulas(num_variables)}
            _out(f"final test: retraining {len(formulas)} formulas from scratch on seeds {seeds}, "
                 f"test splits {sorted(spec.test_envs) or ['validation']} ...")
            test_progress = _Progress(len(formulas) * len(seeds), not args.no_progress, "final test")
            table = final_test(spec, formulas, runner, seeds, store, on_result=test_progress.on_result,
                               reuse_across_versions=args.reuse_across_versions)
            test_progress.close()
            store.set_meta("final_test", table.to_dict())
            store.set_meta("final_test_markdown", table.to_markdown())
            _out("")
            _out(table.to_markdown())
            _out("")
    finally:
        progress.close()
        runner.close()
    return _finish_run(run_dir, store, report_to, {"run dir": run_dir, "store": store.path}, start=start)


def cmd_compare(args: argparse.Namespace) -> int:
    """``derl-gym compare``: run several methods on the same inner-training budget per seed, retrain and test each
    method's best formula, print the table.

    Writes ``compare.md``, ``compare.json``, ``report.md`` and the plots into ``--run-dir``; resumable like
    :func:`cmd_evolve`.

    Args:
        args: the parsed command line (:func:`build_parser`) with ``args.argv`` (see :func:`cmd_evolve`).

    Returns:
        The exit code, 0.

    Raises:
        SystemExit: for a ``--test-seeds`` list of another length than ``--seeds``, a run directory holding a
            different run, or bad option values.

    Example:
        >>> import contextlib, io, json, tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     argv = ["compare", "--preset", "standin", "--methods", "random,outcome", "--budget", "2", "--seeds",
        ...             "0,1", "--group-size", "2", "--backend", "inline", "--run-dir", run_dir, "--no-progress",
        ...             "--report-to", "none"]
        ...     args = build_parser().parse_args(argv)
        ...     args.argv = argv
        ...     with contextlib.redirect_stdout(io.StringIO()):
        ...         code = cmd_compare(args)
        ...     saved = json.loads((Path(run_dir) / "compare.json").read_text())
        ...     table = (Path(run_dir) / "compare.md").read_text()
        >>> code, saved["methods"], saved["seeds"], saved["budget"]
        (0, ['random', 'outcome'], [0, 1], 2)
        >>> "| outcome | `g1` |" in table
        True
    """
    from derl_gym.runtime.evolve import compare

    report_to = _report_to(args)
    spec = _load_spec(args.preset, None, args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = _parse_seeds(args.seeds)
    test_seeds = _parse_seeds(args.test_seeds) if args.test_seeds else None
    if test_seeds is not None and len(test_seeds) != len(seeds):
        raise SystemExit(f"error: --test-seeds {args.test_seeds!r} must list one seed per search seed {seeds}")
    run_dir = Path(args.run_dir or f"runs/compare-{args.preset}")
    store = _open_run_dir(args, run_dir, {
        "command": "compare", "preset": args.preset, "spec_hash": spec.spec_hash(include_versions=False),
        "group_size": args.group_size,
        "budget": args.budget, "inner": args.inner,
        "optimizer_kwargs": {m: _optimizer_kwargs(args, m) for m in methods}, **_signal_key(args)}, spec)
    _out(f"derl-gym compare: preset {args.preset}, methods {methods}, budget {args.budget} per method and seed, "
         f"seeds {seeds}, run dir {run_dir}")
    total = len(methods) * len(seeds) * (args.budget + len(seeds))
    progress = _Progress(total, not args.no_progress, "compare")
    runner = _make_runner(args, spec)
    try:
        result = compare(spec, methods, args.budget, seeds, runner, store, group_size=args.group_size,
                         optimizer_kwargs={m: _meta_prompt_kwargs(_optimizer_kwargs(args, m), spec) for m in methods},
                         progress=progress.on_iteration, on_result=progress.on_result,
                         reuse_across_versions=args.reuse_across_versions,
                         seeds_per_formula=args.seeds_per_formula, score_test_splits=args.score_test_splits,
                         test_seeds=test_seeds, report_to=report_to,
                         multi_fidelity=True if args.multi_fidelity else None,
                         selection_score=args.selection_score)
    finally:
        progress.close()
        runner.close()
    table = result.to_markdown()
    (run_dir / "compare.md").write_text(table + "\n", encoding="utf-8")
    (run_dir / "compare.json").write_text(json.dumps(result.to_dict(), indent=1, default=str), encoding="utf-8")
    _out("")
    _out(table)
    _out("")
    return _finish_run(run_dir, store, report_to, {"table": run_dir / "compare.md"})


def cmd_report(args: argparse.Namespace) -> int:
    """``derl-gym report RUN_DIR``: write ``report.md`` and the PNG plots of a run directory and print their paths.

    Args:
        args: the parsed command line (``run_dir``).

    Returns:
        The exit code: 0, or 2 (with the reason on stderr) when the directory has no ``store.sqlite``.

    Example:
        >>> import contextlib, io, tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _example_run(run_dir)
        ...     out = io.StringIO()
        ...     with contextlib.redirect_stdout(out):
        ...         code = cmd_report(build_parser().parse_args(["report", run_dir]))
        >>> code, [line.split("/")[-1] for line in out.getvalue().splitlines()]
        (0, ['report.md', 'validation.png', 'structure.png', 'primitives.png'])
        >>> with contextlib.redirect_stderr(io.StringIO()):
        ...     cmd_report(build_parser().parse_args(["report", "no/such/run"]))
        2
    """
    from derl_gym.runtime.report import write_report

    try:
        report = write_report(args.run_dir)
    except FileNotFoundError as exc:
        return _error(exc)
    _out(f"report: {report.markdown.resolve()}")
    for plot in report.plots:
        _out(f"plot:   {plot.resolve()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``derl-gym export RUN_DIR``: write the run's discovered reward(s) as JSON (stdout, or the file ``--out``).

    The JSON (:func:`~derl_gym.integrations.export.export_run`) holds each method's best formula with its
    primitives, scores and spec.

    Args:
        args: the parsed command line (``run_dir``, ``out``).

    Returns:
        The exit code: 0, or 2 (with the reason on stderr) when the directory has no store written by
        ``evolve``/``compare`` or no scored formula.

    Example:
        >>> import contextlib, io, tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _example_run(run_dir)
        ...     with contextlib.redirect_stdout(io.StringIO()):
        ...         code = cmd_export(build_parser().parse_args(["export", run_dir, "--out", f"{run_dir}/reward.json"]))
        ...     data = json.loads((Path(run_dir) / "reward.json").read_text())
        >>> code, data["command"], [(r["method"], r["formula"]) for r in data["rewards"]]
        (0, 'evolve', [('outcome', 'g1')])
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     code = cmd_export(build_parser().parse_args(["export", "no/such/run"]))
        >>> code, err.getvalue().startswith("error: ")
        (2, True)
    """
    from derl_gym.integrations.export import ExportError, export_run

    try:
        data = export_run(args.run_dir)
    except ExportError as exc:
        return _error(exc)
    text = json.dumps(data, indent=2)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        best = ", ".join(f"{r['method']}: {r['formula']} (validation {r['validation']:.3f})" for r in data["rewards"])
        _out(f"exported {best} to {out.resolve()}")
    else:
        _out(text)
    return 0


def cmd_play(args: argparse.Namespace, stdin=None) -> int:
    """``derl-gym play ENV_ID``: play a registered text env in the terminal.

    Prints the observation and the numbered admissible commands; type a command (or its number), ``quit``
    to stop. A finished episode prints its outcome and starts a new one.

    Args:
        args: the parsed command line (``env_id``, ``kwargs`` as a JSON object, ``seed``).
        stdin: where the commands are read from (default ``sys.stdin``).

    Returns:
        The exit code: 0, or 2 (with the reason on stderr) for bad ``--kwargs`` or an env that cannot be made.

    Example:
        >>> import contextlib, io
        >>> import gymnasium as gym
        >>> gym.register("derl_gym_doc/PlayDoor-v0", entry_point="derl_gym.wrappers.text_actions:_ExampleDoor",
        ...              disable_env_checker=True)   # a door world: "open door" wins, "look" does nothing
        >>> out = io.StringIO()
        >>> with contextlib.redirect_stdout(out):
        ...     code = cmd_play(build_parser().parse_args(["play", "derl_gym_doc/PlayDoor-v0"]), stdin=io.StringIO("1\\n0\\nquit\\n"))
        >>> lines = out.getvalue().splitlines()
        >>> code, lines[1], [line for line in lines if line.startswith("reward")]   # "look", then "open door"
        (0, 'Admissible commands: [0] open door; [1] look', ['reward 0', 'reward 1'])
        >>> lines[7], lines[-1]                     # the prompt "> " starts the lines after a command
        ('episode 1 finished; won=True; return 1. New episode.', '> bye (1 episode(s) finished)')
        >>> with contextlib.redirect_stderr(io.StringIO()):
        ...     cmd_play(build_parser().parse_args(["play", "derl_gym_doc/NoSuchEnv-v0"]))
        2
    """
    import gymnasium as gym

    import derl_gym  # noqa: F401

    stdin = stdin if stdin is not None else sys.stdin
    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else {}
    except json.JSONDecodeError as exc:
        return _error(f"--kwargs must be a JSON object, e.g. '{{\"split\": \"test\"}}': {exc}")
    try:
        env = gym.make(args.env_id, **kwargs)
    except gym.error.Error as exc:
        return _error(f"cannot make {args.env_id!r}: {exc}; see `derl-gym list`")
    episodes, total_reward = 0, 0.0
    try:
        obs, info = env.reset(seed=args.seed)
        _out(str(obs))
        while True:
            commands = list(info.get("admissible_commands") or [])
            if commands:
                _out("Admissible commands: " + "; ".join(f"[{i}] {c}" for i, c in enumerate(commands)))
            sys.stdout.write("> ")
            sys.stdout.flush()
            line = stdin.readline()
            if not line:
                _out("")
                break
            text = line.strip()
            if text.lower() in ("quit", "exit", "q"):
                break
            action: Any = text
            if text.isdigit() and commands and int(text) < len(commands):
                action = commands[int(text)]
            elif isinstance(env.action_space, gym.spaces.Discrete):
                if not text.lstrip("-").isdigit():
                    _out(f"this env takes an integer action in [0, {env.action_space.n}); got {text!r}")
                    continue
                action = int(text)
            obs, reward, terminated, truncated, info = env.step(action)
            total_reward += float(reward)
            _out(str(obs))
            _out(f"reward {float(reward):g}" + (f"  (task reward {info['task_reward']:g})" if "task_reward" in info else ""))
            if terminated or truncated:
                episodes += 1
                _out(f"episode {episodes} {'finished' if terminated else 'truncated'}; "
                     f"won={bool(info.get('won', reward >= 1.0))}; return {total_reward:g}. New episode.")
                total_reward = 0.0
                obs, info = env.reset()
                _out(str(obs))
    finally:
        env.close()
    _out(f"bye ({episodes} episode(s) finished)")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """``derl-gym tiny-model DIR``: build a tiny random-weight Qwen2 model and its tokenizer in ``DIR`` (offline;
    :func:`~derl_gym.models.tiny.build_tiny_model`, a few seconds: it trains a small BPE tokenizer).

    Args:
        args: the parsed command line (``dir``, ``layers``, ``hidden``, ``heads``, ``vocab_size``, ``seed``).

    Returns:
        The exit code: 0, or 2 (with the reason on stderr) for sizes that do not fit together.

    Example:
        >>> import contextlib, io
        >>> args = build_parser().parse_args(["tiny-model", "models/tiny", "--hidden", "30", "--heads", "4"])
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     code = cmd_tiny_model(args)        # checked before anything is written
        >>> code, err.getvalue().strip()
        (2, 'error: hidden=30 is not a multiple of heads=4; pick e.g. hidden=28')
    """
    from derl_gym.models.tiny import build_tiny_model

    start = time.time()
    try:
        out = build_tiny_model(args.dir, layers=args.layers, hidden=args.hidden, heads=args.heads,
                               vocab_size=args.vocab_size, seed=args.seed)
    except ValueError as exc:
        return _error(exc)
    info = json.loads((out / "derl_gym_tiny.json").read_text())
    _out(f"tiny model in {out}: {info['parameters']:,} parameters, {info['vocab_size']} tokens, "
         f"{time.time() - start:.1f} s")
    return 0


# ----------------------------------------------------------------------------------- parser

def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="alfworld-tiny",
                   help=f"inner-loop preset (see `derl-gym list`; '{STANDIN_PRESET}' = stand-in, no training)")
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, help="formulas per meta iteration")
    p.add_argument("--backend", choices=("process", "ray", "inline"), default="process",
                   help="where inner runs execute (inline = in this process, for debugging)")
    p.add_argument("--workers", type=int, default=None, help="parallel inner runs (default: CPU count)")
    p.add_argument("--run-dir", default=None, help="run directory (store, report, plots); re-use it to resume")
    p.add_argument("--timeout", type=float, default=None, help="seconds before an inner run is killed (failed)")
    p.add_argument("--retries", type=int, default=1,
                   help="re-run a failed inner run (crashed worker, timeout, error) up to N times (default 1)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--gpus-per-job", type=float, default=0,
                   help="GPUs per inner run (language-model presets): Ray gives each job this many GPUs; with "
                        "--backend process and no --workers, runs GPU count / N jobs at once (default 0)")
    p.add_argument("--inner", default="run_inner",
                   help="inner job: run_inner (train an agent), standin, or package.module:function")
    p.add_argument("--standin", action="store_true", help="shortcut for --inner standin (quick demo, no training)")
    p.add_argument("--optimizer-kwargs", default=None,
                   help="JSON object of meta-optimizer arguments, e.g. '{\"lr\": 0.003}', or one object per "
                        "method: '{\"derl\": {\"kl_coef\": 0.1}, \"cmaes\": {\"sigma0\": 0.5}}'")
    p.add_argument("--no-cold-start", action="store_true",
                   help="DERL / DERL-pop: start from a random token policy instead of the supervised cold start "
                        "on the ~200 shipped seed formulas")
    p.add_argument("--meta-model", default=None, metavar="PATH",
                   help="DERL / DERL-pop: a causal language model writes the formulas (grammar-constrained, trained "
                        "with GRPO): a local model folder, or 'tiny' for the offline tiny model (default: the GRU "
                        "token policy)")
    p.add_argument("--reuse-across-versions", action="store_true",
                   help="reuse cached inner results trained under other derl-gym / library versions (by default "
                        "the cache key includes the versions of derl-gym, torch, SB3, gymnasium, numpy and the text "
                        "engines, so an upgrade retrains)")
    p.add_argument("--seeds-per-formula", type=int, default=1, metavar="N",
                   help="meta signal: train every formula on the same N inner seeds (common random numbers) and "
                        "score it by the mean validation success; each formula costs N inner trainings (default 1)")
    p.add_argument("--eval-episodes", type=int, default=None, metavar="E",
                   help="validation (and test) episodes per inner run (default: the preset's eval_episodes)")
    p.add_argument("--validation", choices=("paper", "fresh", "unseen-plans"), default="paper",
                   help="selection split of the search (ALFWorld presets): paper = 20%% of the training games "
                        "(default); fresh = a 4x larger held-out set of the training task types; unseen-plans = "
                        "held-out training-type games on unseen floor plans. No variant uses test games")
    p.add_argument("--multi-fidelity", action="store_true",
                   help="asynchronous successive halving: an inner run whose training-success curve at 1/3 of the "
                        "budget is behind the top third of the search's runs stops there (status 'stopped', scored "
                        "at lower fidelity, never the best formula, censored score in the update); default off")
    p.add_argument("--selection-score", choices=SELECTION_SCORES, default="validation",
                   help="what the search learns from and selects by: validation (the paper's, default), curve-tail "
                        "(mean training success over the learning curve's last quarter: no extra training, and on "
                        "alfworld-l2-fast less seed noise) or validation+curve-tail (their mean); never a test split")
    p.add_argument("--score-test-splits", action="store_true",
                   help="also score the test splits of every searched formula (stored for analysis such as the "
                        "validation/test rank correlation; never seen by the search)")
    p.add_argument("--report-to", choices=("tensorboard", "wandb", "none"), default=None,
                   help="experiment tracking: per-iteration scores, GRPO statistics, primitive means and inner "
                        "learning curves (tensorboard: event files under RUN_DIR/tensorboard; wandb: needs the "
                        "wandb package; default: tensorboard when installed, else none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (iteration lines are still printed)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argparse parser of ``derl-gym``: one sub-command per ``cmd_*`` function (``args.func``).

    Returns:
        The ``argparse.ArgumentParser`` (sub-commands ``list``, ``evolve``, ``compare``, ``report``, ``export``,
        ``tiny-model``, ``play``).

    Example:
        >>> args = build_parser().parse_args(["evolve", "--preset", "standin", "--iterations", "2"])
        >>> args.func is cmd_evolve, args.iterations, args.group_size == DEFAULT_GROUP_SIZE, args.method
        (True, 2, True, 'derl')
        >>> build_parser().parse_args(["compare", "--seeds", "0,3"]).seeds
        '0,3'
    """
    parser = argparse.ArgumentParser(prog="derl-gym", description="DERL: evolve reward functions (Meta-Rewards) "
                                     "for RL agents on text environments.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list envs, presets and primitives")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("evolve", help="evolve a Meta-Reward with one method, then test the best formula")
    _add_run_options(p)
    p.add_argument("--method", default="derl", help=", ".join(ALL_METHODS))
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="meta iterations")
    p.add_argument("--seed", type=int, default=0, help="seed of the meta-optimizer and of every inner run")
    p.add_argument("--test-seeds", default=None,
                   help="comma-separated seeds of the final retraining (default: --seed)")
    p.add_argument("--no-test", action="store_true", help="skip the final retraining and test")
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("compare", help="compare methods on the same number of inner trainings")
    _add_run_options(p)
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help="comma-separated methods")
    p.add_argument("--budget", type=int, default=8, help="inner trainings per method and seed")
    p.add_argument("--seeds", default="2",
                   help="number of seeds N (seeds 0..N-1), or a comma-separated list such as 0,3 or 5,")
    p.add_argument("--test-seeds", default=None,
                   help="comma-separated seeds the best formulas are retrained on, one per --seeds entry "
                        "(default: the search seeds); seeds disjoint from the search avoid re-testing its runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="write report.md and PNG plots for a run directory")
    p.add_argument("run_dir", help="a run directory of evolve or compare")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's best formula with its primitives and scores as JSON")
    p.add_argument("run_dir", help="a run directory of evolve (its best formula) or compare (each method's)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the JSON to FILE (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tiny-model", help="build a small random-weight causal LM + tokenizer in DIR (offline)")
    p.add_argument("dir", help="output folder (loadable with AutoModelForCausalLM / AutoTokenizer.from_pretrained)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--vocab-size", type=int, default=1000, help="BPE vocabulary size target (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("play", help="play a registered text env in the terminal")
    p.add_argument("env_id", help="e.g. derl_gym/GSM8K-v0 or derl_gym/ALFWorld-v0")
    p.add_argument("--kwargs", default=None, help="JSON object of gymnasium.make keyword arguments")
    p.add_argument("--seed", type=int, default=None, help="reset seed")
    p.set_defaults(func=cmd_play)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``derl-gym`` command line.

    Sets the log level (``-v`` info, ``-vv`` debug), the stand-in inner loop for ``--preset standin`` or
    ``--standin``, ``evolve``'s default ``--test-seeds`` (its ``--seed``), then runs the sub-command. An
    interrupted ``evolve``/``compare`` (Ctrl-C) says how to resume and returns 130.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit code of the sub-command.

    Example:
        >>> import contextlib, io, tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     argv = ["evolve", "--preset", "standin", "--method", "outcome", "--iterations", "1", "--no-test",
        ...             "--backend", "inline", "--run-dir", run_dir, "--no-progress", "--report-to", "none"]
        ...     out = io.StringIO()
        ...     with contextlib.redirect_stdout(out):
        ...         first, again = main(argv), main(argv)      # the second run resumes: nothing is retrained
        >>> first, again, out.getvalue().count("(resumed)")
        (0, 0, 1)
        >>> with contextlib.redirect_stderr(io.StringIO()):
        ...     main(["report", "no/such/run"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    level = logging.WARNING - 10 * min(2, getattr(args, "verbose", 0) or 0)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "standin", False) or getattr(args, "preset", None) == STANDIN_PRESET:
        args.inner, args.standin = "standin", True
    if args.command == "evolve" and args.test_seeds is None:
        args.test_seeds = str(args.seed)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.command in ("evolve", "compare"):
            sys.stderr.write("\ninterrupted: finished inner runs are stored; run the same command again to resume\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
