"""Formula structure and primitive analysis of reports, read with the Meta-Reward parser."""

from __future__ import annotations

import pytest

from derl_gym.rewards import canonicalize
from derl_gym.runtime.report import _readable, classify_formula, formula_variables, primitive_shares


@pytest.mark.parametrize("formula,expected", [
    ("g1/2", "single"), ("--g1", "single"), ("0*g1", "single"), ("(g1 + g2)*0.5", "additive"),
    ("g1 - g1 + g2", "additive"),  # the shape as written; the report passes canonical forms when it has them
    ("g1*g1", "multiplicative"), ("g2/(g1 + 1)", "multiplicative"), ("((g1)/(g2))", "multiplicative"),
    ("g1 ** 2", "degenerate"), ("abs(g1)", "degenerate"), ("g1 + success", "degenerate"), ("", "degenerate"),
    ("g1; g2", "degenerate"),
])
def test_classify_formula_more_shapes(formula, expected):
    assert classify_formula(formula) == expected


def test_a_failed_run_is_degenerate_whatever_its_formula():
    assert classify_formula("g1 + g2", status="failed") == "degenerate"
    assert classify_formula("g1*g2", status="timeout") == "degenerate"


def test_canonical_forms_classify_like_their_formula():
    for text, expected in [("g2 + g1 - g2", "single"), ("g1*(g2 + 1)", "multiplicative"), ("2*g1/2 + g3", "additive")]:
        assert classify_formula(canonicalize(text)) == expected


def test_variables_and_shares_ignore_formulas_that_do_not_parse():
    assert formula_variables("g3*g1 + 2") == {"g1", "g3"}
    assert formula_variables("g1 + foo") == frozenset()
    assert primitive_shares(["g1", "g1 +", "g2/g1", "g10"]) == {"g1": 0.5, "g2": 0.25, "g10": 0.25}


def test_a_canonical_form_outside_the_language_falls_back_to_the_proposed_text():
    long_canonical = " + ".join(f"{i}*g1*g2" for i in range(1, 80))  # over the parser's 512 characters
    assert len(long_canonical) > 512 and classify_formula(long_canonical) == "degenerate"
    assert _readable(long_canonical, "g1*g2") == "g1*g2"
    assert _readable("g1**9", "g1*g1*g1*g1*g1*g1*g1*g1*g1") == "g1*g1*g1*g1*g1*g1*g1*g1*g1"
    assert _readable("g1 + g2", "g2 + g1 + 0*g3") == "g1 + g2"
    assert _readable(None, "g1") == "g1"


def _store_with_stopped_runs(path):
    """A store holding one multi-fidelity iteration: 1 ok, 2 stopped early, 1 failed run (and their rows)."""
    from derl_gym.runtime.spec import InnerResult
    from derl_gym.runtime.store import ResultStore

    store = ResultStore(path)
    results = [InnerResult("g1 + g2", "g1 + g2", 0.6), InnerResult("g1*g2", "g1*g2", 0.9, status="stopped"),
               InnerResult("g3", "g3", 0.8, status="stopped"),
               InnerResult.failure("g4", "g4", "RuntimeError: boom")]
    for result in results:
        store.put(result, "hash")
    store.save_checkpoint("derl", 1, {}, expressions=[r.expression for r in results],
                          canonicals=[r.canonical for r in results], scores=[r.score for r in results],
                          statuses=[r.status for r in results], cached=[False] * 4)
    return store


def test_stopped_runs_are_counted_apart_from_failed_ones(tmp_path):
    from derl_gym.runtime.report import _method_series, write_report

    with _store_with_stopped_runs(tmp_path) as store:
        (row,) = _method_series(store)["derl"]
        report = write_report(tmp_path, store)
    assert (row["failed"], row["stopped"], row["n"]) == (1, 2, 4)
    # a stopped run's higher (lower-fidelity) score is not the iteration's best; its formula keeps its shape
    assert row["best"] == 0.6 and row["best_expression"] == "g1 + g2"
    assert row["shares"] == {"additive": 0.25, "multiplicative": 0.25, "single": 0.25, "degenerate": 0.25}
    text = report.markdown.read_text()
    assert "(1 ok, 1 failed or timed out, 2 stopped early)" in text
    header = next(line for line in text.splitlines() if line.startswith("| iteration |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    values = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| 1 |")).strip("|").split("|")]
    assert len(cells) == len(values)
    assert values[cells.index("failed")] == "1" and values[cells.index("stopped")] == "2"


def test_a_run_without_stopped_runs_has_no_stopped_column():
    from derl_gym.runtime.report_markdown import run_report_markdown

    shares = {"additive": 0.0, "multiplicative": 0.0, "single": 1.0, "degenerate": 0.0}
    row = {"iteration": 1, "best": 0.5, "mean": 0.5, "n": 1, "cached": 0, "failed": 0, "runs": 1, "shares": shares,
           "primitives": {"g1": 1.0}, "best_expression": "g1"}
    text = run_report_markdown("runs/demo", {}, [{"status": "ok", "wall_seconds": 1.0}], {"derl": [row]})
    assert "stopped" not in text and "(1 ok, 0 failed or timed out)" in text


def test_a_stopped_run_is_classified_by_its_shape():
    assert classify_formula("g1 + g2", status="stopped") == "additive"
    assert classify_formula("g1*g2", status="stopped") == "multiplicative"
