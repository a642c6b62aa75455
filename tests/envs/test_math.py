"""Tests for the GSM8K / MATH envs, data loading, answer checking and the math primitives."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import derl_gym  # noqa: F401  (registers the envs)
from derl_gym.envs.math import (
    CHARSET,
    GSM8KEnv,
    MATHEnv,
    MathDataError,
    MathDataNotFoundError,
    MathGrader,
    count_step_markers,
    extract_boxed,
    extract_gsm8k_answer,
    extract_math_answer,
    gsm8k_equivalent,
    gsm8k_ground_truth,
    load_gsm8k,
    load_math,
    loose_match,
    math_equivalent,
    math_primitives,
    normalize_text,
    parse_number,
    step_structure_score,
)
from derl_gym.rewards.primitives import Step, Trajectory


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Never try the hub in tests, and do not let a user's DERL_GYM_DATA leak into path tests."""
    monkeypatch.setenv("DERL_GYM_OFFLINE", "1")


@pytest.fixture(scope="module")
def gsm8k_test_env(shared_data_dir):
    return GSM8KEnv("test", data_dir=shared_data_dir, seed=0)


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout=5.0) as owned:
        yield owned


# ------------------------------------------------------------------------------ data loading

def test_gsm8k_splits_sizes_disjoint_deterministic(shared_data_dir):
    n_lines = sum(1 for line in open(shared_data_dir / "gsm8k" / "train.jsonl") if line.strip())
    train = load_gsm8k("train", data_dir=shared_data_dir)
    val = load_gsm8k("validation", data_dir=shared_data_dir)
    test = load_gsm8k("test", data_dir=shared_data_dir)
    assert len(train) + len(val) == n_lines
    assert len(val) == round(0.2 * n_lines)
    train_ids, val_ids = {p.problem_id for p in train}, {p.problem_id for p in val}
    assert not train_ids & val_ids
    assert not {p.problem_id for p in test} & (train_ids | val_ids)
    # deterministic: a second load gives the same partition
    assert [p.problem_id for p in load_gsm8k("validation", data_dir=shared_data_dir)] == [p.problem_id for p in val]
    # ground truths are numbers without commas
    assert all(parse_number(p.ground_truth) is not None and "," not in p.ground_truth for p in train)


def test_validation_split_independent_of_file_order(shared_data_dir, tmp_path):
    lines = [line for line in open(shared_data_dir / "gsm8k" / "train.jsonl") if line.strip()][:200]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("".join(lines))
    val_a = {p.question for p in load_gsm8k("validation", data_dir=tmp_path)}
    rng = np.random.default_rng(1)
    (tmp_path / "gsm8k" / "train.jsonl").write_text("".join(rng.permutation(lines)))
    val_b = {p.question for p in load_gsm8k("validation", data_dir=tmp_path)}
    assert len(val_a) == 40 and val_a == val_b


def test_data_dir_may_be_dataset_folder_and_env_var(shared_data_dir, monkeypatch):
    direct = load_gsm8k("test", data_dir=shared_data_dir / "gsm8k")
    monkeypatch.setenv("DERL_GYM_DATA", str(shared_data_dir))
    via_env = load_gsm8k("test")
    assert len(direct) == len(via_env) > 1000
    assert direct[0] == via_env[0]


def test_math_loading_filters_and_holdout(shared_data_dir):
    test = load_math("test", data_dir=shared_data_dir)
    n_lines = sum(1 for line in open(shared_data_dir / "math" / "math500_test.jsonl") if line.strip())
    assert len(test) == n_lines
    assert all(p.ground_truth for p in test)
    lvl5 = load_math("test", data_dir=shared_data_dir, levels=[5])
    assert 0 < len(lvl5) < len(test) and all(p.level == 5 for p in lvl5)
    algebra = load_math("test", data_dir=shared_data_dir, subjects=["algebra"])
    assert algebra and all(p.subject == "Algebra" for p in algebra)
    train = load_math("train", data_dir=shared_data_dir, holdout_from="test")
    val = load_math("validation", data_dir=shared_data_dir, holdout_from="test")
    assert len(val) == round(0.2 * n_lines) and len(train) + len(val) == n_lines
    assert not {p.problem_id for p in train} & {p.problem_id for p in val}


def test_math_train_without_train_file_explains(shared_data_dir):
    with pytest.raises(MathDataNotFoundError) as err:
        load_math("train", data_dir=shared_data_dir)
    assert "holdout_from='test'" in str(err.value)
    assert str(shared_data_dir / "math" / "train.jsonl") in str(err.value)


def test_math_split_as_file_and_answer_from_boxed(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"problem": "What is 1/2 + 1/2?", "solution": "It is $\\boxed{\\frac{2}{2}}$, i.e. 1."},
            {"problem": "2+2?", "solution": "\\boxed{4}", "answer": "4", "level": "Level 2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load_math(str(path))
    assert [p.ground_truth for p in problems] == ["\\frac{2}{2}", "4"]
    assert problems[1].level == 2
    env = MATHEnv(data_file=path, seed=0)
    assert env.num_problems == 2


def test_missing_data_error_lists_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DERL_GYM_DATA", str(tmp_path / "envdata"))
    with pytest.raises(MathDataNotFoundError) as err:
        GSM8KEnv("train", data_dir=tmp_path / "nowhere")
    message = str(err.value)
    for expected in (tmp_path / "nowhere" / "gsm8k" / "train.jsonl", tmp_path / "nowhere" / "train.jsonl",
                     tmp_path / "envdata" / "gsm8k" / "train.jsonl"):
        assert str(expected) in message
    assert "gsm8k/test.jsonl" in message and "DERL_GYM_DATA" in message and "source='hub'" in message
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(MathDataNotFoundError, match="math500_test.jsonl"):
        MATHEnv("test", data_dir=tmp_path / "nowhere")


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "q", "answer": "a\n#### 3"})
    (tmp_path / "gsm8k" / "test.jsonl").write_text(good + "\n" + "{not json\n")
    with pytest.raises(MathDataError, match=r"test\.jsonl:2"):
        load_gsm8k("test", data_dir=tmp_path)
    (tmp_path / "gsm8k" / "test.jsonl").write_text(good + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(MathDataError, match=r"test\.jsonl:2.*'answer'"):
        load_gsm8k("test", data_dir=tmp_path)


# ------------------------------------------------------------------------------ extraction

def test_gsm8k_extraction_and_equivalence():
    assert gsm8k_ground_truth("blah\n#### 1,234") == "1234"
    assert extract_gsm8k_answer("so 3 apples\n#### 1,234") == "1,234"
    assert extract_gsm8k_answer("First 12, then 7, so \\boxed{19} (not 20)") == "19"
    assert extract_gsm8k_answer("I had 5 then 8 more, total 13.") == "13"
    assert extract_gsm8k_answer("no numbers here") is None
    assert gsm8k_equivalent("1,234", "1234") and gsm8k_equivalent("$1234.00", "1234")
    assert gsm8k_equivalent("\\frac{1}{2}", "0.5") and gsm8k_equivalent("18 \\text{ dollars}", "18")
    assert not gsm8k_equivalent("1233", "1234") and not gsm8k_equivalent(None, "3")
    assert parse_number("9" * 5000) is None  # over Python's int-string limit: no exception


def test_boxed_parsing():
    assert extract_boxed("x = \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{1} then \\boxed{\\left\\{ 2 \\right\\}}") == "\\left\\{ 2 \\right\\}"
    assert extract_boxed("\\boxed{\\sqrt{\\frac{a}{b}} + {c}}") == "\\sqrt{\\frac{a}{b}} + {c}"
    assert extract_boxed("unclosed \\boxed{\\frac{1}{2}") is None
    assert extract_boxed("\\fbox{7}") == "7" and extract_boxed("$\\boxed 5$") == "5"
    assert extract_boxed("no box") is None and extract_boxed("\\boxedx{3}") is None


def test_math_answer_extraction():
    assert extract_math_answer("... so \\boxed{\\dfrac{3}{56}}") == "\\dfrac{3}{56}"
    assert extract_math_answer("Thus the final answer is $\\$18.90$.") == "\\$18.90"
    assert extract_math_answer("So the answer is 42. Done") == "42"
    assert extract_math_answer("we get 3 and then 7") == "7"
    assert extract_math_answer("") is None and extract_math_answer("nothing") is None


@pytest.mark.parametrize("pred, gold", [
    ("0.5", "\\frac{1}{2}"), ("2", "\\sqrt{4}"), ("\\sqrt{117}", "3\\sqrt{13}"), ("-2, 1", "1,-2"),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("4\\frac{2}{3}", "\\frac{14}{3}"),
    ("90", "90^\\circ"), ("Evelyn", "\\text{Evelyn}"),
])
def test_math_equivalent(pred, gold, grader):
    assert math_equivalent(pred, gold, grader=grader)


@pytest.mark.parametrize("pred, gold", [
    ("\\frac{1}{3}", "\\frac{1}{2}"), ("3.14", "\\pi"), ("6+5i", "6 - 5i"), ("", "3"), (None, "3"), ("1,2", "1,-2"), ("\\%", "\\$"),
])
def test_math_not_equivalent(pred, gold, grader):
    assert not math_equivalent(pred, gold, grader=grader)


def test_math_equivalent_without_grader_and_in_process():
    assert math_equivalent("\\sqrt{117}", "3\\sqrt{13}")  # a grader made for the call
    assert not math_equivalent("\\frac{1}{3}", "\\frac{1}{2}")
    assert math_equivalent("\\sqrt{117}", "3\\sqrt{13}", timeout=None)  # in this process, no limit
    assert not math_equivalent("(10^{10})!", "3", timeout=None)  # screened out: never given to sympy


def _checks_on(env, actions: list[str], seed: int = 5) -> list[tuple[str, float, object]]:
    """Step ``env`` through one problem per action (seeded order); returns (problem id, reward, extracted)."""
    out = []
    env.reset(seed=seed)
    for i, action in enumerate(actions):
        if i:
            env.reset()
        problem = env.unwrapped.current_problem
        _, reward, _, _, info = env.step(action.format(truth=problem.ground_truth))
        out.append((problem.problem_id, reward, info["extracted_answer"]))
    return out


GSM8K_ACTIONS = ["Step 1: add.\n#### {truth}", "The answer is 0.123456", "\\boxed{{{truth}}}", "{truth}1",
                 "so $\\boxed{{{truth}.00}}$ dollars", "no number", "#### {truth}\nwait, 7"] * 3


def test_gsm8k_checking_in_worker_threads_matches_main_thread_and_installs_no_handler(shared_data_dir):
    outer = signal.getsignal(signal.SIGALRM)  # pytest-timeout's, or the default
    main = _checks_on(GSM8KEnv("test", data_dir=shared_data_dir), GSM8K_ACTIONS)
    assert sorted({r for _, r, _ in main}) == [0.0, 1.0]  # the cases can fail and succeed
    results: dict[str, object] = {}

    def work() -> None:
        results["thread"] = _checks_on(GSM8KEnv("test", data_dir=shared_data_dir), GSM8K_ACTIONS)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and results["thread"] == main
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(a.format(truth=p.ground_truth), p.ground_truth)
             for a, p in zip(GSM8K_ACTIONS, load_gsm8k("test", data_dir=shared_data_dir))]
    expected = [gsm8k_equivalent(extract_gsm8k_answer(r), t) for r, t in pairs]
    with ThreadPoolExecutor(4) as pool:
        pooled = list(pool.map(lambda rt: gsm8k_equivalent(extract_gsm8k_answer(rt[0]), rt[1]), pairs))
    assert pooled == expected and any(expected) and not all(expected)
    assert signal.getsignal(signal.SIGALRM) is outer


def test_math_checking_in_threads_matches_main_thread_without_signals(shared_data_dir):
    import math_verify.grader
    import math_verify.parser

    flags = (math_verify.parser.TIMEOUT_WARNING_SHOWN, math_verify.grader.TIMEOUT_WARNING_SHOWN)
    outer = signal.getsignal(signal.SIGALRM)
    actions = ["\\boxed{{{truth}}}", "the answer is $0$", "\\boxed{{\\frac{{13}}{{3}}}}", "\\boxed{{{truth}}}"]
    env = MATHEnv(data_dir=shared_data_dir, max_problems=40)
    try:
        main = _checks_on(env, actions)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            threaded = list(pool.map(lambda _: _checks_on(MATHEnv(data_dir=shared_data_dir, max_problems=40), actions),
                                     range(2)))
        assert threaded == [main, main] and main[0][1] == 1.0
    finally:
        env.close()
    assert signal.getsignal(signal.SIGALRM) is outer
    assert (math_verify.parser.TIMEOUT_WARNING_SHOWN, math_verify.grader.TIMEOUT_WARNING_SHOWN) == flags


def test_pathological_answer_times_out_in_a_thread_and_the_grader_recovers():
    results: dict[str, object] = {}
    grader = MathGrader(timeout=1.0)

    def work() -> None:
        start = time.monotonic()
        results["risky"] = grader.equivalent("(10^{10})!", "3")  # sympy would run for ages
        results["seconds"] = time.monotonic() - start
        results["easy"] = grader.equivalent("0.5", "\\frac{1}{2}")  # served by a new child

    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        assert results["risky"] is False and results["easy"] is True
        assert 1.0 <= results["seconds"] < 10.0  # abandoned at the limit (plus the child's start-up)
        assert grader.timeouts == 1 and grader.starts == 2
    finally:
        grader.close()


def test_math_env_step_bounded_on_hostile_answer(shared_data_dir):
    env = MATHEnv(data_dir=shared_data_dir, max_problems=3, verify_timeout=1.0)
    try:
        env.reset(seed=0)
        env.grader.equivalent("1", "2")  # start the child first, so only the check is timed
        start = time.monotonic()
        _, reward, terminated, _, info = env.step("\\boxed{(10^{10})!}")
        assert reward == 0.0 and terminated and info["extracted_answer"] == "(10^{10})!"
        assert time.monotonic() - start < 5.0 and env.grader.timeouts == 1
    finally:
        env.close()


def test_local_data_opens_no_socket(shared_data_dir, tmp_path, monkeypatch):
    import socket
    import sys
    import types

    attempts: list[tuple] = []

    def refuse(*args, **_kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=refuse))
    monkeypatch.delenv("DERL_GYM_OFFLINE")  # the hub would be allowed: only "not asked" keeps it closed
    assert len(load_gsm8k("test", data_dir=shared_data_dir)) > 1000
    assert MATHEnv(data_dir=shared_data_dir, max_problems=2).num_problems == 2
    with pytest.raises(MathDataNotFoundError, match="source='hub'"):  # local folder given, files missing
        GSM8KEnv("train", data_dir=tmp_path)
    with pytest.raises(MathDataNotFoundError):
        load_math("test", data_dir=tmp_path)
    monkeypatch.setenv("DERL_GYM_DATA", str(tmp_path))
    with pytest.raises(MathDataNotFoundError):
        load_gsm8k("test")  # $DERL_GYM_DATA counts as local data too
    with pytest.raises(MathDataNotFoundError):
        load_gsm8k("test", data_dir=tmp_path, source="local", use_hub=True)  # source="local" wins
    assert attempts == []
    with pytest.raises(MathDataNotFoundError, match="not available"):
        load_gsm8k("test", data_dir=tmp_path, source="hub")  # asked: the probe runs (and is refused here)
    assert attempts and attempts[0][0] == ("huggingface.co", 443)


def test_data_sources_settings():
    from derl_gym.envs.math import data_sources

    assert data_sources("local") == (True, False) and data_sources("hub") == (False, True)
    assert data_sources("auto", data_dir="/x") == (True, False)
    assert data_sources("auto", use_hub=True, data_dir="/x") == (True, True)
    assert data_sources("auto", use_hub=False) == (True, False)
    with pytest.raises(ValueError, match="source must be one of"):
        data_sources("web")
    with pytest.raises(ValueError, match="contradicts"):
        data_sources("hub", use_hub=False)


def test_normalize_text_maps_into_charset():
    text = "It costs 5\u00a0€ \u2014 “quoted” caf\u00e9\u2028next \u0410 \u014d \u200b!"
    out = normalize_text(text)
    assert set(out) <= set(CHARSET)
    assert "€" in out and "café" in out and "\nnext" in out and " o " in out


# ------------------------------------------------------------------------------ envs

def test_gsm8k_env_rewards_through_gym_make(shared_data_dir):
    env = gym.make("derl_gym/GSM8K-v0", split="test", data_dir=shared_data_dir, seed=3)
    obs, info = env.reset()
    problem = env.unwrapped.current_problem
    assert obs == problem.question and info["problem_id"] == problem.problem_id
    assert env.observation_space.contains(obs)
    truth = problem.ground_truth
    obs, reward, terminated, truncated, info = env.step(f"Step 1: think.\nStep 2: more.\n#### {truth}")
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["correct"] and info["won"] and info["valid_action"] and info["progress"] == 1.0
    assert info["ground_truth"] == truth and info["extracted_answer"] == truth and info["state_changed"]
    env.reset()
    wrong = str(int(parse_number(env.unwrapped.current_problem.ground_truth)) + 1)
    _, reward, terminated, _, info = env.step(f"The answer is {wrong}")
    assert reward == 0.0 and terminated and not info["correct"] and info["extracted_answer"] == wrong
    env.close()


def test_math_env_rewards_through_gym_make(shared_data_dir):
    env = gym.make("derl_gym/MATH-v0", data_dir=shared_data_dir, seed=0)
    env.reset(options={"problem_id": env.unwrapped.problems[2].problem_id})
    problem = env.unwrapped.current_problem
    assert problem.ground_truth == "\\frac{14}{3}"
    _, reward, _, _, info = env.step("We compute ... so the answer is $\\boxed{4\\frac{2}{3}}$.")
    assert reward == 1.0 and info["extracted_answer"] == "4\\frac{2}{3}" and info["subject"] == problem.subject
    env.reset(options={"index": 2})
    _, reward, _, _, info = env.step("\\boxed{\\frac{13}{3}}")
    assert reward == 0.0 and info["valid_action"] and not info["correct"]
    env.close()


def test_reset_order_seeded_and_covers_every_problem(tmp_path, shared_data_dir):
    lines = [line for line in open(shared_data_dir / "gsm8k" / "test.jsonl") if line.strip()][:25]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(lines))
    env = GSM8KEnv("test", data_dir=tmp_path)
    first = [env.reset(seed=7)[1]["problem_id"]] + [env.reset()[1]["problem_id"] for _ in range(24)]
    assert len(set(first)) == 25  # one pass visits every problem once
    second = [env.reset(seed=7)[1]["problem_id"]] + [env.reset()[1]["problem_id"] for _ in range(24)]
    assert first == second
    other = [env.reset(seed=8)[1]["problem_id"]] + [env.reset()[1]["problem_id"] for _ in range(24)]
    assert other != first and sorted(other) == sorted(first)
    env26 = env.reset()[1]["problem_id"]  # a new pass starts
    assert env26 in first
    ctor_seeded = GSM8KEnv("test", data_dir=tmp_path, seed=7)
    assert ctor_seeded.reset()[1]["problem_id"] == first[0]


@pytest.mark.parametrize("action", ["", "x" * 10_000, "∑∫≈ 🤖 \u0000 \\boxed{", b"\xff\xfe bytes", None, 12.5,
                                    "\\boxed{" * 500 + "}" * 499, "9" * 8000, "#### "])
def test_junk_actions_never_raise(gsm8k_test_env, shared_data_dir, action):
    gsm8k_test_env.reset(seed=1)
    _, reward, terminated, _, info = gsm8k_test_env.step(action)
    assert reward == float(info["correct"]) and terminated and isinstance(info["response"], str)
    assert len(info["response"]) <= gsm8k_test_env.action_space.max_length
    math_env = MATHEnv(data_dir=shared_data_dir, seed=0, max_problems=3)
    math_env.reset()
    _, reward, terminated, _, info = math_env.step(action)
    assert reward in (0.0, 1.0) and terminated


def test_over_long_action_truncated(gsm8k_test_env):
    gsm8k_test_env.reset(seed=2)
    truth = gsm8k_test_env.current_problem.ground_truth
    _, reward, _, _, info = gsm8k_test_env.step("z" * 9000 + f" #### {truth}")
    assert info["action_truncated"] and reward == 0.0 and len(info["response"]) == 8192
    gsm8k_test_env.reset(seed=2)
    _, reward, _, _, info = gsm8k_test_env.step(f"#### {truth} " + "z" * 9000)
    assert info["action_truncated"] and reward == 1.0


def test_step_before_reset_and_after_done_raise_clearly(shared_data_dir):
    env = GSM8KEnv("test", data_dir=shared_data_dir, max_problems=5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("1")
    env.reset(seed=0)
    env.step("1")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("1")


def test_observations_in_space_for_every_problem(shared_data_dir):
    for env in (GSM8KEnv("train", data_dir=shared_data_dir), MATHEnv(data_dir=shared_data_dir)):
        assert all(env.observation_space.contains(o) for o in env._observations)
        assert max(len(p.question) for p in env.problems) <= env.observation_space.max_length
        assert isinstance(env.observation_space, gym.spaces.Text) and isinstance(env.action_space, gym.spaces.Text)


def test_check_env_passes(shared_data_dir):
    check_env(GSM8KEnv("validation", data_dir=shared_data_dir), skip_render_check=True)
    check_env(MATHEnv("test", data_dir=shared_data_dir), skip_render_check=True)


# ------------------------------------------------------------------------------ primitives

def _trajectory(response: str, truth: str, dataset: str, correct: bool) -> Trajectory:
    info = {"response": response, "ground_truth": truth, "dataset": dataset, "correct": correct}
    return Trajectory(steps=[Step(action=response, observation="q", reward=float(correct), terminated=True,
                                  truncated=False, info=info)])


def test_primitive_values_on_crafted_responses():
    prims = math_primitives()
    assert prims.names == ["strict_match", "boxed_format", "explicit_steps", "loose_match"]
    correct = "Step 1: 12 + 3 = 15.\nStep 2: 15 * 2 = 30.\nSo \\boxed{30}"
    assert list(prims.compute(_trajectory(correct, "30", "gsm8k", True))) == [1.0, 1.0, 1.0, 1.0]
    # wrong boxed answer, but the truth appears as an intermediate number; two plain reasoning lines
    near = "12 + 18 = 30 apples.\nThen she gave away 5, leaving 25.\n\\boxed{25}"
    assert list(prims.compute(_trajectory(near, "30", "gsm8k", False))) == [0.0, 1.0, 0.5, 1.0]
    plain = "We add things up.\nIt comes to 40.\nThe answer is 41"
    assert list(prims.compute(_trajectory(plain, "1,234", "gsm8k", False))) == [0.0, 0.0, 0.5, 0.0]
    assert list(prims.compute(_trajectory("41", "41", "gsm8k", True))) == [1.0, 0.0, 0.0, 1.0]
    frac = "So $x = \\dfrac{3}{56}$ and we are done."
    assert list(prims.compute(_trajectory(frac, "\\frac{3}{56}", "math", False))) == [0.0, 0.0, 0.0, 1.0]
    assert list(prims.compute(Trajectory())) == [0.0, 0.0, 0.0, 0.0]


def test_step_markers_and_loose_match():
    assert count_step_markers("1. a\n2) b\n  **Step 3**: c\nFirst, d\n3.5 is a number\nthen e") == 5
    assert step_structure_score("one line") == 0.0
    assert step_structure_score("a\nb\nanswer") == 0.5
    assert loose_match("total is 1,234 dollars", "1234", numeric=True)
    assert not loose_match("total is 11234", "1234", numeric=True)
    assert loose_match("x = \\left(3, \\frac{\\pi}{2}\\right)", "\\left( 3, \\frac{\\pi}{2} \\right)")


def test_loose_match_never_reads_a_numeric_truth_as_a_substring():
    # MATH passes numeric=None: a truth that is a number must equal a number of the response.
    assert not loose_match("the total is 420", "42")
    assert not loose_match("x = 1.25", "25")
    assert loose_match("so x = 42.", "42")
    assert loose_match("x=\\frac{1}{2}, i.e. 0.5", "0.5")
    assert loose_match("the answer is \\pi/2", "\\pi/2")  # not a number: substring rule
    assert loose_match("So $x = \\dfrac{3}{56}$.", "\\frac{3}{56}")  # LaTeX number: its text, delimited
    assert not loose_match("x = \\frac{3}{567}", "\\frac{3}{56}")


def test_primitives_from_real_env_steps(shared_data_dir):
    env = MATHEnv(data_dir=shared_data_dir, seed=0)
    env.reset(options={"index": 2})
    action = "1. Compute.\n2. Simplify.\n\\boxed{\\frac{14}{3}}"
    obs, reward, terminated, truncated, info = env.step(action)
    traj = Trajectory(steps=[Step(action, obs, reward, terminated, truncated, info)])
    assert list(math_primitives().compute(traj)) == [1.0, 1.0, 1.0, 1.0]


def test_meta_reward_wrapper_on_math_env(shared_data_dir):
    wrappers = pytest.importorskip("derl_gym.wrappers")
    if not hasattr(wrappers, "MetaRewardWrapper"):
        pytest.skip("derl_gym.wrappers.MetaRewardWrapper not written yet")
    env = wrappers.MetaRewardWrapper(gym.make("derl_gym/GSM8K-v0", split="test", data_dir=shared_data_dir),
                                     "g1 + 0.5*g2", math_primitives())
    env.reset(seed=0)
    truth = env.unwrapped.current_problem.ground_truth
    _, reward, terminated, _, info = env.step(f"\\boxed{{{truth}}}")
    assert terminated and info["task_reward"] == 1.0 and reward == pytest.approx(1.5)
    assert list(info["primitive_values"][:2]) == [1.0, 1.0]
    env.reset()
    _, reward, _, _, info = env.step("I think 0.123456")
    assert info["task_reward"] == 0.0 and reward == pytest.approx(0.0)
    env.close()


def test_shared_data_files_exist(shared_data_dir):
    assert Path(shared_data_dir, "gsm8k", "train.jsonl").is_file()
    assert Path(shared_data_dir, "math", "math500_test.jsonl").is_file()


def test_hub_fallback_with_stand_in_datasets(tmp_path, monkeypatch):
    import sys
    import types

    calls: list[tuple] = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "openai/gsm8k":
            return [{"question": "How many legs do 2 cats have?", "answer": "2*4=8\n#### 8"}]
        return [{"problem": "1+1?", "solution": "\\boxed{2}", "answer": "2", "subject": "Algebra",
                 "level": 1, "unique_id": "test/algebra/1.json"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("DERL_GYM_DATA", raising=False)
    # DERL_GYM_OFFLINE=1 (autouse fixture): the hub is never asked, even with source="hub"
    with pytest.raises(MathDataNotFoundError, match="DERL_GYM_OFFLINE"):
        GSM8KEnv("test", source="hub")
    assert calls == []
    monkeypatch.delenv("DERL_GYM_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cache-only mode: no reachability probe
    with pytest.raises(MathDataNotFoundError, match="not asked"):
        GSM8KEnv("test", data_dir=tmp_path)  # a local folder is given: the hub is not asked
    assert calls == []
    env = GSM8KEnv("test", seed=0)  # no local folder at all: the hub
    assert env.num_problems == 1 and env.problems[0].ground_truth == "8"
    math_env = MATHEnv("test", data_dir=tmp_path, source="hub")  # asked explicitly
    assert math_env.problems[0].problem_id == "math-hub-test:test/algebra/1.json"
    math_env.close()
    assert calls == [("openai/gsm8k", "main", "test"), ("HuggingFaceH4/MATH-500", None, "test")]
    with pytest.raises(MathDataNotFoundError, match="holdout_from"):
        MATHEnv("train", source="hub")  # MATH-500 has no train split: not asked
    assert GSM8KEnv("test", data_dir=tmp_path, use_hub=True).num_problems == 1  # legacy: local, then hub
    assert len(calls) == 3
