"""Runners: execute inner-loop jobs in parallel and hand back futures of :class:`InnerResult`.

Two runners share one interface::

    with ProcessRunner(max_workers=2, timeout=600) as runner:
        futures = runner.submit(spec, ["g1", "g1 + 0.5*g4"], seed=0)
        results = [f.result() for f in futures]

- :class:`ProcessRunner` (default) runs each job in a ``spawn``-ed worker process, at most
  ``max_workers`` at a time. Workers are reused between jobs (imports are paid once per worker),
  but a job that raises, hangs past ``timeout`` or kills its worker (``os._exit``, SIGKILL, the
  OOM killer) only loses that worker: the job becomes a failed :class:`InnerResult` (status
  ``"failed"`` or ``"timeout"``, with the error text) and a fresh worker takes the next job.
- :class:`RayRunner` sends each job to a Ray cluster (``address=None`` starts a local one) as a
  remote task with ``num_cpus_per_job`` / ``num_gpus_per_job`` resources; timeouts are enforced
  with ``ray.cancel(force=True)``.

Both retry a failed job (not one the multi-fidelity scheduler stopped) up to ``retries`` times
(``extra["attempts"]`` counts the tries) and never raise for a failing job. ``job_fn`` must be a picklable module-level function with
:func:`derl_gym.runtime.inner.run_inner`'s signature.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable, Sequence

from derl_gym.runtime.spec import STATUS_FAILED, STATUS_OK, STATUS_STOPPED, STATUS_TIMEOUT, InnerLoopSpec, InnerResult

logger = logging.getLogger(__name__)

JobFn = Callable[..., InnerResult]


def _default_job_fn() -> JobFn:
    from derl_gym.runtime.inner import run_inner

    return run_inner


def _single_thread_env() -> None:
    """Keep each job on one core (one job per core is the runners' model)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@dataclass
class _Job:
    """One submitted job: what to run and the future that receives its result."""

    job_id: int
    job_fn: JobFn
    spec: InnerLoopSpec
    expression: str
    seed: int
    kwargs: dict[str, Any]
    future: Future
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    dispatched: float = 0.0
    running: bool = False


def _call_job(job_fn: JobFn, spec: InnerLoopSpec, expression: str, seed: int, kwargs: dict[str, Any]) -> InnerResult:
    """Run ``job_fn``; an exception becomes a failed result. Returns the job's result."""
    start = time.perf_counter()
    try:
        result = job_fn(spec, expression, seed=seed, **kwargs)
        if not isinstance(result, InnerResult):
            raise TypeError(f"job function {getattr(job_fn, '__name__', job_fn)!r} returned "
                            f"{type(result).__name__}, expected InnerResult")
        return result
    except Exception as exc:  # noqa: BLE001 - a job never takes the run down
        return InnerResult.failure(expression, expression, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                                   seed=seed, wall_seconds=time.perf_counter() - start)


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Start a daemon thread that ends this worker once ``parent_pid`` is no longer its parent.

    ``daemon=True`` workers are only cleaned up by a parent that exits normally; a parent killed by
    SIGTERM/SIGKILL would otherwise leave them training on as orphans.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="derl-gym-parent-watch", daemon=True).start()


def _worker_main(conn, parent_pid: int | None = None) -> None:
    """Worker process loop: receive ``(job_fn, spec, expression, seed, kwargs)``, send
    ``("started", None)`` and then ``("result", InnerResult)``.

    A ``None`` message (or a closed pipe) ends the loop; the death of ``parent_pid`` ends the process.
    """
    import faulthandler

    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    faulthandler.enable()  # a segfault in a job prints the Python stack to the worker's stderr
    _single_thread_env()
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001 - torch is optional for stand-in jobs
        pass
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_fn, spec, expression, seed, kwargs = message
        conn.send(("started", None))
        result = _call_job(job_fn, spec, expression, seed, kwargs)
        try:
            conn.send(("result", result))
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable extra
            conn.send(("result", InnerResult.failure(expression, result.canonical,
                                                     f"could not send the result back: {type(exc).__name__}: {exc}",
                                                     seed=seed, wall_seconds=result.wall_seconds)))


class _Worker:
    """A spawned worker process and the parent's end of its pipe."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True,
                                   name="derl-gym-worker")
        self.process.start()
        child.close()
        self.job: _Job | None = None

    def kill(self) -> None:
        """Kill the process (SIGKILL) and close the pipe."""
        try:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(timeout=5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not within a few seconds."""
        try:
            self.conn.send(None)
            self.process.join(timeout=3)
        except (OSError, BrokenPipeError):
            pass
        self.kill()


class _RunnerBase:
    """Shared bookkeeping: job ids, retries, attempt counting and the context-manager protocol."""

    def __init__(self, timeout: float | None, retries: int, job_fn: JobFn | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None (no limit), got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.timeout = timeout
        self.retries = int(retries)
        self.job_fn = job_fn if job_fn is not None else _default_job_fn()
        self._ids = itertools.count()
        self._closed = False

    def _make_jobs(self, spec: InnerLoopSpec, expressions: Sequence[str], seed: int, init_model: str | None,
                   save_models: Sequence[str | None] | None, eval_splits: Sequence[str],
                   job_kwargs: dict[str, Any] | None = None) -> list[_Job]:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; create a new runner")
        if isinstance(expressions, str):
            raise TypeError("submit expects a list of formulas, got one string; wrap it in a list")
        expressions = list(expressions)
        if save_models is not None and len(save_models) != len(expressions):
            raise ValueError(f"save_models has {len(save_models)} entries for {len(expressions)} expressions; "
                             "pass one path (or None) per expression")
        jobs = []
        for i, expression in enumerate(expressions):
            kwargs: dict[str, Any] = {"init_model": init_model, "eval_splits": list(eval_splits), **(job_kwargs or {})}
            if save_models is not None and save_models[i]:
                kwargs["save_model"] = save_models[i]
            jobs.append(_Job(next(self._ids), self.job_fn, spec, expression, int(seed), kwargs, Future()))
        return jobs

    def _finish(self, job: _Job, result: InnerResult) -> bool:
        """Resolve the job's future with ``result`` or return True when the job should be retried."""
        job.attempts += 1
        if result.status not in (STATUS_OK, STATUS_STOPPED) and job.attempts <= self.retries:  # stopped: not a failure
            job.errors.append(result.error or result.status)
            logger.warning("job %r (seed %s) %s on attempt %d; retrying: %s", job.expression, job.seed,
                           result.status, job.attempts, (result.error or "").splitlines()[:1])
            return True
        result.extra = dict(result.extra or {})
        result.extra["attempts"] = job.attempts
        if job.errors:
            result.extra["previous_errors"] = [e[:2000] for e in job.errors]
        if not job.future.done():
            job.future.set_result(result)
        return False

    def close(self) -> None:  # pragma: no cover - overridden
        """Stop the runner."""
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ProcessRunner(_RunnerBase):
    """Run inner-loop jobs in spawned worker processes, ``max_workers`` at a time.

    ``max_workers=None`` uses ``os.cpu_count()``; ``timeout`` (seconds, per attempt, measured from
    the moment a worker starts the job; a worker that has not started it within ``timeout +
    startup_grace`` seconds of dispatch counts as timed out too) kills a job that runs longer; ``retries`` re-runs a failed
    or timed-out job up to that many times; ``job_fn`` defaults to
    :func:`derl_gym.runtime.inner.run_inner`. ``max_jobs_per_worker`` recycles a worker after that
    many jobs (None: never), which bounds memory leaks of long runs.

    :meth:`submit` returns one :class:`concurrent.futures.Future` per formula; futures always
    resolve to an :class:`InnerResult` (never to an exception).
    """

    def __init__(self, max_workers: int | None = None, timeout: float | None = None, retries: int = 0,
                 job_fn: JobFn | None = None, *, max_jobs_per_worker: int | None = None,
                 startup_grace: float = 120.0) -> None:
        super().__init__(timeout, retries, job_fn)
        self.max_workers = int(max_workers or os.cpu_count() or 1)
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.max_jobs_per_worker = max_jobs_per_worker
        self.startup_grace = float(startup_grace)
        self._ctx = mp.get_context("spawn")
        self._pending: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        self._jobs_done: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, name="derl-gym-process-runner", daemon=True)
        self._thread.start()

    def submit(self, spec: InnerLoopSpec, expressions: Sequence[str], seed: int = 0, init_model: str | None = None,
               *, save_models: Sequence[str | None] | None = None,
               eval_splits: Sequence[str] = (), job_kwargs: dict[str, Any] | None = None) -> list[Future]:
        """Queue one job per formula; returns their futures in the same order.

        ``init_model`` is passed to every job; ``save_models`` (one path or None per formula) asks
        jobs to save their trained agent; ``eval_splits`` asks them to score test splits;
        ``job_kwargs`` are extra keyword arguments for every job (the multi-fidelity ``stop_rule``).
        """
        jobs = self._make_jobs(spec, expressions, seed, init_model, save_models, eval_splits, job_kwargs)
        with self._lock:
            self._pending.extend(jobs)
        self._wakeup.set()
        return [job.future for job in jobs]

    # ------------------------------------------------------------------ dispatcher thread
    def _loop(self) -> None:
        while True:
            with self._lock:
                closed = self._closed
            if closed:
                return
            try:
                self._dispatch()
                self._collect()
            except Exception:  # noqa: BLE001 - keep the dispatcher alive
                logger.exception("process runner dispatcher error")
                time.sleep(0.1)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if not self._pending or len(self._busy) >= self.max_workers:
                    return
                job = self._pending.popleft()
            if job.future.cancelled() or (job.attempts == 0 and not job.future.set_running_or_notify_cancel()):
                continue
            worker = self._idle.pop() if self._idle else _Worker(self._ctx)
            try:
                worker.conn.send((job.job_fn, job.spec, job.expression, job.seed, job.kwargs))
            except Exception as exc:  # noqa: BLE001 - e.g. the spec does not pickle, or a dead idle worker
                worker.kill()
                result = InnerResult.failure(job.expression, job.expression,
                                             f"could not send the job to a worker: {type(exc).__name__}: {exc}",
                                             seed=job.seed)
                if self._finish(job, result):
                    with self._lock:
                        self._pending.appendleft(job)
                continue
            job.dispatched = job.started = time.monotonic()
            job.running = False
            worker.job = job
            self._busy.append(worker)

    def _collect(self) -> None:
        if not self._busy:
            self._wakeup.wait(0.05)
            self._wakeup.clear()
            return
        waitables = [w.conn for w in self._busy] + [w.process.sentinel for w in self._busy]
        timeout = 0.05
        ready = set(mp_wait(waitables, timeout=timeout))
        now = time.monotonic()
        for worker in list(self._busy):
            job = worker.job
            assert job is not None
            result: InnerResult | None = None
            recycle = False
            if worker.conn in ready or worker.process.sentinel in ready:
                dead = worker.process.sentinel in ready
                try:
                    while result is None and worker.conn.poll():
                        kind, payload = worker.conn.recv()
                        if kind == "started":
                            job.started, job.running = time.monotonic(), True
                        else:
                            result = payload
                except (EOFError, OSError):
                    dead = True
                if result is None and dead:
                    worker.process.join(timeout=1)
                    code = worker.process.exitcode
                    reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    result = InnerResult.failure(job.expression, job.expression,
                                                 f"worker process died ({reason}) while running the job",
                                                 seed=job.seed, wall_seconds=now - job.started)
                    recycle = True
            if result is None and self.timeout is not None and (
                    (job.running and now - job.started > self.timeout)
                    or (not job.running and now - job.dispatched > self.timeout + self.startup_grace)):
                result = InnerResult.failure(job.expression, job.expression,
                                             f"job exceeded the timeout of {self.timeout:g} s and was killed",
                                             seed=job.seed, status=STATUS_TIMEOUT, wall_seconds=now - job.started)
                recycle = True
            if result is None:
                continue
            self._busy.remove(worker)
            worker.job = None
            count = self._jobs_done.get(id(worker), 0) + 1
            self._jobs_done[id(worker)] = count
            if recycle or (self.max_jobs_per_worker and count >= self.max_jobs_per_worker):
                self._jobs_done.pop(id(worker), None)
                worker.kill()
            else:
                self._idle.append(worker)
            if self._finish(job, result):
                with self._lock:
                    self._pending.appendleft(job)

    def close(self) -> None:
        """Stop the dispatcher, kill running jobs and stop the workers; unfinished futures get a
        failed result ("runner closed")."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
        self._wakeup.set()
        self._thread.join(timeout=10)
        for worker in self._busy:
            if worker.job is not None and not worker.job.future.done():
                worker.job.future.set_result(InnerResult.failure(worker.job.expression, worker.job.expression,
                                                                 "runner closed before the job finished",
                                                                 seed=worker.job.seed))
            worker.kill()
        for worker in self._idle:
            worker.stop()
        self._busy.clear()
        self._idle.clear()
        for job in pending:
            if not job.future.done():
                job.future.cancel() or job.future.set_result(
                    InnerResult.failure(job.expression, job.expression, "runner closed before the job started",
                                        seed=job.seed))


# ---------------------------------------------------------------------------------------- Ray

def _ray_job(job_fn: JobFn, spec: InnerLoopSpec, expression: str, seed: int, kwargs: dict[str, Any]) -> InnerResult:
    """The body of a Ray task: one job on one (or more) CPUs; returns its result."""
    _single_thread_env()
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001
        pass
    return _call_job(job_fn, spec, expression, seed, kwargs)


class RayRunner(_RunnerBase):
    """Run inner-loop jobs as Ray tasks (local Ray instance or a cluster).

    ``address=None`` starts a local Ray instance (``num_cpus`` CPUs, default all; no dashboard);
    ``address="auto"`` or ``"ray://host:10001"`` joins a cluster. Each job asks for
    ``num_cpus_per_job`` CPUs and ``num_gpus_per_job`` GPUs. ``timeout`` (seconds per attempt,
    from the moment the task is handed to Ray, so it includes a new worker's start-up, about a minute on
    2 busy cores; at most as many tasks as fit in the cluster are in flight so that they start at once) cancels a job with ``ray.cancel(force=True)``; ``retries``
    re-runs failed jobs. Futures resolve to :class:`InnerResult`; Ray errors (task raised, worker
    died, cancelled) become failed results. ``close()`` shuts Ray down only if this runner started it.
    """

    def __init__(self, address: str | None = None, num_cpus_per_job: float = 1, num_gpus_per_job: float = 0,
                 timeout: float | None = None, retries: int = 0, job_fn: JobFn | None = None, *,
                 num_cpus: int | None = None, max_in_flight: int | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        super().__init__(timeout, retries, job_fn)
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is an extra
            raise ImportError("RayRunner needs ray: pip install 'derl-gym[ray]'") from exc
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            init_kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                           "log_to_driver": False, "configure_logging": True}
            if address is not None:
                init_kwargs["address"] = address
            elif num_cpus is not None:
                init_kwargs["num_cpus"] = int(num_cpus)
            if runtime_env:
                init_kwargs["runtime_env"] = runtime_env
            ray.init(**init_kwargs)
            self._owns_ray = True
        self.num_cpus_per_job = num_cpus_per_job
        self.num_gpus_per_job = num_gpus_per_job
        if max_in_flight is None:
            resources = ray.cluster_resources()
            slots = int(resources.get("CPU", 1) // max(num_cpus_per_job, 1e-9)) if num_cpus_per_job else 10**6
            if num_gpus_per_job:
                slots = min(slots, int(resources.get("GPU", 0) // num_gpus_per_job))
            max_in_flight = max(1, slots)
        self.max_in_flight = int(max_in_flight)
        self._remote = ray.remote(num_cpus=num_cpus_per_job, num_gpus=num_gpus_per_job, max_retries=0)(_ray_job)
        self._pending: deque[_Job] = deque()
        self._running: dict[Any, _Job] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="derl-gym-ray-runner", daemon=True)
        self._thread.start()

    def submit(self, spec: InnerLoopSpec, expressions: Sequence[str], seed: int = 0, init_model: str | None = None,
               *, save_models: Sequence[str | None] | None = None,
               eval_splits: Sequence[str] = (), job_kwargs: dict[str, Any] | None = None) -> list[Future]:
        """Queue one Ray task per formula; returns their futures in the same order (see
        :meth:`ProcessRunner.submit` for the keyword arguments)."""
        jobs = self._make_jobs(spec, expressions, seed, init_model, save_models, eval_splits, job_kwargs)
        with self._lock:
            self._pending.extend(jobs)
        return [job.future for job in jobs]

    def _loop(self) -> None:
        ray = self._ray
        while True:
            with self._lock:
                if self._closed:
                    return
                while self._pending and len(self._running) < self.max_in_flight:
                    job = self._pending.popleft()
                    if job.attempts == 0 and not job.future.set_running_or_notify_cancel():
                        continue
                    ref = self._remote.remote(job.job_fn, job.spec, job.expression, job.seed, job.kwargs)
                    job.started = time.monotonic()
                    self._running[ref] = job
                refs = list(self._running)
            if not refs:
                time.sleep(0.05)
                continue
            try:
                ready, _ = ray.wait(refs, num_returns=1, timeout=0.1)
            except Exception:  # noqa: BLE001
                logger.exception("ray.wait failed")
                time.sleep(0.1)
                continue
            now = time.monotonic()
            finished: list[tuple[Any, _Job, InnerResult]] = []
            for ref in ready:
                job = self._running[ref]
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError ...
                    result = InnerResult.failure(job.expression, job.expression,
                                                 f"ray task failed: {type(exc).__name__}: {exc}",
                                                 seed=job.seed, wall_seconds=now - job.started)
                finished.append((ref, job, result))
            if self.timeout is not None:
                for ref, job in list(self._running.items()):
                    if ref not in ready and now - job.started > self.timeout:
                        try:
                            ray.cancel(ref, force=True)
                        except Exception:  # noqa: BLE001
                            logger.exception("ray.cancel failed")
                        finished.append((ref, job, InnerResult.failure(
                            job.expression, job.expression, f"job exceeded the timeout of {self.timeout:g} s "
                            "and was cancelled", seed=job.seed, status=STATUS_TIMEOUT, wall_seconds=now - job.started)))
            for ref, job, result in finished:
                with self._lock:
                    self._running.pop(ref, None)
                    if self._finish(job, result):
                        self._pending.appendleft(job)

    def close(self) -> None:
        """Stop dispatching, cancel running tasks, fail unfinished futures and shut Ray down if
        this runner started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._thread.join(timeout=10)
        for ref, job in list(self._running.items()):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
            if not job.future.done():
                job.future.set_result(InnerResult.failure(job.expression, job.expression,
                                                          "runner closed before the job finished", seed=job.seed))
        for job in self._pending:
            if not job.future.done() and not job.future.cancel():
                job.future.set_result(InnerResult.failure(job.expression, job.expression,
                                                          "runner closed before the job started", seed=job.seed))
        self._running.clear()
        self._pending.clear()
        if self._owns_ray:
            self._ray.shutdown()


class InlineRunner(_RunnerBase):
    """Run jobs one after another in the calling process (no isolation, no timeout).

    For debugging, notebooks and tests: a job that kills the process kills the caller. ``submit``
    runs the jobs before it returns and hands back already-resolved futures.

    Example:
        >>> from derl_gym.runtime.runners import InlineRunner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> with InlineRunner(job_fn=standin_inner) as runner:
        ...     futures = runner.submit(standin_spec(), ["g1 + g2", "g1 * 0"], seed=0)
        >>> [round(future.result().score, 3) for future in futures], futures[0].result().extra["attempts"]
        ([0.641, 0.0], 1)
    """

    def __init__(self, retries: int = 0, job_fn: JobFn | None = None) -> None:
        super().__init__(None, retries, job_fn)

    def submit(self, spec: InnerLoopSpec, expressions: Sequence[str], seed: int = 0, init_model: str | None = None,
               *, save_models: Sequence[str | None] | None = None,
               eval_splits: Sequence[str] = (), job_kwargs: dict[str, Any] | None = None) -> list[Future]:
        """Run one job per formula now; returns resolved futures in the same order."""
        jobs = self._make_jobs(spec, expressions, seed, init_model, save_models, eval_splits, job_kwargs)
        for job in jobs:
            job.future.set_running_or_notify_cancel()
            while self._finish(job, _call_job(job.job_fn, job.spec, job.expression, job.seed, job.kwargs)):
                pass
        return [job.future for job in jobs]

    def close(self) -> None:
        """Mark the runner closed."""
        self._closed = True


def make_runner(backend: str = "process", *, workers: int | None = None, timeout: float | None = None,
                retries: int = 0, job_fn: JobFn | None = None, ray_address: str | None = None,
                num_gpus_per_job: float = 0) -> ProcessRunner | RayRunner:
    """Return a :class:`ProcessRunner` (``backend="process"``), :class:`RayRunner` (``"ray"``) or
    :class:`InlineRunner` (``"inline"``, in-process, for debugging).

    Example:
        >>> from derl_gym.runtime.runners import InlineRunner, make_runner
        >>> from derl_gym.runtime.standin import standin_inner, standin_spec
        >>> runner = make_runner("inline", job_fn=standin_inner)
        >>> isinstance(runner, InlineRunner), runner.submit(standin_spec(), ["g1"])[0].result().status
        (True, 'ok')
        >>> runner.close()
    """
    if backend == "process":
        return ProcessRunner(max_workers=workers, timeout=timeout, retries=retries, job_fn=job_fn)
    if backend == "inline":
        return InlineRunner(retries=retries, job_fn=job_fn)
    if backend == "ray":
        return RayRunner(address=ray_address, timeout=timeout, retries=retries, job_fn=job_fn,
                         num_gpus_per_job=num_gpus_per_job, num_cpus=workers if ray_address is None else None)
    raise ValueError(f"unknown backend {backend!r}; choose 'process', 'ray' or 'inline'")


__all__ = ["ProcessRunner", "RayRunner", "InlineRunner", "make_runner", "STATUS_OK", "STATUS_FAILED", "STATUS_TIMEOUT"]
