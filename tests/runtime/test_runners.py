"""ProcessRunner and RayRunner: results, failures (raise, timeout, killed worker), retries."""

from __future__ import annotations

import os
import time

import pytest

from derl_gym.runtime.runners import ProcessRunner, RayRunner
from derl_gym.runtime.standin import (crashing_inner, echo_inner, failing_inner, selective_inner,
                                      standin_spec)

SPEC = standin_spec()


def test_process_runner_returns_results_in_order_and_reuses_workers():
    with ProcessRunner(max_workers=2, job_fn=echo_inner) as runner:
        futures = runner.submit(SPEC, ["g1", "g1 + g2", "g3*g4", "g2"], seed=3)
        results = [f.result(timeout=60) for f in futures]
    assert [r.expression for r in results] == ["g1", "g1 + g2", "g3*g4", "g2"]
    assert [r.score for r in results] == [0.2, 0.7, 0.5, 0.2]
    assert all(r.ok and r.seed == 3 and r.extra["attempts"] == 1 for r in results)
    # at most two worker processes served the four jobs
    assert len({r.extra["pid"] for r in results}) <= 2
    assert os.getpid() not in {r.extra["pid"] for r in results}


def test_raise_timeout_and_killed_worker_become_failed_results_and_the_run_goes_on():
    start = time.monotonic()
    with ProcessRunner(max_workers=2, timeout=4, job_fn=selective_inner) as runner:
        futures = runner.submit(SPEC, ["g1 + 9", "g1 + 8", "g1 + 7", "g1", "g2 + g3"])
        results = [f.result(timeout=60) for f in futures]
        # the runner still works after a worker was killed
        again = runner.submit(SPEC, ["g4"])[0].result(timeout=60)
    raised, hung, crashed, ok1, ok2 = results
    assert raised.status == "failed" and "RuntimeError" in raised.error and raised.score == 0.0
    assert hung.status == "timeout" and "timeout" in hung.error
    assert crashed.status == "failed" and "exit code 3" in crashed.error
    assert ok1.ok and ok2.ok and again.ok
    assert ok2.score == pytest.approx(0.7)
    assert time.monotonic() - start < 40


def test_retries_rerun_failed_jobs(tmp_path, monkeypatch):
    log = tmp_path / "log.txt"
    monkeypatch.setenv("DERL_GYM_STANDIN_LOG", str(log))
    with ProcessRunner(max_workers=1, retries=2, job_fn=failing_inner) as runner:
        result = runner.submit(SPEC, ["g1"])[0].result(timeout=60)
    assert result.status == "failed"
    assert result.extra["attempts"] == 3
    assert len(result.extra["previous_errors"]) == 2
    assert len(log.read_text().splitlines()) == 3


def test_crashing_job_with_retry_is_still_recorded(tmp_path):
    with ProcessRunner(max_workers=1, retries=1, job_fn=crashing_inner) as runner:
        result = runner.submit(SPEC, ["g2"])[0].result(timeout=60)
    assert result.status == "failed" and "worker process died" in result.error
    assert result.extra["attempts"] == 2


def test_submit_rejects_a_single_string_and_closed_runner():
    runner = ProcessRunner(max_workers=1, job_fn=echo_inner)
    with pytest.raises(TypeError, match="wrap it in a list"):
        runner.submit(SPEC, "g1")
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(SPEC, ["g1"])


def test_eval_splits_and_init_model_reach_the_job():
    with ProcessRunner(max_workers=1, job_fn=echo_inner) as runner:
        result = runner.submit(SPEC, ["g1"], init_model="/tmp/m.zip", eval_splits=["L0", "L2"])[0].result(60)
    assert result.extra["test"] == {"L0": 0.5, "L2": 0.5}
    assert result.extra["init_model"] == "/tmp/m.zip"


def test_ray_runner_runs_two_jobs_on_a_local_instance():
    pytest.importorskip("ray")
    start = time.monotonic()
    # the per-job timeout also covers a Ray worker's cold start (imports), which took ~60 s on 2 busy cores
    with RayRunner(num_cpus=2, timeout=240, job_fn=echo_inner) as runner:
        futures = runner.submit(SPEC, ["g1 + g2", "g3"], seed=1)
        results = [f.result(timeout=300) for f in futures]
    assert [(r.score, r.status, r.error) for r in results] == [(0.7, "ok", None), (0.2, "ok", None)]
    assert all(r.seed == 1 for r in results)
    assert time.monotonic() - start < 300


def test_ray_runner_records_a_raising_job_as_failed():
    pytest.importorskip("ray")
    with RayRunner(num_cpus=1, job_fn=failing_inner) as runner:
        result = runner.submit(SPEC, ["g1"])[0].result(timeout=120)
    assert result.status == "failed" and "RuntimeError" in result.error


_ORPHAN_SCRIPT = """
import sys, time
from derl_gym.runtime.runners import ProcessRunner
from derl_gym.runtime.standin import sleeping_inner, standin_spec
runner = ProcessRunner(max_workers=2, job_fn=sleeping_inner)
futures = runner.submit(standin_spec(), ["g1", "g2"])
deadline = time.time() + 60
while len(runner._busy) < 2 and time.time() < deadline:
    time.sleep(0.1)
print(" ".join(str(w.process.pid) for w in runner._busy), flush=True)
time.sleep(120)
"""


def test_workers_exit_when_the_parent_is_killed():
    """A runner killed with SIGKILL must not leave its workers training on as orphans."""
    import signal
    import subprocess
    import sys

    env = dict(os.environ, DERL_GYM_STANDIN_SLEEP="120")
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(4)  # let both workers finish starting up and enter the (sleeping) job
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 15
        alive = pids
        while alive and time.time() < deadline:
            time.sleep(0.2)
            alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                     open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        assert alive == [], f"orphaned workers still running: {alive}"
    finally:
        parent.kill()
