"""run_evolution (iterations, checkpoints, resume, DERL-pop warm starts), final_test, compare, report."""

from __future__ import annotations

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.runtime.evolve import compare, final_test, run_evolution
from derl_gym.runtime.report import classify_formula, structure_shares, write_report
from derl_gym.runtime.runners import InlineRunner, ProcessRunner
from derl_gym.runtime.standin import standin_inner, standin_score, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()


def test_run_evolution_records_checkpoints_and_best(tmp_path):
    seen = []
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, make_optimizer("random", 4, seed=1), InlineRunner(job_fn=standin_inner), store,
                               iterations=3, group_size=4, seed=0, progress=seen.append)
        assert [r.iteration for r in result.records] == [1, 2, 3] == [r.iteration for r in seen]
        assert [c["iteration"] for c in store.checkpoints("random")] == [1, 2, 3]
        all_scores = [s for r in result.records for s in r.scores]
        assert result.best_score == max(all_scores)
        assert result.best_score == pytest.approx(standin_score(result.best_expression)[1], abs=0.021)
        for r in result.records:
            assert len(r.expressions) == 4 and r.mean_score == pytest.approx(sum(r.scores) / 4)
        assert result.trained == store.count(SPEC.spec_hash()) <= 12
        assert result.trained + result.cache_hits >= 12 - sum(
            st != "ok" and c for r in result.records for st, c in zip(r.statuses, r.cached))


@pytest.mark.parametrize("method", ["random", "evolution"])
def test_resume_gives_the_same_run_as_an_uninterrupted_one(tmp_path, method):
    runner = InlineRunner(job_fn=standin_inner)
    with ResultStore(tmp_path / "full") as store:
        full = run_evolution(SPEC, make_optimizer(method, 4, seed=3), runner, store, 4, 3, seed=0)
    with ResultStore(tmp_path / "cut") as store:
        run_evolution(SPEC, make_optimizer(method, 4, seed=3), runner, store, 2, 3, seed=0)
        trained_before = store.count()
        resumed = run_evolution(SPEC, make_optimizer(method, 4, seed=3), runner, store, 4, 3, seed=0)
    assert [r.resumed for r in resumed.records] == [True, True, False, False]
    assert [r.expressions for r in resumed.records] == [r.expressions for r in full.records]
    assert [r.scores for r in resumed.records] == [r.scores for r in full.records]
    assert resumed.best_expression == full.best_expression
    assert resumed.trained == full.trained and trained_before <= full.trained


def test_derl_pop_warm_starts_from_the_previous_best_model(tmp_path):
    with ResultStore(tmp_path) as store:
        optimizer = make_optimizer("derl-pop", 4, seed=0)
        assert optimizer.warm_start_inner
        result = run_evolution(SPEC, optimizer, InlineRunner(job_fn=standin_inner), store, 3, 3, seed=0)
        models = tmp_path / "models" / "derl-pop"
        assert models.is_dir() and any(models.iterdir())
        first, second = result.records[0], result.records[1]
        assert first.best_model_path and first.best_model_path.startswith(str(models))
        rows = [row for row in store.rows() if row["iteration"] == 2]
        assert rows and all(row["extra"].get("init_model") == first.best_model_path for row in rows)
        assert second.best_model_path != first.best_model_path or second.cached


def test_final_test_table_over_seeds(tmp_path):
    with ResultStore(tmp_path) as store, ProcessRunner(max_workers=2, job_fn=standin_inner) as runner:
        table = final_test(SPEC, {"best": "g1 + g4", "outcome": "g1", "avg": "(g1+g2+g3+g4)/4"}, runner,
                           seeds=[0, 1], store=store)
    assert table.splits == ["L0", "L1", "L2"] and table.seeds == [0, 1]
    best, outcome = table.row("best"), table.row("outcome")
    assert len(best.scores["L0"]) == 2 and best.statuses == ["ok", "ok"]
    assert best.mean("L0") > outcome.mean("L0")
    assert best.std("L0") > 0  # seeds differ
    md = table.to_markdown()
    assert "| best | `g1 + g4` |" in md and "±" in md and "test L2" in md
    with pytest.raises(KeyError, match="known"):
        table.row("nope")


def test_compare_same_budget_per_method_and_report(tmp_path):
    with ResultStore(tmp_path) as store, ProcessRunner(max_workers=2, job_fn=standin_inner) as runner:
        result = compare(SPEC, ["random", "evolution", "outcome", "avg"], budget=6, seeds=[0, 1], runner=runner,
                         store=store, group_size=3)
        assert result.iterations == 2
        for method in ["random", "evolution", "outcome", "avg"]:
            assert set(result.runs[method]) == {0, 1}
            assert all(len(r.records) == 2 for r in result.runs[method].values())
        assert result.runs["outcome"][0].trained == 1  # one formula, trained once per seed
        assert result.runs["outcome"][0].best_expression == "g1"
        md = result.to_markdown()
        for method in ["random", "evolution", "outcome", "avg"]:
            assert f"| {method} |" in md
        assert store.get_meta("compare_markdown") == md
        report = write_report(tmp_path, store)
    # seeds in parallel threads give the same runs as seeds one after another
    with ResultStore(tmp_path / "seq") as store2:
        seq = compare(SPEC, ["random", "evolution"], budget=6, seeds=[0, 1], runner=InlineRunner(job_fn=standin_inner),
                      store=store2, group_size=3, parallel_seeds=False)
    for method in ("random", "evolution"):
        for seed in (0, 1):
            assert [r.expressions for r in seq.runs[method][seed].records] == \
                [r.expressions for r in result.runs[method][seed].records]
    text = report.markdown.read_text()
    assert text.count("## ") >= 5
    assert "## random" in text and "## random/seed0" not in text and "averaged over 2 seeds" in text
    for plot in report.plots:
        assert plot.stat().st_size > 5000 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("formula,expected", [
    ("g1", "single"), ("2*g3 - 1", "single"), ("g1 + 0.5*g4", "additive"), ("(g1 + g2 + g3)/3", "additive"),
    ("g1*g4", "multiplicative"), ("g1 + g2/g3", "multiplicative"), ("g1*(g2 + 1)", "multiplicative"),
    ("0.5", "degenerate"), ("g1 +", "degenerate"), ("-(g2 - g1)", "additive"),
])
def test_classify_formula(formula, expected):
    assert classify_formula(formula) == expected


def test_structure_shares_count_failed_runs_as_degenerate():
    shares = structure_shares(["g1 + g2", "g1*g2", "g1", "g1 + g3"], ["ok", "ok", "ok", "failed"])
    assert shares == {"additive": 0.25, "multiplicative": 0.25, "single": 0.25, "degenerate": 0.25}


class _RaisingOptimizer:
    """A random-search optimizer whose ``propose`` raises from iteration ``fail_at`` on."""

    name = "raising"

    def __init__(self, fail_at: int) -> None:
        self._inner, self._calls, self._fail_at = make_optimizer("random", 4, seed=0), 0, fail_at

    def propose(self, n):
        self._calls += 1
        if self._calls >= self._fail_at:
            raise RuntimeError("optimizer broke midway")
        return self._inner.propose(n)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _spy_trackers(monkeypatch):
    """Record every ``(tracker, owned)`` that evolve's ``make_tracker`` returns; returns that list."""
    import derl_gym.runtime.evolve as evolve
    from derl_gym.runtime.tracking import make_tracker

    made = []

    def spy(report_to, run_dir):
        made.append(make_tracker(report_to, run_dir))
        return made[-1]

    monkeypatch.setattr(evolve, "make_tracker", spy)
    return made


def test_a_run_that_raises_midway_closes_the_tracker_it_made(tmp_path, monkeypatch):
    pytest.importorskip("torch.utils.tensorboard")
    made = _spy_trackers(monkeypatch)
    with ResultStore(tmp_path) as store, pytest.raises(RuntimeError, match="broke midway"):
        run_evolution(SPEC, _RaisingOptimizer(fail_at=2), InlineRunner(job_fn=standin_inner), store, 3, 2,
                      report_to="tensorboard")
    owned = [tracker for tracker, own in made if own]
    assert len(owned) == 1 and not owned[0].enabled  # closed: its writers are gone
    events = list((tmp_path / "tensorboard" / "raising").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100  # iteration 1 was logged and flushed before the error


def test_a_tracker_passed_in_stays_open_and_compare_closes_its_own_on_error(tmp_path, monkeypatch):
    pytest.importorskip("torch.utils.tensorboard")
    from derl_gym.runtime.tracking import RunTracker

    with RunTracker(tmp_path, "tensorboard") as tracker, ResultStore(tmp_path) as store:
        with pytest.raises(RuntimeError):
            run_evolution(SPEC, _RaisingOptimizer(fail_at=2), InlineRunner(job_fn=standin_inner), store, 3, 2,
                          report_to=tracker)
        assert tracker.enabled  # the caller's tracker is the caller's to close
    made = _spy_trackers(monkeypatch)
    # compare: "random" runs and is logged, then building the "evolution" optimizer raises
    with ResultStore(tmp_path / "cmp") as store, pytest.raises(TypeError, match="no_such_option"):
        compare(SPEC, ["random", "evolution"], budget=4, seeds=[0], runner=InlineRunner(job_fn=standin_inner),
                store=store, group_size=2, optimizer_kwargs={"evolution": {"no_such_option": 1}},
                report_to="tensorboard")
    owned = [tracker for tracker, own in made if own]
    assert len(owned) == 1 and not owned[0].enabled  # compare made one (its run_evolution calls reuse it), closed
    assert list((tmp_path / "cmp" / "tensorboard" / "random" / "seed0").glob("events.out.tfevents.*"))
