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
