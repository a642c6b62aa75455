"""The search score (runtime/selection.py): curve tail vs validation, applied to returned results only."""

from __future__ import annotations

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.runtime.evaluator import Evaluator
from derl_gym.runtime.evolve import run_evolution
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.selection import curve_tail, selection_score
from derl_gym.runtime.spec import InnerResult
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()


def half_curve_inner(spec, expression, **kwargs):
    """The stand-in job, with a learning curve that ends at half the validation score."""
    result = standin_inner(spec, expression, **kwargs)
    result.curve = [(100, 0.0), (200, result.score / 2), (300, result.score / 2), (400, result.score / 2)]
    return result


def test_curve_tail_averages_the_last_quarter_and_ignores_non_finite_points():
    curve = [(i, float(i)) for i in range(1, 9)]  # 8 points: the last 2 are 7 and 8
    assert curve_tail(curve) == pytest.approx(7.5)
    assert curve_tail([(1, 0.2), (2, float("nan"))]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="fraction"):
        curve_tail(curve, fraction=0.0)


def test_failed_runs_and_runs_without_a_curve_keep_their_score():
    failed = InnerResult.failure("g1", "g1", "boom")
    assert selection_score(failed, "curve-tail") == failed.score == 0.0
    no_curve = InnerResult(expression="g1", canonical="g1", score=0.4)
    assert selection_score(no_curve, "validation+curve-tail") == 0.4


def test_evaluator_returns_curve_tail_scores_and_the_store_keeps_validation(tmp_path):
    formulas = ["g1", "g1 + 0.5*g4", "g2 - g3"]
    with ResultStore(tmp_path) as store:
        plain = Evaluator(SPEC, InlineRunner(job_fn=half_curve_inner), store).evaluate(formulas, seed=0)
        tail = Evaluator(SPEC, InlineRunner(job_fn=half_curve_inner), store,
                         selection_score="curve-tail").evaluate(formulas, seed=0)
        for (p, _), (t, cached) in zip(plain, tail):
            assert cached  # the second evaluator trains nothing: same store rows
            assert t.score == pytest.approx(curve_tail(p.curve)) == pytest.approx(p.score / 2)
            assert t.extra["validation_score"] == p.score and t.extra["selection_score"] == "curve-tail"
            assert store.get(p.canonical, SPEC.spec_hash(), 0).score == p.score  # stored as trained
        blend = Evaluator(SPEC, InlineRunner(job_fn=half_curve_inner), store,
                          selection_score="validation+curve-tail").evaluate(formulas, seed=0)
        assert [r.score for r, _ in blend] == pytest.approx([0.75 * p.score for p, _ in plain])
    with pytest.raises(ValueError, match="unknown selection score"):
        Evaluator(SPEC, InlineRunner(job_fn=standin_inner), ResultStore(tmp_path / "x"), selection_score="test")


def test_resuming_with_another_selection_score_is_refused(tmp_path):
    with ResultStore(tmp_path) as store:
        optimizer = make_optimizer("random", 4, seed=0)
        run_evolution(SPEC, optimizer, InlineRunner(job_fn=standin_inner), store, 1, 2, report_to="none",
                      selection_score="curve-tail")
        with pytest.raises(ValueError, match="selection_score"):
            run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=standin_inner), store, 2, 2,
                          report_to="none")
