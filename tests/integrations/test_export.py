"""``derl-gym export``: the best formula with its primitive spec and scores, read from the store only; the JSON
round-trips into the TRL reward function."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from derl_gym.cli import main
from derl_gym.envs.math import math_primitives
from derl_gym.integrations.export import EXPORT_FORMAT, ExportError, export_run
from derl_gym.integrations.trl import AnswerRewardFunction, from_export, trl_reward_function
from derl_gym.rewards.expression import MetaReward
from derl_gym.runtime.store import ResultStore

RUN = ["--backend", "inline", "--no-progress", "--group-size", "3"]


def _evolve(run_dir, *extra):
    assert main(["evolve", "--preset", "standin", "--method", "random", "--iterations", "2", *RUN,
                 "--run-dir", str(run_dir), *extra]) == 0


def _best_in_store(run_dir):
    """The best scored formula as the store's evaluations say (independently of the export's code)."""
    with ResultStore(run_dir) as store:
        rows = [r for r in store.rows(status="ok") if r["method"] == "random"]
    return max(rows, key=lambda r: r["score"])


def test_export_of_an_evolve_run_writes_formula_primitives_spec_and_scores(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _evolve(run_dir, "--test-seeds", "0,1")
    capsys.readouterr()
    assert main(["export", str(run_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == EXPORT_FORMAT and data["command"] == "evolve" and data["preset"] == "standin"
    with ResultStore(run_dir) as store:
        assert data["spec_hash"] == store.get_meta("spec_hash") and data["spec_name"] == store.get_meta("spec")["name"]
    prims = data["primitives"]
    assert prims["factory"] == "derl_gym.runtime.standin:standin_primitives" and prims["kwargs"] == {"num_variables": 4}
    assert [v["variable"] for v in prims["variables"]] == ["g1", "g2", "g3", "g4"]
    assert prims["variables"][0]["name"] == "success" and "solved" in prims["variables"][0]["description"]
    (reward,) = data["rewards"]
    best = _best_in_store(run_dir)
    assert reward["method"] == "random" and reward["formula"] == best["expression"]
    assert reward["validation"] == pytest.approx(best["score"]) and reward["canonical"] == best["canonical"]
    assert set(reward["test"]) == {"L0", "L1", "L2"} and reward["test"]["L0"]["seeds"] == [0, 1]
    assert reward["test"]["L0"]["mean"] == pytest.approx(np.mean(reward["test"]["L0"]["scores"]))
    assert {r["method"] for r in data["reference"]} == {"outcome", "avg"}
    # --out writes the same JSON to a file
    assert main(["export", str(run_dir), "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text()) == data
    assert reward["formula"] in capsys.readouterr().out


def test_export_without_a_final_test_and_of_an_interrupted_run_reads_the_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    _evolve(run_dir, "--no-test")
    data = export_run(run_dir)
    assert data["rewards"][0]["test"] is None and data["reference"] == []
    # a run killed before it finished has no 'evolution' summary: the checkpoints written so far answer
    with sqlite3.connect(run_dir / "store.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key='evolution'")
    again = export_run(run_dir)
    assert again["rewards"][0]["formula"] == data["rewards"][0]["formula"] == _best_in_store(run_dir)["expression"]


def test_export_of_a_compare_run_has_each_methods_formula(tmp_path):
    run_dir = tmp_path / "c"
    assert main(["compare", "--preset", "standin", "--methods", "random,outcome,avg", "--budget", "4", "--seeds", "2",
                 *RUN[:3], "--group-size", "2", "--run-dir", str(run_dir)]) == 0
    data = export_run(run_dir)
    assert data["command"] == "compare"
    by_method = {r["method"]: r for r in data["rewards"]}
    assert set(by_method) == {"random", "outcome", "avg"}
    assert by_method["outcome"]["formula"] == "g1" and by_method["avg"]["formula"] == "(g1 + g2 + g3 + g4)/4"
    random_seeds = by_method["random"]["seeds"]
    assert [s["seed"] for s in random_seeds] == [0, 1]
    assert by_method["random"]["validation"] == max(s["validation"] for s in random_seeds)
    assert set(by_method["random"]["test"]) == {"L0", "L1", "L2"} and len(by_method["random"]["test"]["L0"]["scores"]) == 2


def test_export_errors_for_no_store_and_no_scored_formula(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "has no store.sqlite" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()  # nothing was created
    run_dir = tmp_path / "fail"
    assert main(["evolve", "--preset", "alfworld-tiny", "--inner", "derl_gym.runtime.standin:failing_inner",
                 "--method", "random", "--iterations", "1", *RUN, "--run-dir", str(run_dir), "--retries", "0",
                 "--no-test"]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir)]) == 2
    assert "holds no scored formula (3 stored inner runs" in capsys.readouterr().err
    ResultStore(tmp_path / "bare").close()  # a store no evolve/compare wrote
    with pytest.raises(ExportError, match="was not written by `derl-gym evolve`"):
        export_run(tmp_path / "bare")


def test_a_gsm8k_run_round_trips_into_the_trl_reward_function(tmp_path, shared_data_dir, monkeypatch):
    """An evolve run on the GSM8K preset (stand-in inner job: milliseconds) exported and loaded back: the
    TRL function pays the run's best formula over the math primitives, with no other argument."""
    monkeypatch.setenv("DERL_GYM_DATA", str(shared_data_dir))
    run_dir = tmp_path / "g"
    assert main(["evolve", "--preset", "gsm8k-lm-tiny", "--inner", "standin", "--method", "random", "--iterations",
                 "2", *RUN, "--run-dir", str(run_dir), "--no-test"]) == 0
    assert main(["export", str(run_dir), "--out", str(tmp_path / "reward.json")]) == 0
    data = json.loads((tmp_path / "reward.json").read_text())
    assert data["env"]["train"]["env_id"] == "derl_gym/GSM8K-v0"
    fn = from_export(tmp_path / "reward.json")
    assert isinstance(fn, AnswerRewardFunction) and fn.task == "gsm8k"
    assert fn.formula == data["rewards"][0]["formula"] == _best_in_store(run_dir)["expression"]
    assert fn.primitives.names == [v["name"] for v in data["primitives"]["variables"]] == math_primitives().names
    completions = ["\\boxed{7}", "Step 1: 3 + 4 = 7.\nStep 2: done.\n#### 7", "I think 8", "7 or \\boxed{8}", ""]
    rewards = fn(prompts=[""] * 5, completions=completions, answer=["#### 7"] * 5)
    values = np.array([r.primitive_values for r in fn.records])
    assert len({tuple(v) for v in values}) >= 4
    np.testing.assert_allclose(rewards, MetaReward(fn.formula, math_primitives()).evaluate(values), atol=1e-12)
    assert rewards == trl_reward_function(fn.formula, task="gsm8k")(prompts=[""] * 5, completions=completions,
                                                                     answer=["#### 7"] * 5)


def test_a_standin_run_round_trips_with_an_explicit_task(tmp_path):
    """The stand-in preset's env is a multi-turn placeholder: loading it asks for a task, and with one the
    exported formula over the run's own primitive set (success, progress thirds) scores completions."""
    run_dir = tmp_path / "s"
    _evolve(run_dir, "--no-test")
    path = tmp_path / "reward.json"
    assert main(["export", str(run_dir), "--out", str(path)]) == 0
    with pytest.raises(ValueError, match="pass task='gsm8k' or 'math'"):
        from_export(path)
    formula = json.loads(path.read_text())["rewards"][0]["formula"]
    fn = from_export(path, task="completion")
    assert fn.formula == formula and fn.primitives.names == ["success", "progress_first", "progress_middle",
                                                             "progress_last"]
    out = fn(prompts=["a", "b"], completions=["x", "y"], won=[True, False], progress=[1.0, 0.0])
    np.testing.assert_allclose(out, MetaReward(formula, 4).evaluate(np.array([[1, 1, 1, 1], [0, 0, 0, 0]], float)))
    math_fn = from_export(path, task="gsm8k", primitives=math_primitives())
    assert math_fn.formula == formula and math_fn.primitives.names == math_primitives().names
