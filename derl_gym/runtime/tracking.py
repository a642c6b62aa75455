"""Experiment tracking: a meta run's statistics for TensorBoard (or Weights & Biases).

:class:`RunTracker` lives in the main process of a meta run (:func:`~derl_gym.runtime.evolve.run_evolution`,
:func:`~derl_gym.runtime.evolve.compare`) and writes only data that process already has; inner-run workers
never write event files. Per meta iteration of a method it logs (TensorBoard step = iteration):

- ``meta/best_score``, ``meta/mean_score``, ``meta/best_so_far``, ``meta/failed``, ``meta/scored``,
  ``meta/trained``, ``meta/cache_hits``, ``meta/env_steps``, ``meta/wall_seconds``;
- ``optimizer/<stat>``: every finite number the meta-optimizer's update returned; for DERL / DERL-pop these
  are the GRPO statistics ``clip_fraction``, ``kl``, ``entropy``, ``adv_std``, ``adv_spread``, ``loss`` ...;
- ``primitives/mean/g<k>_<name>`` and ``primitives/best/g<k>_<name>``: the inner runs' mean primitive values
  over their training episodes (mean over the iteration's scored runs, and the best run's), where the inner
  results record them (``InnerResult.extra["primitive_means"]``);
- ``inner/iter<i>/formula<j>/success``: the learning curve of formula ``j`` of iteration ``i``
  (``InnerResult.curve``: training success against env steps);
- ``formulas`` (text): a table of the iteration's formulas, statuses, scores and primitive means.

TensorBoard gets one run folder per method label under ``<run_dir>/tensorboard/`` (``compare`` writes
``derl/seed0``, ``random/seed0`` ...), so methods share tags and overlay in one chart::

    tensorboard --logdir RUN_DIR/tensorboard

Everything is also in the store: reports (``derl-gym report``) never read event files.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import statistics
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

#: The values ``report_to`` accepts (besides ``"auto"``, which picks ``"tensorboard"`` when importable).
REPORT_TO_CHOICES = ("tensorboard", "wandb", "none")
#: Name of the folder under the run directory that holds the event files.
TENSORBOARD_DIR = "tensorboard"
WANDB_MISSING = ("report_to='wandb' needs the wandb package, which is not installed; pip install wandb "
                 "(then `wandb login`), or use report_to='tensorboard' or 'none'")
TENSORBOARD_MISSING = ("report_to='tensorboard' needs the tensorboard package, which is not installed; "
                       "pip install tensorboard, or use report_to='none'")


def tensorboard_available() -> bool:
    """Return True when the ``tensorboard`` package (needed by ``torch.utils.tensorboard``) is importable.

    Example:
        >>> from derl_gym.runtime.tracking import tensorboard_available
        >>> isinstance(tensorboard_available(), bool)
        True
    """
    return importlib.util.find_spec("tensorboard") is not None


def resolve_report_to(report_to: str | None) -> str:
    """Return the tracking backend ``report_to`` asks for: ``"auto"`` (or None) gives ``"tensorboard"``
    when tensorboard is importable, else ``"none"``; raises ``ValueError`` for an unknown value.

    Example:
        >>> from derl_gym.runtime.tracking import resolve_report_to, tensorboard_available
        >>> resolve_report_to("None"), resolve_report_to("auto") == ("tensorboard" if tensorboard_available() else "none")
        ('none', True)
    """
    value = "auto" if report_to is None else str(report_to).strip().lower()
    if value == "auto":
        return "tensorboard" if tensorboard_available() else "none"
    if value not in REPORT_TO_CHOICES:
        raise ValueError(f"report_to={report_to!r} is not a tracking backend; choose one of "
                         f"{', '.join(REPORT_TO_CHOICES)} or 'auto'")
    return value


def check_report_to(report_to: str | None) -> str:
    """Return the resolved backend (:func:`resolve_report_to`) after checking that its package is importable;
    raises ``ValueError`` for an unknown value and ``ImportError`` naming the package to install.

    Example:
        >>> from derl_gym.runtime.tracking import check_report_to
        >>> check_report_to("none")
        'none'
        >>> check_report_to("mlflow")
        Traceback (most recent call last):
        ValueError: report_to='mlflow' is not a tracking backend; choose one of tensorboard, wandb, none or 'auto'
    """
    backend = resolve_report_to(report_to)
    if backend == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ImportError(WANDB_MISSING) from None
    if backend == "tensorboard" and not tensorboard_available():
        raise ImportError(TENSORBOARD_MISSING)
    return backend


def _label_path(label: str) -> Path:
    """Return a relative folder for a method label (``"derl/seed0"`` -> ``derl/seed0``), safe characters only."""
    parts = [re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_.") for p in str(label).split("/")]
    return Path(*[p for p in parts if p] or ["run"])


def _finite(value: Any) -> float | None:
    """Return ``value`` as a float when it is a finite number (bools count as 0/1), else None."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:  # bools, ints, floats, numpy scalars
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class _TensorBoardBackend:
    """One ``torch.utils.tensorboard.SummaryWriter`` per method label under ``root``."""

    def __init__(self, root: Path) -> None:
        if not tensorboard_available():
            raise ImportError(TENSORBOARD_MISSING)
        from torch.utils.tensorboard import SummaryWriter

        self._writer_cls = SummaryWriter
        self.root = root
        self._writers: dict[str, Any] = {}

    def _writer(self, label: str) -> Any:
        writer = self._writers.get(label)
        if writer is None:
            writer = self._writer_cls(log_dir=str(self.root / _label_path(label)), flush_secs=30)
            self._writers[label] = writer
        return writer

    def scalars(self, label: str, values: Mapping[str, float], step: int) -> None:
        writer = self._writer(label)
        for tag, value in values.items():
            writer.add_scalar(tag, value, global_step=int(step))

    def text(self, label: str, tag: str, text: str, step: int) -> None:
        self._writer(label).add_text(tag, text, global_step=int(step))

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _WandbBackend:
    """A thin adapter onto one ``wandb`` run: tags become ``"<label>/<tag>"`` keys logged with a
    ``"<label>/step"`` key (the iteration or env step), which W&B can use as the x-axis."""

    def __init__(self, root: Path, project: str | None, config: Mapping[str, Any] | None) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError(WANDB_MISSING) from None
        self._wandb = wandb
        root.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project or "derl-gym", dir=str(root), config=dict(config or {}),
                               name=root.parent.name or None)

    def scalars(self, label: str, values: Mapping[str, float], step: int) -> None:
        data: dict[str, Any] = {f"{label}/{tag}": value for tag, value in values.items()}
        data[f"{label}/step"] = int(step)
        self._run.log(data)

    def text(self, label: str, tag: str, text: str, step: int) -> None:
        self._run.log({f"{label}/{tag}": self._wandb.Html(f"<pre>{text}</pre>"), f"{label}/step": int(step)})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._run.finish()


class RunTracker:
    """Log a meta run's per-iteration statistics and inner learning curves to TensorBoard or W&B.

    ``run_dir`` is the run directory (event files go to ``<run_dir>/tensorboard/<method label>/``);
    ``report_to`` is ``"tensorboard"``, ``"wandb"``, ``"none"`` or ``"auto"`` (tensorboard when importable).
    ``wandb_project`` and ``config`` go to ``wandb.init``. Thread-safe: ``compare`` runs seeds in threads
    that share one tracker. Use it as a context manager or call :meth:`close`.

    Raises:
        ValueError: for an unknown ``report_to``.
        ImportError: when the backend asked for is not installed (the message says what to install).

    Example:
        >>> import tempfile
        >>> from derl_gym.runtime.tracking import RunTracker
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     with RunTracker(run_dir, report_to="none") as tracker:
        ...         tracker.log_scalars("derl", {"meta/best_score": 0.5}, step=1)
        ...     tracker.backend, tracker.enabled
        ('none', False)
    """

    def __init__(self, run_dir: str | Path, report_to: str | None = "auto", *, wandb_project: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.backend = resolve_report_to(report_to)
        self.run_dir = Path(run_dir)
        self.log_dir = self.run_dir / TENSORBOARD_DIR
        self._lock = threading.Lock()
        self._best: dict[str, float] = {}
        self._impl: Any = None
        if self.backend == "tensorboard":
            self._impl = _TensorBoardBackend(self.log_dir)
        elif self.backend == "wandb":
            self._impl = _WandbBackend(self.run_dir / "wandb", wandb_project, config)

    @property
    def enabled(self) -> bool:
        """True when something is written (the backend is not ``"none"`` and the tracker is open)."""
        return self._impl is not None

    # ------------------------------------------------------------------ generic logging
    def log_scalars(self, label: str, values: Mapping[str, Any], step: int) -> None:
        """Log the finite numbers of ``values`` (tag -> value) for method ``label`` at ``step``; others are
        skipped. Returns nothing."""
        clean = {tag: v for tag, v in ((t, _finite(x)) for t, x in values.items()) if v is not None}
        if self._impl is None or not clean:
            return
        with self._lock:
            self._impl.scalars(label, clean, step)

    def log_text(self, label: str, tag: str, text: str, step: int) -> None:
        """Log a markdown ``text`` for method ``label`` at ``step``; returns nothing."""
        if self._impl is None:
            return
        with self._lock:
            self._impl.text(label, tag, text, step)

    # ------------------------------------------------------------------ the meta loop
    def note_resumed(self, record: Any) -> None:
        """Remember a record loaded from a checkpoint (for ``meta/best_so_far``) without logging it again
        (it was logged when it ran); returns nothing."""
        self._update_best(record.method, record)

    def _update_best(self, label: str, record: Any) -> float:
        scored = [float(s) for s, st in zip(record.scores, record.statuses) if st == "ok" and math.isfinite(s)]
        with self._lock:
            best = max([self._best.get(label, -math.inf), *scored])
            if math.isfinite(best):
                self._best[label] = best
            return best

    def log_iteration(self, record: Any, results: Sequence[Any] = ()) -> None:
        """Log one finished meta iteration: ``record`` (an
        :class:`~derl_gym.runtime.evolve.IterationRecord`) and its ``results`` (the
        :class:`~derl_gym.runtime.spec.InnerResult` per formula, aligned with ``record.expressions``).
        Returns nothing; never raises for odd data (a tracking problem is logged, the run goes on)."""
        label, step = record.method, int(record.iteration)
        best_so_far = self._update_best(label, record)
        if self._impl is None:
            return
        try:
            self._log_iteration(label, step, record, list(results), best_so_far)
        except Exception:  # noqa: BLE001 - tracking never breaks a meta run
            logger.exception("tracking: logging iteration %d of %s failed", step, label)

    def _log_iteration(self, label: str, step: int, record: Any, results: list[Any], best_so_far: float) -> None:
        meta = {"meta/best_score": record.best_score, "meta/mean_score": record.mean_score,
                "meta/failed": record.failed, "meta/scored": len(record.scores) - record.failed,
                "meta/trained": record.trained, "meta/cache_hits": sum(bool(c) for c in record.cached),
                "meta/env_steps": record.env_steps, "meta/wall_seconds": record.wall_seconds}
        if math.isfinite(best_so_far):
            meta["meta/best_so_far"] = best_so_far
        stats = {f"optimizer/{k}": v for k, v in (record.stats or {}).items() if k not in ("failed", "scored", "iteration")}
        self.log_scalars(label, {**meta, **stats}, step)
        means = [_primitive_means(r) for r in results]
        scored = [i for i, r in enumerate(results) if getattr(r, "ok", False) and means[i]]
        if scored:
            names = list(means[scored[0]])
            avg = {f"primitives/mean/{_primitive_tag(k, n)}":
                   statistics.fmean(means[i][n] for i in scored if n in means[i]) for k, n in enumerate(names)}
            best = max(scored, key=lambda i: float(results[i].score))
            top = {f"primitives/best/{_primitive_tag(k, n)}": v for k, (n, v) in enumerate(means[best].items())}
            self.log_scalars(label, {**avg, **top}, step)
        for j, result in enumerate(results):
            for env_steps, success in getattr(result, "curve", None) or []:
                self.log_scalars(label, {f"inner/iter{step}/formula{j}/success": success}, int(env_steps))
        self.log_text(label, "formulas", _formula_table(record, results, means), step)
        with self._lock:
            self._impl.flush()

    def close(self) -> None:
        """Flush and close the writers (a closed tracker logs nothing more); returns nothing."""
        with self._lock:
            if self._impl is not None:
                self._impl.close()
                self._impl = None

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunTracker(backend={self.backend!r}, run_dir={str(self.run_dir)!r})"


def _primitive_means(result: Any) -> dict[str, float]:
    """Return ``result.extra["primitive_means"]`` as ``{name: value}`` (finite values only; empty when absent)."""
    raw = (getattr(result, "extra", None) or {}).get("primitive_means") or {}
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in ((k, _finite(x)) for k, x in raw.items()) if v is not None}


def _primitive_tag(index: int, name: str) -> str:
    """Return ``g<k>_<name>`` (``g1_success``), or ``g<k>`` when the name already is the variable."""
    var = f"g{index + 1}"
    return var if name == var else f"{var}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"


def _formula_table(record: Any, results: Sequence[Any], means: Sequence[Mapping[str, float]]) -> str:
    """Return a markdown table of one iteration's formulas (index, formula, status, score, cached, primitives)."""
    names: list[str] = next((list(m) for m in means if m), [])
    head = ["#", "formula", "status", "validation", "cached"] + [_primitive_tag(k, n) for k, n in enumerate(names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for j, text in enumerate(record.expressions):
        status = record.statuses[j] if j < len(record.statuses) else ""
        score = f"{record.scores[j]:.3f}" if j < len(record.scores) and status == "ok" else "-"
        cached = "yes" if j < len(record.cached) and record.cached[j] else ""
        prim = means[j] if j < len(means) else {}
        cells = [str(j), f"`{text}`", status, score, cached] + [
            f"{prim[n]:.3f}" if n in prim else "-" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_tracker(report_to: "str | RunTracker | None", run_dir: str | Path) -> tuple[RunTracker, bool]:
    """Return ``(tracker, owned)``: ``report_to`` itself when it is a :class:`RunTracker` (``owned`` False:
    the caller closes it), else a new tracker for ``run_dir`` (``owned`` True).

    Example:
        >>> from derl_gym.runtime.tracking import make_tracker
        >>> tracker, owned = make_tracker("none", "runs/example")
        >>> make_tracker(tracker, "elsewhere") == (tracker, False), owned
        (True, True)
    """
    if isinstance(report_to, RunTracker):
        return report_to, False
    return RunTracker(run_dir, report_to), True
