"""Meta-signal options: several inner seeds per formula (common random numbers), test scoring kept out
of the search, validation variants, compare's test seeds, and the statistics of the Table 1 benchmark."""

from __future__ import annotations

import math
import statistics

import pytest

from derl_gym.runtime.evaluator import Evaluator, effective_spec_hash, inner_seeds
from derl_gym.runtime.evolve import compare, run_evolution
from derl_gym.runtime.report import spearman, t_interval, variance_components
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.spec import InnerResult
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()


def _runs(log):
    return [line.split("\t")[:2] for line in log.read_text().splitlines()] if log.exists() else []


def seed_failing_inner(spec, expression, *, seed=None, init_model=None, save_model=None, eval_splits=()):
    """The stand-in, except that inner seed 1000 always fails (a crashed run)."""
    if seed == 1000:
        return InnerResult.failure(expression, expression, "stand-in crash on seed 1000", seed=seed)
    return standin_inner(spec, expression, seed=seed, init_model=init_model, save_model=save_model,
                         eval_splits=eval_splits)


def test_seeds_per_formula_trains_every_formula_on_the_same_seeds_and_scores_the_mean(tmp_path, log):
    formulas = ["g1", "g1 + 0.5*g4", "g2"]
    with ResultStore(tmp_path) as store:
        single = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store).evaluate(formulas, seed=3)
        assert len(_runs(log)) == 3
        evaluator = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store, seeds_per_formula=3)
        out = evaluator.evaluate(formulas, seed=3)
        seeds = inner_seeds(3, 3)
        assert seeds[0] == 3 and len(set(seeds)) == 3
        # seed 3 was cached from the single-seed call: only the two new seeds trained, per formula
        assert evaluator.trained == 6
        runs = _runs(log)[3:]
        for canonical in {c for c, _ in runs}:  # common random numbers: the same seeds for every formula
            assert sorted(int(s) for c, s in runs if c == canonical) == seeds[1:]
        spec_hash = effective_spec_hash(SPEC)
        for (result, cached), (one, _) in zip(out, single):
            assert not cached
            rows = [store.get(result.canonical, spec_hash, s) for s in seeds]
            assert all(r is not None and r.ok for r in rows)  # each seed's row is stored
            assert result.extra["seeds"] == seeds
            assert result.extra["seed_scores"] == [r.score for r in rows]
            assert result.score == pytest.approx(statistics.fmean(r.score for r in rows))
            assert result.extra["seed_scores"][0] == one.score
        # a second call answers everything from the store
        again = Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store, seeds_per_formula=3).evaluate(
            formulas, seed=3)
        assert all(c for _, c in again) and len(_runs(log)) == 9
        assert [r.score for r, _ in again] == [r.score for r, _ in out]


def test_a_failed_seed_is_left_out_of_the_mean_and_named(tmp_path):
    with ResultStore(tmp_path) as store:
        evaluator = Evaluator(SPEC, InlineRunner(job_fn=seed_failing_inner), store, seeds_per_formula=3)
        (result, _), = evaluator.evaluate(["g1 + 0.5*g4"], seed=0)
        ok_scores = [s for s in result.extra["seed_scores"] if s is not None]
    assert result.ok and result.extra["failed_seeds"] == [1000]
    assert result.extra["seed_scores"][1] is None and len(ok_scores) == 2
    assert result.score == pytest.approx(statistics.fmean(ok_scores))


def test_seeds_per_formula_must_be_positive(tmp_path):
    with ResultStore(tmp_path) as store, pytest.raises(ValueError, match="seeds_per_formula"):
        Evaluator(SPEC, InlineRunner(job_fn=standin_inner), store, seeds_per_formula=0)


class RecordingOptimizer:
    """A fixed-proposal optimizer that records what update() was given."""

    name = "recording"

    def __init__(self):
        self.updates = []
        self.formulas = ["g1", "g1 + 0.5*g4", "g2 + g3", "g4"]

    def propose(self, n):
        return self.formulas[:n]

    def update(self, expressions, scores):
        self.updates.append((list(expressions), list(scores)))
        return {}

    def state_dict(self):
        return {"updates": len(self.updates)}

    def load_state_dict(self, state):
        pass


def test_run_evolution_learns_from_the_seed_mean_and_never_from_test_scores(tmp_path):
    with ResultStore(tmp_path) as store:
        optimizer = RecordingOptimizer()
        seen = []
        result = run_evolution(SPEC, optimizer, InlineRunner(job_fn=standin_inner), store, iterations=1,
                               group_size=4, seed=0, seeds_per_formula=2, score_test_splits=True,
                               on_result=lambda r, c: seen.append(r))
        assert result.trained == 8  # 4 formulas x 2 seeds
        (_, scores), = optimizer.updates
        by_formula = {r.expression: r for r in seen}
        for formula, score in zip(optimizer.formulas, scores):
            r = by_formula[formula]
            assert score == pytest.approx(r.score)  # the mean validation score ...
            assert score == pytest.approx(statistics.fmean(r.extra["seed_scores"]))
            assert set(r.extra["test"]) == {"L0", "L1", "L2"}  # ... test splits were scored,
            assert all(score != pytest.approx(v, abs=1e-9) for v in r.extra["test"].values())  # not learned from
        # resuming with another number of seeds per formula would mix two experiments
        with pytest.raises(ValueError, match="seeds_per_formula"):
            run_evolution(SPEC, RecordingOptimizer(), InlineRunner(job_fn=standin_inner), store, iterations=2,
                          group_size=4, seed=0, seeds_per_formula=1, score_test_splits=True)


def test_compare_counts_trainings_with_seeds_and_retests_on_the_test_seeds(tmp_path, log):
    with ResultStore(tmp_path) as store:
        result = compare(SPEC, ["random", "outcome"], budget=8, seeds=[0, 1], runner=InlineRunner(job_fn=standin_inner),
                         store=store, group_size=2, seeds_per_formula=2, test_seeds=[50, 51])
        assert result.iterations == 2  # 8 trainings / (group 2 x 2 seeds)
        assert all(r.trained <= 8 for r in result.runs["random"].values())
        assert result.test.seeds == [50, 51]
        final = [row for row in store.rows() if row["method"] == "final-test"]
        assert {row["seed"] for row in final} == {50, 51}
        assert result.runs["random"][0].env_steps == result.runs["random"][0].trained * SPEC.agent.total_timesteps
    with ResultStore(tmp_path / "other") as store, pytest.raises(ValueError, match="test_seeds"):
        compare(SPEC, ["outcome"], budget=2, seeds=[0, 1], runner=InlineRunner(job_fn=standin_inner), store=store,
                test_seeds=[5])


def test_validation_variants_never_use_a_test_or_training_game():
    from derl_gym.runtime.presets import VALIDATION_KINDS, get_preset, with_validation

    spec = get_preset("alfworld-l2")
    assert with_validation(spec, "paper") is spec
    seeds = {kind: with_validation(spec, kind).validation_env.kwargs["generator"]["seed"]
             for kind in VALIDATION_KINDS}
    base_seed = spec.train_env.kwargs["generator"]["seed"]
    assert seeds["paper"] == base_seed
    for kind in ("fresh", "unseen-plans"):
        variant = with_validation(spec, kind)
        # an independent generation: no game can be a train, validation or test game of the preset
        assert seeds[kind] != base_seed
        assert all(env.kwargs["generator"]["seed"] == base_seed for env in [spec.train_env, *spec.test_envs.values()])
        assert variant.validation_env.kwargs["task_types"] == spec.train_env.kwargs["task_types"]
        assert variant.spec_hash() != spec.spec_hash()
        assert variant.train_env == spec.train_env and variant.test_envs == spec.test_envs
    with pytest.raises(ValueError, match="unknown validation kind"):
        with_validation(spec, "test")
    with pytest.raises(ValueError, match="ALFWorld"):
        with_validation(SPEC, "fresh")


def test_t_interval_spearman_and_variance_components():
    mean, half = t_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and half == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-3)
    assert math.isnan(t_interval([0.5])[1])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties share ranks
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # planted: formula effects +-0.2, a seed effect shared by every formula, no residual
    effects, seed_fx = [-0.2, 0.0, 0.2], [0.05, -0.05, 0.1, -0.1]
    table = [[0.5 + f + s for s in seed_fx] for f in effects]
    comp = variance_components(table)
    assert comp["residual_var"] == pytest.approx(0.0, abs=1e-12)
    assert comp["formula_var"] == pytest.approx(statistics.variance(effects))
    assert comp["seed_var"] == pytest.approx(statistics.variance(seed_fx))
    noisy = variance_components([[0.5, 0.1, 0.9, 0.3], [0.4, 0.8, 0.2, 0.6]])  # pure noise, equal means
    assert noisy["formula_var"] == 0.0 and noisy["snr"] == 0.0
    with pytest.raises(ValueError, match="complete table"):
        variance_components([[0.1, 0.2], [0.3]])


def test_cli_meta_signal_options(tmp_path, capsys):
    from derl_gym.cli import main

    run_dir = tmp_path / "run"
    args = ["compare", "--preset", "standin", "--methods", "random,outcome", "--budget", "4", "--seeds", "0,1",
            "--group-size", "2", "--seeds-per-formula", "2", "--test-seeds", "20,21", "--score-test-splits",
            "--eval-episodes", "64", "--backend", "inline", "--no-progress", "--run-dir", str(run_dir)]
    assert main(args) == 0
    assert "x 2 inner seeds per formula" in capsys.readouterr().out
    with ResultStore(run_dir) as store:
        rows = store.rows()
        searched = [r for r in rows if r["method"] != "final-test"]
        assert {r["seed"] % 1000 for r in searched} == {0, 1} and {r["seed"] // 1000 for r in searched} == {0, 1}
        assert all("test" in r["extra"] for r in searched)  # --score-test-splits
        assert {r["seed"] for r in rows if r["method"] == "final-test"} == {20, 21}
        assert store.get_meta("spec")["eval_episodes"] == 64
    # the same run directory with another number of seeds per formula is another experiment
    with pytest.raises(SystemExit, match="seeds_per_formula"):
        main([a if a != "2" or i != args.index("--seeds-per-formula") + 1 else "3" for i, a in enumerate(args)])
    with pytest.raises(SystemExit, match="one seed per search seed"):
        main(["compare", "--preset", "standin", "--seeds", "0,1", "--test-seeds", "5", "--backend", "inline",
              "--run-dir", str(tmp_path / "other")])


def test_primitive_shares_count_formulas_using_each_primitive():
    from derl_gym.runtime.report import formula_variables, primitive_shares

    assert formula_variables("g1 + 0.5*(g2 + g10)") == {"g1", "g2", "g10"}
    assert formula_variables("g1 +") == frozenset()
    shares = primitive_shares(["g1", "g1 + g4", "0.5*g4*g2", "3"])
    assert list(shares) == ["g1", "g2", "g4"]
    assert shares == {"g1": 0.5, "g2": 0.25, "g4": 0.5}


def test_alfworld_l2_fast_keeps_the_l2_split_at_a_smaller_budget():
    from derl_gym.runtime.presets import get_preset

    fast, full = get_preset("alfworld-l2-fast"), get_preset("alfworld-l2")
    assert fast.train_env == full.train_env and fast.validation_env == full.validation_env
    assert fast.test_envs == full.test_envs
    assert fast.test_envs["L2"].kwargs["task_types"] == ["pick_cool_then_place_in_recep", "pick_two_obj_and_place"]
    assert fast.agent.total_timesteps < full.agent.total_timesteps
    assert fast.agent.algo_kwargs == full.agent.algo_kwargs
