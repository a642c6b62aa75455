"""An honest meta signal: failed / timed-out inner runs never enter an optimizer update, are counted
per iteration, and a method without a scored formula is reported as such (no made-up "g1")."""

from __future__ import annotations

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.runtime.evolve import NO_SCORED_FORMULA, compare, final_test, run_evolution
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.spec import STATUS_TIMEOUT, InnerResult
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fails_g3(spec, expression, *, seed=None, **kwargs) -> InnerResult:
    """Stand-in job that fails every formula reading g3 (a timeout for those that also read g2)."""
    if "g3" in expression:
        status = STATUS_TIMEOUT if "g2" in expression else "failed"
        return InnerResult.failure(expression, expression, "stub failure", seed=seed or 0, status=status)
    return standin_inner(spec, expression, seed=seed, **kwargs)


def fails_g1_alone(spec, expression, *, seed=None, **kwargs) -> InnerResult:
    """Stand-in job that fails the outcome formula ``g1`` and nothing else."""
    if expression.replace(" ", "") == "g1":
        return InnerResult.failure(expression, expression, "stub failure", seed=seed or 0)
    return standin_inner(spec, expression, seed=seed, **kwargs)


def always_fails(spec, expression, *, seed=None, **kwargs) -> InnerResult:
    return InnerResult.failure(expression, expression, "stub failure", seed=seed or 0)


def _spy_updates(optimizer) -> list[tuple[list[str], list[float]]]:
    calls: list[tuple[list[str], list[float]]] = []
    original = optimizer.update

    def update(expressions, scores):
        calls.append((list(expressions), list(scores)))
        return original(expressions, scores)

    optimizer.update = update
    return calls


@pytest.mark.parametrize("name", ["derl", "random"])
def test_failed_and_timed_out_runs_never_reach_the_optimizer(tmp_path, name):
    optimizer = make_optimizer(name, 4, seed=0)
    calls = _spy_updates(optimizer)
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, optimizer, InlineRunner(job_fn=fails_g3), store, 4, 6, seed=0)
        checkpoints = store.checkpoints(name)
    failed = [(e, st) for r in result.records for e, st in zip(r.expressions, r.statuses) if st != "ok"]
    assert failed and len(failed) < 24, "the stub should fail some formulas and not others"
    seen = [e for exprs, _ in calls for e in exprs]
    assert all("g3" not in e for e in seen)
    for record, (exprs, scores), cp in zip(result.records, calls, checkpoints):
        ok = [(e, s) for e, s, st in zip(record.expressions, record.scores, record.statuses) if st == "ok"]
        assert list(zip(exprs, scores)) == ok
        assert record.failed == len(record.expressions) - len(ok) == cp["stats"]["failed"]
        assert cp["stats"]["scored"] == len(ok)
        if ok:
            assert record.best_expression in exprs and record.mean_score == pytest.approx(sum(scores) / len(scores))
        if name == "derl":
            assert cp["stats"]["group_size"] == len(ok)  # the GRPO group is the scored formulas only
    assert result.best_expression is not None and "g3" not in result.best_expression


def test_derl_update_builds_its_group_from_scored_formulas_only():
    opt = make_optimizer("derl", 4, seed=0)
    formulas = opt.propose(6)
    learned = []
    original = opt._learn
    opt._learn = lambda exprs, scores: (learned.append((list(exprs), list(scores))), original(exprs, scores))[1]
    stats = opt.update(formulas, [0.1, None, 0.7, float("nan"), 0.3, float("inf")])
    assert learned == [([formulas[0], formulas[2], formulas[4]], [0.1, 0.7, 0.3])]
    assert stats["n"] == 3 and stats["dropped"] == 3 and stats["group_size"] == 3
    assert stats["mean_score"] == pytest.approx((0.1 + 0.7 + 0.3) / 3)
    evo = make_optimizer("evolution", 4, seed=0)
    texts = evo.propose(3)
    evo.update(texts, [None, 0.4, None])
    assert evo.evaluated == {texts[1]: 0.4}
    assert [t for t, _ in evo.population] == [texts[1]]


def test_an_iteration_without_a_scored_formula_is_recorded_but_not_learned(tmp_path):
    optimizer = make_optimizer("derl", 4, seed=0)
    calls = _spy_updates(optimizer)
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, optimizer, InlineRunner(job_fn=always_fails), store, 2, 3, seed=0)
        assert [c["iteration"] for c in store.checkpoints("derl")] == [1, 2]
        stats = store.latest_checkpoint("derl")["stats"]
        assert stats["failed"] == 3 and stats["scored"] == 0 and stats["skipped_update"] == NO_SCORED_FORMULA
        assert {r.status for r in store.results()} == {"failed"}
    assert calls == [] and optimizer.iteration == 0
    assert [r.failed for r in result.records] == [3, 3]
    assert all(r.best_expression is None for r in result.records)
    assert result.best_expression is None and result.best_canonical is None
    with ResultStore(tmp_path) as store:  # resumed records say the same
        resumed = run_evolution(SPEC, make_optimizer("derl", 4, seed=0), InlineRunner(job_fn=always_fails), store,
                                2, 3, seed=0)
    assert [(r.resumed, r.failed, r.best_expression) for r in resumed.records] == [(True, 3, None)] * 2


def test_compare_skips_a_method_without_a_scored_formula(tmp_path, monkeypatch):
    log = tmp_path / "executions.log"
    monkeypatch.setenv("DERL_GYM_STANDIN_LOG", str(log))
    with ResultStore(tmp_path) as store:
        result = compare(SPEC, ["outcome", "avg"], budget=2, seeds=[0, 1], runner=InlineRunner(job_fn=fails_g1_alone),
                         store=store, group_size=2)
    assert all(r.best_expression is None for r in result.runs["outcome"].values())
    row = result.test.row("outcome")
    assert row.formula is None and row.skipped == [0, 1] and row.scores["L0"] == []
    assert row.statuses == [NO_SCORED_FORMULA] * 2
    assert result.test.row("avg").statuses == ["ok", "ok"]
    md = result.to_markdown()
    outcome_line = next(line for line in md.splitlines() if line.startswith("| outcome |"))
    assert NO_SCORED_FORMULA in outcome_line and "`g1`" not in outcome_line
    # the final test trained avg on both seeds and nothing for outcome (no stand-in "g1")
    executed = log.read_text().splitlines() if log.exists() else []
    assert not any(line.split("\t")[0] == "g1" for line in executed)


def test_final_test_skips_missing_seeds_and_says_so(tmp_path):
    with ResultStore(tmp_path) as store:
        table = final_test(SPEC, {"best": {0: "g1 + g4", 1: None}, "none": None}, InlineRunner(job_fn=standin_inner),
                           seeds=[0, 1], store=store)
    best, none = table.row("best"), table.row("none")
    assert best.skipped == [1] and len(best.scores["L0"]) == 1 and best.statuses == ["ok", NO_SCORED_FORMULA]
    assert none.formula is None and none.skipped == [0, 1]
    md = table.to_markdown()
    assert f"({NO_SCORED_FORMULA} on seeds [1])" in md and f"| none | {NO_SCORED_FORMULA} |" in md
    from derl_gym.runtime.evolve import FinalTest

    assert FinalTest.from_dict(table.to_dict()).row("best").skipped == [1]


def test_report_counts_failed_runs_and_leaves_them_out_of_best_and_mean(tmp_path):
    from derl_gym.runtime.report import write_report

    with ResultStore(tmp_path) as store:
        run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=fails_g3), store, 3, 6)
        checkpoints = store.checkpoints("random")
        text = write_report(tmp_path, store).markdown.read_text()
    with ResultStore(tmp_path / "all-failed") as store:
        run_evolution(SPEC, make_optimizer("outcome", 4), InlineRunner(job_fn=always_fails), store, 1, 2)
        failed_text = write_report(tmp_path / "all-failed", store).markdown.read_text()
    for cp in checkpoints:
        ok = [s for s, st in zip(cp["scores"], cp["statuses"]) if st == "ok"]
        failed = len(cp["scores"]) - len(ok)
        line = next(x for x in text.splitlines() if x.startswith(f"| {cp['iteration']} |"))
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[1] == f"{max(ok):.3f}" and cells[2] == f"{sum(ok) / len(ok):.3f}" and cells[5] == str(failed)
    assert "| 1 | 0.000 | 0.000 | 1 | 1 | 2 |" in failed_text and "| no scored formula |" in failed_text
