"""Cache keys include the code and library versions; reuse across versions only when asked;
checkpoints of another spec are refused."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.runtime import versions
from derl_gym.runtime.evaluator import Evaluator
from derl_gym.runtime.evolve import run_evolution
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.spec import AgentSpec
from derl_gym.runtime.standin import standin_inner, standin_spec
from derl_gym.runtime.store import ResultStore

SPEC = standin_spec()


@pytest.fixture
def fake_torch(monkeypatch):
    """Return a setter: ``fake_torch("9.9")`` makes torch look like version 9.9 (None: the real one)."""
    real = versions.package_version
    current = {"torch": None}

    def fake(name: str) -> str:
        if name == "torch" and current["torch"] is not None:
            return current["torch"]
        return real(name)

    monkeypatch.setattr(versions, "package_version", fake)
    return lambda version: current.__setitem__("torch", version)


def _runs(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_spec_hash_covers_versions_and_can_leave_them_out(fake_torch, monkeypatch):
    real_torch = versions.package_version("torch")
    before, base = SPEC.spec_hash(), SPEC.spec_hash(include_versions=False)
    assert SPEC.versions()["torch"] == real_torch and SPEC.versions()["derl_gym"]
    fake_torch("9.9.9")
    assert SPEC.versions()["torch"] == "9.9.9"
    assert SPEC.spec_hash() != before
    assert SPEC.spec_hash(include_versions=False) == base
    fake_torch(None)
    assert SPEC.spec_hash() == before
    assert versions.package_version("surely-not-an-installed-package-xyz") == "absent"


def test_source_digest_follows_the_package_code(tmp_path, monkeypatch):
    digest = versions.source_digest()
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert SPEC.versions()["derl_gym_source"] == digest
    before = SPEC.spec_hash()
    monkeypatch.setattr(versions, "source_digest", lambda: "0" * 12)  # as after an edit of a policy module
    assert SPEC.spec_hash() != before
    assert SPEC.spec_hash(include_versions=False) == SPEC.spec_hash(include_versions=False)


def test_language_model_trainers_add_their_stack():
    sb3 = set(versions.code_versions("maskable_ppo"))
    grpo = set(versions.code_versions("grpo"))
    assert {"torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "textworld", "alfworld",
            "scienceworld", "derl_gym"} <= sb3
    assert grpo - sb3 == {"transformers", "trl", "peft", "accelerate"}
    lm_spec = SPEC.replace(agent=AgentSpec(algorithm="grpo"))
    assert set(lm_spec.versions()) == grpo


def test_a_changed_library_version_invalidates_cached_results_unless_reuse_is_asked(tmp_path, fake_torch, log):
    runner = InlineRunner(job_fn=standin_inner)
    with ResultStore(tmp_path) as store:
        first = Evaluator(SPEC, runner, store).evaluate(["g1 + g4"])
        assert first[0][1] is False and _runs(log) == 1
        assert Evaluator(SPEC, runner, store).evaluate(["g4 + g1"])[0][1] is True  # same versions: a hit
        fake_torch("9.9.9")
        again = Evaluator(SPEC, runner, store).evaluate(["g1 + g4"])
        assert again[0][1] is False and _runs(log) == 2  # retrained under the new versions
        fake_torch("10.0")
        reused = Evaluator(SPEC, runner, store, reuse_across_versions=True).evaluate(["g1 + g4"])
        assert reused[0][1] is True and _runs(log) == 2
        assert reused[0][0].ok and reused[0][0].canonical == first[0][0].canonical
        rows = store.rows()
        assert len({r["spec_hash"] for r in rows}) == 2
        assert {r["base_hash"] for r in rows} == {SPEC.spec_hash(include_versions=False)}


def test_a_store_from_before_versions_is_migrated_and_reusable_only_when_asked(tmp_path, log):
    path = tmp_path / "store.sqlite"
    con = sqlite3.connect(path)  # the schema of an older derl-gym: no base_hash column, pure-spec hashes
    con.execute("""CREATE TABLE evaluations (id INTEGER PRIMARY KEY AUTOINCREMENT, canonical TEXT NOT NULL,
        spec_hash TEXT NOT NULL, seed INTEGER NOT NULL, expression TEXT NOT NULL, score REAL NOT NULL,
        status TEXT NOT NULL, curve TEXT NOT NULL DEFAULT '[]', wall_seconds REAL NOT NULL DEFAULT 0,
        env_steps INTEGER NOT NULL DEFAULT 0, error TEXT, model_path TEXT, extra TEXT NOT NULL DEFAULT '{}',
        method TEXT, iteration INTEGER, attempts INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,
        UNIQUE (canonical, spec_hash, seed))""")
    con.execute("INSERT INTO evaluations (canonical, spec_hash, seed, expression, score, status, created_at) "
                "VALUES ('g1', ?, 0, 'g1', 0.123, 'ok', 0)", (SPEC.spec_hash(include_versions=False),))
    con.commit()
    con.close()
    runner = InlineRunner(job_fn=standin_inner)
    with ResultStore(tmp_path) as store:
        reused = Evaluator(SPEC, runner, store, reuse_across_versions=True).evaluate(["g1"])
        assert reused[0][1] is True and reused[0][0].score == 0.123 and _runs(log) == 0
        fresh = Evaluator(SPEC, runner, store).evaluate(["g1"])
        assert fresh[0][1] is False and _runs(log) == 1 and fresh[0][0].score != 0.123


def test_resume_after_a_version_change_warns_and_retrains(tmp_path, fake_torch, log, caplog):
    runner = InlineRunner(job_fn=standin_inner)
    real_torch = versions.package_version("torch")
    with ResultStore(tmp_path / "a") as store:
        run_evolution(SPEC, make_optimizer("outcome", 4), runner, store, 1, 2)
        assert store.get_meta("versions")["torch"] == real_torch
        assert _runs(log) == 1
        fake_torch("9.9.9")
        with caplog.at_level(logging.WARNING, logger="derl_gym.runtime.versions"):
            result = run_evolution(SPEC, make_optimizer("outcome", 4), runner, store, 2, 2)
        assert f"torch {real_torch} -> 9.9.9" in caplog.text and "retrained" in caplog.text
        assert [r.resumed for r in result.records] == [True, False]
        assert result.records[1].trained == 1 and _runs(log) == 2  # g1 again: no hit on the old versions
        assert store.get_meta("versions")["torch"] == "9.9.9"
        assert store.get_meta("versions_history")[-1]["versions"]["torch"] == real_torch
    with ResultStore(tmp_path / "b") as store:
        run_evolution(SPEC, make_optimizer("outcome", 4), runner, store, 1, 2)
        fake_torch("10.0")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="derl_gym.runtime.versions"):
            result = run_evolution(SPEC, make_optimizer("outcome", 4), runner, store, 2, 2,
                                   reuse_across_versions=True)
        assert "reusing results" in caplog.text
        assert result.records[1].trained == 0 and result.records[1].cached == [True, True]


def test_resuming_checkpoints_of_another_spec_raises(tmp_path):
    runner = InlineRunner(job_fn=standin_inner)
    other = SPEC.replace(agent=AgentSpec(algorithm="standin", total_timesteps=2000))
    with ResultStore(tmp_path) as store:
        run_evolution(SPEC, make_optimizer("random", 4, seed=0), runner, store, 1, 3)
        with pytest.raises(ValueError) as info:
            run_evolution(other, make_optimizer("random", 4, seed=0), runner, store, 2, 3)
        text = str(info.value)
        assert SPEC.spec_hash(include_versions=False) in text and other.spec_hash(include_versions=False) in text
        assert "'random'" in text and "new run directory" in text and "same spec" in text
        assert [c["iteration"] for c in store.checkpoints("random")] == [1]  # nothing was written
        # the same spec resumes; another label in the same store is a separate run
        assert len(run_evolution(SPEC, make_optimizer("random", 4, seed=0), runner, store, 2, 3).records) == 2
        assert len(run_evolution(other, make_optimizer("random", 4, seed=0), runner, store, 1, 3,
                                 method="random-long").records) == 1
