"""Evaluator: canonical dedupe and caching, invalid formulas, failure policy, stored as finished."""

from __future__ import annotations

import pytest

from derl_gym.runtime.evaluator import Evaluator, effective_spec_hash
from derl_gym.runtime.runners import InlineRunner, ProcessRunner
from derl_gym.runtime.standin import echo_inner, selective_inner, standin_inner, standin_score, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()


def _runs(log):
    return log.read_text().splitlines() if log.exists() else []


def test_equivalent_formulas_are_trained_once_in_a_batch_and_across_runs(tmp_path, log):
    store = ResultStore(tmp_path)
    with ProcessRunner(max_workers=2, job_fn=standin_inner) as runner:
        evaluator = Evaluator(SPEC, runner, store, method="derl")
        out = evaluator.evaluate(["g1 + 0.5*g4", "0.5*g4 + g1", "g1", "(g4 + 2*g1)/2"], seed=0, iteration=1)
        assert len(_runs(log)) == 2  # g1 + 0.5*g4 (three spellings) and g1
        assert [c for _, c in out] == [False, True, False, True]
        assert out[0][0].score == out[1][0].score == out[3][0].score > out[2][0].score
        assert [r.expression for r, _ in out] == ["g1 + 0.5*g4", "0.5*g4 + g1", "g1", "(g4 + 2*g1)/2"]
        assert out[0][0].canonical == standin_score("g1 + 0.5*g4")[0]
        assert evaluator.trained == 2 and evaluator.cache_hits == 2
        # another spelling later in the run: a store hit, nothing trained
        again = evaluator.evaluate(["g4*0.5 + g1"], seed=0)
        assert again[0][1] is True and again[0][0].score == out[0][0].score
        assert len(_runs(log)) == 2
        # a different seed is a different key
        evaluator.evaluate(["g1"], seed=1)
        assert len(_runs(log)) == 3
    store.close()
    # a new session on the same store (a resumed run) trains nothing it already has
    with ResultStore(tmp_path) as store2, ProcessRunner(max_workers=1, job_fn=standin_inner) as runner:
        out2 = Evaluator(SPEC, runner, store2).evaluate(["g1 + g4/2", "g1"], seed=0)
        assert all(c for _, c in out2)
        assert len(_runs(log)) == 3
        row = store2.get_row(out[0][0].canonical, SPEC.spec_hash(), 0)
        assert row["method"] == "derl" and row["iteration"] == 1


def test_invalid_formula_fails_immediately_without_training(tmp_path, log):
    with ResultStore(tmp_path) as store:
        evaluator = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store)
        out = evaluator.evaluate(["g1 +", "g9", "g2"], seed=0)
    (bad1, c1), (bad2, c2), (good, c3) = out
    assert bad1.status == "failed" and bad1.score == 0.0 and "invalid expression" in bad1.error
    assert bad2.status == "failed" and bad2.extra["invalid"] is True
    assert good.ok and not c3
    assert len(_runs(log)) == 1


def test_failures_are_recorded_reused_in_session_and_retried_by_a_later_run(tmp_path, log):
    canon = "".join
    store = ResultStore(tmp_path)
    with ProcessRunner(max_workers=2, timeout=3, job_fn=selective_inner) as runner:
        evaluator = Evaluator(SPEC, runner, store, canonicalize=lambda t: canon(t.split()))
        out = evaluator.evaluate(["g1 + 9", "g1 + 8", "g1 + 7", "g2 + g3"])
        statuses = [r.status for r, _ in out]
        assert statuses == ["failed", "timeout", "failed", "ok"]
        assert store.count() == 4
        assert {r.status for r in store.results()} == {"failed", "timeout", "ok"}
        runs_before = len(_runs(log))
        # same session: failures are not trained again
        again = evaluator.evaluate(["g1+9"])
        assert again[0][1] is True and again[0][0].status == "failed"
        assert len(_runs(log)) == runs_before
        # a later run (new evaluator) retries the failure
        Evaluator(SPEC, runner, store, canonicalize=lambda t: canon(t.split())).evaluate(["g1 + 9"])
        assert len(_runs(log)) == runs_before + 1
        assert store.get_row("g1+9", SPEC.spec_hash(), 0)["attempts"] == 2
    store.close()


def test_warm_start_and_test_splits_change_the_cache_key(tmp_path, log):
    assert effective_spec_hash(SPEC) == SPEC.spec_hash()
    assert effective_spec_hash(SPEC, "m.zip") != SPEC.spec_hash()
    assert effective_spec_hash(SPEC, eval_splits=["L0"]) != effective_spec_hash(SPEC, eval_splits=["L1"])
    with ResultStore(tmp_path) as store:
        runner = InlineRunner(job_fn=echo_inner)
        Evaluator(SPEC, runner, store, canonicalize=str.strip).evaluate(["g1"])
        out = Evaluator(SPEC, runner, store, canonicalize=str.strip).evaluate(["g1"], init_model="m.zip")
        assert out[0][1] is False and out[0][0].extra["init_model"] == "m.zip"
        test = Evaluator(SPEC, runner, store, eval_splits=["L0", "L2"], canonicalize=str.strip).evaluate(["g1"])
        assert test[0][0].extra["test"] == {"L0": 0.5, "L2": 0.5}
        assert len(_runs(log)) == 3
    with pytest.raises(ValueError, match="not test splits"):
        Evaluator(SPEC, runner, store, eval_splits=["L9"])


def test_model_dir_asks_jobs_to_save_their_agent(tmp_path):
    with ResultStore(tmp_path) as store:
        out = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store,
                        model_dir=tmp_path / "models").evaluate(["g1 + g4"])
    path = out[0][0].model_path
    assert path and path.startswith(str(tmp_path / "models")) and (tmp_path / "models").is_dir()
    with open(path) as fh:
        assert "g1" in fh.read()


def test_saving_evaluator_retrains_a_cached_result_that_has_no_agent(tmp_path, log):
    """DERL-pop needs the trained agent: a score cached by a method that saved none is retrained once."""
    with ResultStore(tmp_path) as store:
        runner = InlineRunner(job_fn=standin_inner)
        plain = Evaluator(SPEC, runner, store).evaluate(["g1 + g4"])
        assert plain[0][0].model_path is None and len(_runs(log)) == 1
        saving = Evaluator(SPEC, runner, store, model_dir=tmp_path / "models")
        first = saving.evaluate(["g1 + g4"])
        assert first[0][1] is False and len(_runs(log)) == 2  # retrained to get the agent
        assert first[0][0].model_path and (tmp_path / "models").is_dir()
        again = saving.evaluate(["g4 + g1"])
        assert again[0][1] is True and len(_runs(log)) == 2  # now the cached result has its agent
        assert again[0][0].model_path == first[0][0].model_path
        assert Evaluator(SPEC, runner, store).evaluate(["g1 + g4"])[0][1] is True  # plain runs still hit
