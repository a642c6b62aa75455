"""derl-gym CLI: list, evolve (stand-in), report, play, compare, and kill -9 + resume of evolve."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import gymnasium as gym
import pytest

from derl_gym.cli import main
from tests.kill_helpers import read_store, sigkill_when

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def test_list_shows_envs_presets_and_primitives(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "derl_gym/ALFWorld-v0" in out and "derl_gym/MetaReward-v0" in out
    assert "alfworld-tiny" in out and "standin" in out
    assert "g1 (success" in out and "g4 (progress_last" in out


def test_evolve_with_standin_prints_iterations_test_table_and_writes_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["evolve", "--preset", "standin", "--method", "random", "--iterations", "3", "--group-size", "4",
            "--backend", "inline", "--run-dir", str(run_dir), "--test-seeds", "0,1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("[random] iteration") == 3
    assert "best formula:" in out
    assert "| outcome | `g1` |" in out and "| avg |" in out and "| best (random) |" in out
    assert "test L0" in out and "±" in out
    for name in ("store.sqlite", "report.md", "validation.png", "structure.png"):
        assert (run_dir / name).exists(), name
        assert str((run_dir / name).resolve()) in out
    # the same command again resumes: every iteration is loaded, nothing is retrained
    n = sqlite3.connect(run_dir / "store.sqlite").execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert main(argv) == 0
    out2 = capsys.readouterr().out
    assert out2.count("(resumed)") == 3
    assert sqlite3.connect(run_dir / "store.sqlite").execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == n
    # another method on the same run dir is refused with a clear message
    with pytest.raises(SystemExit, match="different run"):
        main(argv[:4] + ["derl"] + argv[5:])


def test_report_command_writes_pngs(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["evolve", "--preset", "standin", "--method", "evolution", "--iterations", "2", "--group-size", "3",
                 "--backend", "inline", "--run-dir", str(run_dir), "--no-test"]) == 0
    for name in ("report.md", "validation.png", "structure.png"):
        (run_dir / name).unlink()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert (run_dir / "validation.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "structure.png").stat().st_size > 5000
    report = (run_dir / "report.md").read_text()
    assert "## evolution" in report and "| 2 |" in report and "multiplicative" in report
    assert "report:" in out
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_compare_prints_a_table_with_every_method(tmp_path, capsys):
    run_dir = tmp_path / "c"
    assert main(["compare", "--preset", "standin", "--methods", "random,outcome,avg", "--budget", "4",
                 "--group-size", "2", "--seeds", "2", "--backend", "inline", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for method in ("random", "outcome", "avg"):
        assert f"| {method} |" in out
    assert "seeds [0, 1]" in out and "total wall time" in out
    assert (run_dir / "compare.md").read_text().strip() in out
    data = json.loads((run_dir / "compare.json").read_text())
    assert data["budget"] == 4 and data["iterations"] == 2


class _ToyTextEnv(gym.Env):
    """Say 'open' then 'win' to win."""

    def __init__(self):
        self.observation_space = gym.spaces.Text(100)
        self.action_space = gym.spaces.Text(100)
        self.opened = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.opened = False
        return "A closed box.", {"admissible_commands": ["open", "look"]}

    def step(self, action):
        if action == "open":
            self.opened = True
            return "The box is open.", 0.0, False, False, {"admissible_commands": ["win", "look"], "won": False}
        if action == "win" and self.opened:
            return "You win!", 1.0, True, False, {"admissible_commands": [], "won": True}
        return "Nothing happens.", 0.0, False, False, {"admissible_commands": ["open", "look"], "won": False}


def test_play_reads_commands_and_numbers_from_stdin(monkeypatch, capsys):
    if "test/ToyText-v0" not in gym.registry:
        gym.register("test/ToyText-v0", entry_point=_ToyTextEnv, disable_env_checker=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("0\nwin\nopen\nquit\nlook\n"))
    assert main(["play", "test/ToyText-v0"]) == 0
    out = capsys.readouterr().out
    assert "A closed box." in out and "[0] open" in out
    assert "You win!" in out and "episode 1 finished; won=True" in out
    assert out.index("The box is open.") < out.index("You win!")
    assert "bye (1 episode(s) finished)" in out
    assert out.count("> ") == 4  # 'quit' ends before 'look' is read


@pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").exists(), reason="GSM8K data not present")
def test_play_gsm8k_until_eof(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("The answer is \\boxed{42}\n"))
    kwargs = json.dumps({"split": "test", "data_dir": str(DATA)})
    assert main(["play", "derl_gym/GSM8K-v0", "--kwargs", kwargs, "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "reward" in out and "episode 1" in out and "bye" in out


def test_play_rejects_unknown_env_and_bad_kwargs(capsys):
    assert main(["play", "derl_gym/Nope-v0"]) == 2
    assert main(["play", "derl_gym/GSM8K-v0", "--kwargs", "{bad"]) == 2
    assert "derl-gym list" in capsys.readouterr().err


def _store_rows(run_dir: Path) -> tuple[list[str], int]:
    rows, checkpoints = read_store(run_dir, "SELECT canonical FROM evaluations WHERE status='ok'")
    return [r[0] for r in rows], checkpoints


def test_sigkill_mid_iteration_then_resume_redoes_no_finished_evaluation(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "executions.log"
    env = {**os.environ, "DERL_GYM_STANDIN_LOG": str(log), "DERL_GYM_STANDIN_SLEEP": "0.6"}
    cmd = [sys.executable, "-m", "derl_gym.cli", "evolve", "--preset", "standin", "--method", "derl",
           "--iterations", "4", "--group-size", "4", "--workers", "2", "--run-dir", str(run_dir), "--no-test",
           "--no-cold-start"]  # a random initial policy proposes many distinct formulas: many trainings to kill
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def inside_iteration_2() -> bool:  # (or 3)
        rows, checkpoints = _store_rows(run_dir)
        return len(rows) >= 6 and checkpoints < 4

    sigkill_when(proc, inside_iteration_2, "the run stored no 6 evaluations")  # the CLI and its workers
    time.sleep(1.0)
    finished_before, checkpoints_before = _store_rows(run_dir)
    assert checkpoints_before < 4 and len(finished_before) >= 6
    runs_before = Counter(line.split("\t")[0] for line in log.read_text().splitlines())

    done = subprocess.run(cmd, env={**env, "DERL_GYM_STANDIN_SLEEP": "0"}, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("(resumed)") == checkpoints_before
    assert done.stdout.count("[derl] iteration") == 4
    runs_after = Counter(line.split("\t")[0] for line in log.read_text().splitlines())
    for canonical in finished_before:  # every evaluation finished before the kill ran exactly once
        assert runs_after[canonical] == 1 == runs_before[canonical], canonical
    finished_after, checkpoints_after = _store_rows(run_dir)
    assert checkpoints_after == 4
    assert set(finished_before) <= set(finished_after)
    assert len(finished_after) == len(set(finished_after))


def test_optimizer_kwargs_defaults_and_per_method_json():
    from derl_gym.cli import _optimizer_kwargs, build_parser

    args = build_parser().parse_args(["evolve"])
    assert _optimizer_kwargs(args, "derl") == {}  # the optimizer's own defaults (cold start on)
    assert _optimizer_kwargs(args, "random") == {}
    args = build_parser().parse_args(["compare", "--optimizer-kwargs", '{"derl": {"lr": 0.01}, "cmaes": {"sigma0": 0.5}}'])
    assert _optimizer_kwargs(args, "derl")["lr"] == 0.01 and _optimizer_kwargs(args, "cmaes") == {"sigma0": 0.5}
    assert _optimizer_kwargs(args, "evolution") == {}
    args = build_parser().parse_args(["evolve", "--no-cold-start", "--optimizer-kwargs", '{"kl_coef": 0.1}'])
    assert _optimizer_kwargs(args, "derl-pop") == {"kl_coef": 0.1, "cold_start": False}
    args = build_parser().parse_args(["evolve", "--meta-model", "tiny"])
    assert _optimizer_kwargs(args, "derl") == {"meta_model": "tiny"} and _optimizer_kwargs(args, "random") == {}
    args = build_parser().parse_args(["evolve", "--optimizer-kwargs", "[1]"])
    with pytest.raises(SystemExit, match="JSON object"):
        _optimizer_kwargs(args, "derl")


def test_evolve_says_plainly_when_no_formula_was_scored(tmp_path, capsys):
    run_dir = tmp_path / "fail"
    # a real preset (--preset standin would force the stand-in job) with a job that always raises
    assert main(["evolve", "--preset", "alfworld-tiny", "--inner", "derl_gym.runtime.standin:failing_inner",
                 "--method", "random", "--iterations", "2", "--group-size", "3", "--backend", "inline",
                 "--run-dir", str(run_dir), "--retries", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("no scored formula (all 3 inner runs failed; no update)") == 2
    assert "3 failed" in out
    assert "no scored formula: all 6 inner runs failed" in out and "best formula: " not in out
    assert "| best (random) | no scored formula |" in out  # not tested; the baselines still are
    assert "| outcome | `g1` |" in out


def test_a_library_upgrade_retrains_unless_reuse_across_versions(tmp_path, capsys, monkeypatch):
    from derl_gym.runtime import versions

    real = versions.package_version
    run_dir = tmp_path / "v"
    argv = ["evolve", "--preset", "standin", "--method", "outcome", "--group-size", "2", "--backend", "inline",
            "--run-dir", str(run_dir), "--no-test", "--iterations"]
    assert main(argv + ["1"]) == 0
    assert "versions changed" not in capsys.readouterr().out
    monkeypatch.setattr(versions, "package_version", lambda name: "9.9.9" if name == "torch" else real(name))
    assert main(argv + ["2"]) == 0  # the same run dir resumes (not "a different run")
    out = capsys.readouterr().out
    assert f"torch {real('torch')} -> 9.9.9" in out and "retrained" in out
    assert "[outcome] iteration 2: best" in out and "(1 trained, 1 cached" in out
    monkeypatch.setattr(versions, "package_version", lambda name: "10.0" if name == "torch" else real(name))
    assert main(argv + ["3", "--reuse-across-versions"]) == 0
    out = capsys.readouterr().out
    assert "torch 9.9.9 -> 10.0" in out and "reusing results" in out
    assert "[outcome] iteration 3: best" in out and "(0 trained, 2 cached" in out


def test_iteration_line_counts_stopped_runs_apart_from_failed_ones():
    from derl_gym.cli import _iteration_line
    from derl_gym.runtime.evolve import IterationRecord

    def record(statuses, best):
        return IterationRecord("derl", 1, ["g1", "g2", "g3"], ["g1", "g2", "g3"], [0.5, 0.4, 0.0], statuses,
                               [False] * 3, 0.5 if best else 0.0, 0.5 if best else 0.0, best, trained=3,
                               failed=statuses.count("failed"))

    line = _iteration_line(record(["ok", "stopped", "failed"], "g1"))
    assert "(3 trained, 0 cached, 1 failed, 1 stopped, 0 s)" in line and "best formula: g1" in line
    assert "stopped" not in _iteration_line(record(["ok", "ok", "failed"], "g1"))
    line = _iteration_line(record(["stopped", "stopped", "failed"], None))
    assert "inner runs failed or stopped early" in line and "no update" not in line
    assert "inner runs failed; no update" in _iteration_line(record(["failed"] * 3, None))
