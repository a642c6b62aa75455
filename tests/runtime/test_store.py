"""ResultStore: keys, failure policy, checkpoints, metadata, durability across connections."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from derl_gym.runtime.spec import InnerResult
from derl_gym.runtime.store import ResultStore


def _ok(canonical="g1", score=0.5, seed=0):
    return InnerResult(expression=canonical, canonical=canonical, score=score, seed=seed,
                       curve=[(10, 0.1), (20, 0.4)], wall_seconds=1.5, env_steps=20, extra={"test": {"L0": 0.25}})


def test_put_get_roundtrip_keyed_by_canonical_spec_and_seed(tmp_path):
    with ResultStore(tmp_path) as store:
        assert store.path == tmp_path / "store.sqlite"
        store.put(_ok(score=0.5), "h1", method="derl", iteration=2)
        store.put(_ok(score=0.7, seed=1), "h1")
        got = store.get("g1", "h1", 0)
        assert got.score == 0.5 and got.curve == [(10, 0.1), (20, 0.4)] and got.extra == {"test": {"L0": 0.25}}
        assert got.wall_seconds == 1.5 and got.env_steps == 20
        assert store.get("g1", "h1", 1).score == 0.7
        assert store.get("g1", "h2", 0) is None
        assert store.get("g2", "h1", 0) is None
        assert store.count() == 2 and store.count("h1") == 2
        row = store.get_row("g1", "h1", 0)
        assert row["method"] == "derl" and row["iteration"] == 2 and row["attempts"] == 1


def test_failures_are_stored_but_not_reused_unless_asked(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.put(InnerResult.failure("g2", "g2", "boom"), "h")
        assert store.get("g2", "h", 0) is None
        assert store.get("g2", "h", 0, reuse_failures=True).error == "boom"
        # a retry that succeeds replaces the failure
        store.put(_ok("g2", 0.9), "h")
        assert store.get("g2", "h", 0).score == 0.9
        assert store.get_row("g2", "h", 0)["attempts"] == 2
        # a later failure never overwrites a success
        store.put(InnerResult.failure("g2", "g2", "late"), "h")
        assert store.get("g2", "h", 0).score == 0.9
    with ResultStore(tmp_path / "t.sqlite", reuse_failures=True) as store:
        store.put(InnerResult.failure("g3", "g3", "boom", status="timeout"), "h")
        assert store.get("g3", "h", 0).status == "timeout"
        assert [r.status for r in store.results(status="timeout")] == ["timeout"]


def test_checkpoints_and_meta(tmp_path):
    with ResultStore(tmp_path) as store:
        assert store.latest_checkpoint("derl") is None
        for it in (1, 2):
            store.save_checkpoint("derl", it, {"iteration": it, "rng": [1, 2]}, expressions=["g1", "g2"],
                                  canonicals=["g1", "g2"], scores=[0.1 * it, 0.2], statuses=["ok", "ok"],
                                  cached=[False, True], stats={"mean": 0.3})
        store.save_checkpoint("random", 1, {"iteration": 1})
        latest = store.latest_checkpoint("derl")
        assert latest["iteration"] == 2 and latest["state"] == {"iteration": 2, "rng": [1, 2]}
        assert latest["scores"] == [0.2, 0.2] and latest["cached"] == [False, True]
        assert [c["iteration"] for c in store.checkpoints("derl")] == [1, 2]
        assert store.methods() == ["derl", "random"]
        store.set_meta("args", {"preset": "alfworld-tiny", "iterations": 3})
        assert store.get_meta("args")["iterations"] == 3
        assert store.get_meta("missing", 7) == 7
        assert set(store.meta()) == {"args"}


def test_writes_survive_sigkill_of_the_writer(tmp_path):
    """A process that stores a result and is then SIGKILLed loses nothing it stored."""
    script = textwrap.dedent(f"""
        import os, signal
        from derl_gym.runtime.spec import InnerResult
        from derl_gym.runtime.store import ResultStore
        store = ResultStore({str(tmp_path)!r})
        for i in range(5):
            store.put(InnerResult(expression=f"g{{i}}", canonical=f"g{{i}}", score=i / 10), "h")
        store.save_checkpoint("derl", 1, {{"ok": True}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9
    with ResultStore(tmp_path) as store:
        assert sorted(r.score for r in store.results("h")) == [0.0, 0.1, 0.2, 0.3, 0.4]
        assert store.latest_checkpoint("derl")["state"] == {"ok": True}
    mode = sqlite3.connect(tmp_path / "store.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_import_evaluations_copies_rows_not_checkpoints_and_keeps_existing_rows(tmp_path):
    source_dir, target_dir = tmp_path / "old", tmp_path / "new"
    with ResultStore(source_dir) as old:
        old.put(_ok("g1", score=0.5), "h1", method="derl", iteration=1)
        old.put(_ok("g1 + g2", score=0.6, seed=3), "h1", method="cmaes", iteration=2)
        old.put(InnerResult.failure("g1/g3", "g1/g3", "timeout", seed=0), "h1")
        old.save_checkpoint("derl", 1, {"step": 1}, expressions=["g1"], scores=[0.5])
        old.set_meta("table1_key", {"budget": 8})
    with ResultStore(target_dir) as new:
        new.put(_ok("g1", score=0.9), "h1", method="outcome")  # same key: must survive the import
        assert new.import_evaluations(source_dir) == 2
        assert new.import_evaluations(source_dir / "store.sqlite") == 0
        assert new.count() == 3
        assert new.get("g1", "h1", 0).score == 0.9
        row = new.get_row("g1 + g2", "h1", 3)
        assert row["score"] == 0.6 and row["method"] == "cmaes" and row["iteration"] == 2
        assert row["curve"] == [(10, 0.1), (20, 0.4)] and row["extra"] == {"test": {"L0": 0.25}}
        assert new.get("g1/g3", "h1", 0) is None and new.get("g1/g3", "h1", 0, reuse_failures=True).status != "ok"
        assert new.methods() == [] and new.get_meta("table1_key") is None
    assert sorted(f.name for f in source_dir.iterdir()) == ["store.sqlite"]  # no -wal/-shm left beside it
    with ResultStore(source_dir) as old:  # only read
        assert old.count() == 3 and old.methods() == ["derl"]


def test_import_evaluations_refuses_a_missing_store_itself_and_a_non_store(tmp_path):
    with ResultStore(tmp_path / "run") as store:
        with pytest.raises(FileNotFoundError, match="no result store"):
            store.import_evaluations(tmp_path / "nowhere")
        with pytest.raises(ValueError, match="into itself"):
            store.import_evaluations(tmp_path / "run")
        junk = tmp_path / "junk.sqlite"
        junk.write_bytes(b"this is not a database" * 100)
        with pytest.raises(ValueError, match="not a derl-gym result store"):
            store.import_evaluations(junk)
        other = tmp_path / "other.sqlite"
        sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
        with pytest.raises(ValueError, match="not a derl-gym result store"):
            store.import_evaluations(other)
        assert store.count() == 0
