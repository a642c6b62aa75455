"""Multi-fidelity (asynchronous successive halving) scheduler: rung metric and thresholds, early stops in the
stand-in and SB3 loops, the cache key of stopped runs, best-formula selection, feedback, resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.runtime.evaluator import Evaluator
from derl_gym.runtime.evolve import run_evolution
from derl_gym.runtime.multi_fidelity import (MultiFidelity, StopRule, rung_metric, rung_threshold, stopped_spec_hash,
                                             update_scores)
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.spec import InnerResult
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore
from tests.kill_helpers import read_store, sigkill_when

SPEC = standin_spec()
TOTAL = SPEC.agent.total_timesteps
# formulas whose stand-in scores differ widely (random proposals are often constants scoring 0)
FORMULAS = ["g1 + 1.5*g4 + 0.3*g2", "g1", "g2", "g3", "g1 + g4", "g4", "g2 + g3", "g1 + 0.5*g4",
            "g1 + 1.5*g4", "g3 + g2 + g1", "2*g4 + g1", "g2*g3"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_rung_metric_and_threshold():
    curve = [(100, 0.0), (200, 0.2), (300, 0.4), (400, 0.9)]
    assert rung_metric(curve, 400, window=0.5) == pytest.approx(0.3)   # points in [200, 400): 0.2, 0.4
    assert rung_metric(curve, 401, window=0.5) == pytest.approx(0.65)  # [200.5, 401): 0.4, 0.9
    assert rung_metric(curve, 150, window=0.1) == 0.0                  # none in [135, 150): last point before
    assert rung_metric([], 100) == 0.0
    assert rung_threshold([0.1, 0.5, 0.3], eta=3, min_runs=4) is None  # too few runs: everyone continues
    assert rung_threshold([0.1, 0.5, 0.3, 0.2], eta=3, min_runs=4) == 0.3   # top ceil(4/3) = 2 continue
    assert rung_threshold([0.1, 0.5, 0.3, 0.2], eta=2, min_runs=2) == 0.3
    with pytest.raises(ValueError, match="rungs"):
        MultiFidelity(rungs=(0.5, 0.25))
    with pytest.raises(ValueError, match="eta"):
        MultiFidelity(eta=1)


def test_update_scores_censor_stopped_runs_below_the_groups_full_budget_runs():
    ok = lambda s: InnerResult("f", "f", s)  # noqa: E731
    stopped = lambda s: InnerResult("f", "f", s, status="stopped")  # noqa: E731
    group = [ok(0.4), stopped(0.9), ok(0.6), InnerResult.failure("f", "f", "boom"), stopped(0.1)]
    assert update_scores(group, None) == [(0, 0.4), (2, 0.6)]           # off: full-budget runs only
    assert update_scores(group, "exclude") == [(0, 0.4), (2, 0.6)]
    assert update_scores(group, "censored") == [(0, 0.4), (1, 0.4), (2, 0.6), (4, 0.1)]
    assert update_scores([stopped(0.3), stopped(0.2)], "censored") == [(0, 0.3), (1, 0.2)]  # no full run: own


def test_scheduler_is_off_by_default(tmp_path):
    seen = []

    def job(spec, expression, **kwargs):
        seen.append(dict(kwargs))
        return standin_inner(spec, expression, **kwargs)

    with ResultStore(tmp_path) as store:
        evaluator = Evaluator(SPEC, InlineRunner(job_fn=job), store)
        assert evaluator.multi_fidelity is None and evaluator.scheduler is None
        result = run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=job), store,
                               iterations=3, group_size=4, report_to="none")
    assert seen and all("stop_rule" not in kw for kw in seen)
    assert all(st == "ok" for r in result.records for st in r.statuses)
    assert result.env_steps == result.trained * TOTAL


def _mf_search(tmp_path, job_fn=standin_inner, **mf):
    """Evaluate FORMULAS in groups of 4 (iterations 1-3) with the scheduler on; returns the per-group results."""
    config = MultiFidelity(**{"min_runs": 4, "eta": 3, **mf})
    store = ResultStore(tmp_path)
    evaluator = Evaluator(SPEC, InlineRunner(job_fn=job_fn), store, method="mf", multi_fidelity=config)
    groups = [[r for r, _ in evaluator.evaluate(FORMULAS[i:i + 4], seed=0, iteration=i // 4 + 1)]
              for i in range(0, len(FORMULAS), 4)]
    return store, evaluator, groups


def test_first_runs_go_full_budget_and_stopped_runs_really_stop_early(tmp_path):
    store, evaluator, groups = _mf_search(tmp_path)
    first = groups[0]
    assert all(r.status == "ok" and r.env_steps == TOTAL for r in first)   # fewer than min_runs before them
    assert all(d["threshold"] is None for r in first for d in r.extra["multi_fidelity"]["decisions"])
    later = [r for g in groups[1:] for r in g]
    stopped = [r for r in later if r.status == "stopped"]
    assert stopped and len(stopped) < len(later)  # some stop, some continue
    rung = MultiFidelity().rung_steps(TOTAL)[0]
    for r in stopped:
        assert r.env_steps < TOTAL and r.env_steps >= rung
        assert all(s < rung for s, _ in r.curve)
        decision = r.extra["multi_fidelity"]["decisions"][-1]
        assert decision["stop"] and decision["metric"] < decision["threshold"]
    for r in later:
        if r.status == "ok":
            assert r.env_steps == TOTAL
    assert evaluator.env_steps == sum(r.env_steps for g in groups for r in g) < len(FORMULAS) * TOTAL
    assert evaluator.stopped == len(stopped)
    store.close()


def _inverted(spec, expression, **kwargs):
    """Stand-in whose stopped runs score 1.0: higher than any full-budget run."""
    result = standin_inner(spec, expression, **kwargs)
    if result.status == "stopped":
        result.score = 1.0
    return result


def test_stopped_runs_never_become_best_nor_answer_a_full_budget_lookup(tmp_path, log):
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, make_optimizer("random", 4, seed=3), InlineRunner(job_fn=_inverted), store,
                               iterations=6, group_size=4, multi_fidelity=MultiFidelity(min_runs=2),
                               report_to="none")
        statuses = [st for r in result.records for st in r.statuses]
        assert "stopped" in statuses and "ok" in statuses
        assert result.best_score < 1.0 and result.best_expression is not None
        best = [r for r in result.records if result.best_expression in r.expressions][0]
        assert best.statuses[best.expressions.index(result.best_expression)] == "ok"
        assert sum(r.failed for r in result.records) == 0   # stopped is not failed
        stopped_rows = [row for row in store.rows() if row["status"] == "stopped"]
        assert stopped_rows and all(row["spec_hash"] != SPEC.spec_hash() for row in stopped_rows)
        full_hash = SPEC.spec_hash()
        only_stopped = [row for row in stopped_rows if store.get(row["canonical"], full_hash, 0) is None]
        assert only_stopped
        for row in only_stopped:
            rung = row["extra"]["multi_fidelity"]["decisions"][-1]["rung_step"]
            assert row["spec_hash"] == stopped_spec_hash(full_hash, rung)
        # a full-budget evaluator on the same store retrains them: a stopped run never answers it
        before = len(_lines(log))
        evaluator = Evaluator(SPEC, InlineRunner(job_fn=_inverted), store)
        out = evaluator.evaluate([row["expression"] for row in only_stopped], seed=0)
        assert evaluator.trained == len({row["canonical"] for row in only_stopped})
        assert len(_lines(log)) == before + evaluator.trained
        assert all(r.status == "ok" and r.env_steps == TOTAL and not cached for r, cached in out)


def test_stopped_result_answers_while_it_would_stop_again_else_is_promoted(tmp_path, log):
    store, evaluator, groups = _mf_search(tmp_path)
    stopped = [r for g in groups for r in g if r.status == "stopped"]
    assert stopped
    n = len(_lines(log))
    again = evaluator.evaluate([stopped[0].expression], seed=0, iteration=9)
    assert again[0][1] is True and again[0][0].status == "stopped" and len(_lines(log)) == n
    # a laxer scheduler (large margin) would not stop it: retrained from scratch to the full budget
    lax = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store, method="mf",
                    multi_fidelity=MultiFidelity(min_runs=4, eta=3, margin=1.0))
    promoted = lax.evaluate([stopped[0].expression], seed=0, iteration=9)
    assert promoted[0][1] is False and promoted[0][0].status == "ok" and promoted[0][0].env_steps == TOTAL
    assert len(_lines(log)) == n + 1
    store.close()


def test_stopped_runs_are_not_retried_by_the_runner(tmp_path, log):
    rule = StopRule(rung_steps=[TOTAL // 3], thresholds=[2.0]).to_dict()   # unreachable: always stops
    runner = InlineRunner(retries=2, job_fn=standin_inner)
    result = runner.submit(SPEC, ["g1 + g4"], seed=0, job_kwargs={"stop_rule": rule})[0].result()
    assert result.status == "stopped" and result.extra["attempts"] == 1 and len(_lines(log)) == 1


def test_sb3_run_stops_at_the_rung_and_its_curve_is_the_full_runs_prefix():
    from derl_gym.runtime.inner import run_inner
    from tests.runtime.test_inner import toy_spec

    spec = toy_spec(total_timesteps=512, eval_episodes=3)
    full = run_inner(spec, "g1 + 0.1*g4", seed=5)
    lax = StopRule(rung_steps=[300], thresholds=[-1.0]).to_dict()   # everyone passes: the same full run
    passed = run_inner(spec, "g1 + 0.1*g4", seed=5, stop_rule=lax)
    stop = StopRule(rung_steps=[300], thresholds=[2.0]).to_dict()
    stopped = run_inner(spec, "g1 + 0.1*g4", seed=5, stop_rule=stop, eval_splits=("L0",))
    assert full.ok and passed.ok and passed.curve == full.curve and passed.env_steps == full.env_steps
    assert stopped.status == "stopped", stopped.error
    assert 300 <= stopped.env_steps < full.env_steps and stopped.extra["multi_fidelity"]["stopped_at"] == 300
    assert stopped.curve == [p for p in full.curve if p[0] < 300] and stopped.curve
    decision = stopped.extra["multi_fidelity"]["decisions"][0]
    assert decision["metric"] == pytest.approx(rung_metric(full.curve, 300))   # what the scheduler computes
    assert 0.0 <= stopped.score <= 1.0 and stopped.extra["validation"]["episodes"] == spec.eval_episodes
    assert "test" not in stopped.extra   # a stopped run never becomes the best formula: no test splits


def test_refuses_multi_fidelity_with_several_seeds_per_formula(tmp_path):
    with ResultStore(tmp_path) as store, pytest.raises(ValueError, match="seeds_per_formula"):
        Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store, seeds_per_formula=2, multi_fidelity=True)


_SCRIPT = textwrap.dedent("""
    import sys
    from derl_gym.agents.meta import make_optimizer
    from derl_gym.runtime import ProcessRunner, ResultStore, run_evolution
    from derl_gym.runtime.multi_fidelity import MultiFidelity
    from derl_gym.runtime.standin import standin_inner, standin_spec

    if __name__ == "__main__":
        spec = standin_spec()
        with ProcessRunner(max_workers=1, job_fn=standin_inner) as runner, ResultStore(sys.argv[1]) as store:
            run_evolution(spec, make_optimizer("random", 4, seed=1), runner, store, iterations=4, group_size=4,
                          multi_fidelity=MultiFidelity(min_runs=3), report_to="none")
""")


def _rows(run_dir):
    rows, checkpoints = read_store(run_dir, "SELECT canonical, spec_hash, attempts, created_at FROM evaluations")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}, checkpoints


def test_a_killed_multi_fidelity_run_resumes_without_redoing_finished_runs(tmp_path, log):
    run_dir, script = tmp_path / "run", tmp_path / "search.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "DERL_GYM_STANDIN_SLEEP": "0.15"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def inside_iteration_2() -> bool:   # (or later): some runs stopped
        rows, checkpoints = _rows(run_dir)
        return len(rows) >= 7 and checkpoints < 4

    sigkill_when(proc, inside_iteration_2, "the search stored no 7 evaluations", poll_s=0.02)
    before, _ = _rows(run_dir)
    executed = len(_lines(log))
    assert executed - len(before) in (0, 1)   # at most the job in flight was lost
    done = subprocess.run([sys.executable, str(script), str(run_dir)], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    after, checkpoints = _rows(run_dir)
    assert checkpoints == 4
    assert all(after[key] == value for key, value in before.items())   # finished runs untouched (attempts 1)
    assert all(attempts == 1 for attempts, _ in after.values())
    assert len(_lines(log)) - executed == len(after) - len(before)     # every new execution is a new row
    with ResultStore(run_dir) as store:
        statuses = [st for cp in store.checkpoints() for st in cp["statuses"]]
    assert "stopped" in statuses and "ok" in statuses
