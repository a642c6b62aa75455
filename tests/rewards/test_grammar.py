"""Tests of the token grammar: masks, completion guarantee, encode/decode, sampling, mutation, crossover."""

from __future__ import annotations

import numpy as np
import pytest

from derl_gym.rewards import Grammar, InvalidExpression, MetaReward
from derl_gym.rewards.grammar import DEFAULT_CONSTANTS, END, MAX_PAREN_DEPTH


def tok(grammar: Grammar, *tokens: str) -> list[int]:
    return [grammar.vocabulary.index(t) for t in tokens]


def allowed(grammar: Grammar, prefix: list[int]) -> set[str]:
    return {grammar.vocabulary[i] for i in np.flatnonzero(grammar.valid_next(prefix))}


def min_completion(grammar: Grammar, prefix: list[int]) -> int:
    """Tokens still needed to finish ``prefix`` (greedy shortest completion, checked by the masks)."""
    ids = list(prefix)
    while not ids or ids[-1] != grammar.end_id:
        mask = grammar.valid_next(ids)
        assert mask.any(), f"dead end after {grammar.decode(ids)!r}"
        for choice in (grammar.end_id, grammar.close_id, *grammar.variable_ids):
            if mask[choice]:
                ids.append(int(choice))
                break
        else:
            raise AssertionError(f"no closing move after {grammar.decode(ids)!r}: {allowed(grammar, ids)}")
    return len(ids) - len(prefix)


def test_vocabulary_layout():
    g = Grammar(num_variables=3)
    assert g.vocabulary[:3] == ["g1", "g2", "g3"]
    assert g.vocabulary[3:3 + len(DEFAULT_CONSTANTS)] == list(DEFAULT_CONSTANTS)
    assert g.vocabulary[-7:] == ["+", "-", "*", "/", "(", ")", END]
    assert g.vocab_size == len(g.vocabulary) and g.end_id == g.vocab_size - 1
    assert Grammar(2, constants=[0.5, 2, "10"]).constants == ("0.5", "2", "10")


def test_constructor_validation():
    with pytest.raises(ValueError, match="negative"):
        Grammar(constants=[-1])
    with pytest.raises(ValueError, match="equal values"):
        Grammar(constants=["1", "1.0"])
    with pytest.raises(ValueError, match="at most"):
        Grammar(constants=["2e6"])
    with pytest.raises(ValueError, match="max_tokens"):
        Grammar(max_tokens=1)
    with pytest.raises(ValueError, match="512 characters"):
        Grammar(max_tokens=500)
    with pytest.raises(ValueError, match="num_variables"):
        Grammar(num_variables=0)


def test_masks_at_start_and_after_operand():
    g = Grammar(num_variables=2, constants=["1"], max_tokens=10)
    assert allowed(g, []) == {"g1", "g2", "1", "(", "-"}
    assert allowed(g, tok(g, "g1")) == {"+", "-", "*", "/", END}
    assert allowed(g, tok(g, "(", "g1")) == {"+", "-", "*", "/", ")"}
    assert allowed(g, tok(g, "-")) == {"g1", "g2", "1", "("}  # no second unary minus
    assert allowed(g, tok(g, "g1", "*")) == {"g1", "g2", "1", "(", "-"}
    assert not g.valid_next(tok(g, "g1", END)).any()


def test_masks_respect_budget():
    g = Grammar(num_variables=1, constants=["1"], max_tokens=6)
    # "( ( g1" needs ") ) END" = 3 more: total 6, so no operator fits, only ')'
    assert allowed(g, tok(g, "(", "(", "g1")) == {")"}
    # after "( (" the operand must come now; a third '(' or '-' would not fit
    assert allowed(g, tok(g, "(", "(")) == {"g1", "1"}
    # "g1 + g1 + g1" (5 tokens) then only END fits
    assert allowed(g, tok(g, "g1", "+", "g1")) == {"+", "-", "*", "/", END}
    assert allowed(g, tok(g, "g1", "+", "g1", "+", "g1")) == {END}
    assert Grammar(num_variables=1, max_tokens=2).valid_next([]).sum() == 1 + len(DEFAULT_CONSTANTS)


def test_paren_depth_is_capped():
    g = Grammar(num_variables=1, constants=["1"], max_tokens=80)
    prefix = tok(g, *(["-", "("] * MAX_PAREN_DEPTH))
    assert "(" not in allowed(g, prefix)
    ids = prefix + tok(g, "-", "g1") + tok(g, *([")"] * MAX_PAREN_DEPTH)) + [g.end_id]
    MetaReward(g.decode(ids), 1)  # deepest possible nesting still parses


def test_invalid_prefix_raises():
    g = Grammar()
    with pytest.raises(ValueError, match="not valid after"):
        g.valid_next(tok(g, "g1", "g2"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        g.valid_next([999])
    with pytest.raises(ValueError, match="after END"):
        g.valid_next(tok(g, "g1", END, "+"))


def test_is_complete():
    g = Grammar()
    assert not g.is_complete([])
    assert g.is_complete(tok(g, "g1"))
    assert not g.is_complete(tok(g, "(", "g1"))
    assert g.is_complete(tok(g, "(", "g1", ")"))
    assert not g.is_complete(tok(g, "g1", "+"))
    assert g.is_complete(tok(g, "g1", END))


@pytest.mark.parametrize("num_variables, max_tokens", [(4, 24), (2, 8), (1, 3), (6, 40)])
def test_random_masked_rollouts_parse_and_every_prefix_completes(num_variables, max_tokens):
    g = Grammar(num_variables=num_variables, max_tokens=max_tokens)
    rng = np.random.default_rng(max_tokens)
    for _ in range(2000 if max_tokens == 24 else 300):
        ids: list[int] = []
        while not ids or ids[-1] != g.end_id:
            mask = g.valid_next(ids)
            assert mask.any()
            ids.append(int(rng.choice(np.flatnonzero(mask))))
            assert len(ids) + (0 if ids[-1] == g.end_id else min_completion(g, ids)) <= max_tokens
        assert len(ids) <= max_tokens
        text = g.decode(ids)
        reward = MetaReward(text, num_variables)
        assert set(reward.variables_used) <= {f"g{i + 1}" for i in range(num_variables)}
        assert g.encode(text) == ids


def test_exhaustive_small_grammar():
    """Every sequence the masks allow (tiny grammar, all of them) parses and ends in time."""
    g = Grammar(num_variables=1, constants=["2"], max_tokens=7)
    complete = 0
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        mask = g.valid_next(prefix)
        assert mask.any(), g.decode(prefix)
        for token in np.flatnonzero(mask):
            ids = prefix + [int(token)]
            assert len(ids) <= g.max_tokens
            if token == g.end_id:
                MetaReward(g.decode(ids), 1)
                complete += 1
            else:
                stack.append(ids)
    assert complete > 500


def test_decode_and_encode_roundtrip():
    g = Grammar()
    for text in ["g1 + 0.5*(g2 - g4/3)", "(g1 + g2 + g3 + g4)/4", "-g1*-0.5", "g1 - -g2", "-(g1 + g2)*10"]:
        ids = g.encode(text)
        assert ids[-1] == g.end_id
        assert g.decode(ids) == text
    assert g.encode("g1+0.50") == g.encode("g1 + 0.5")  # constants match by value
    assert g.encode("+g1") == g.encode("g1")  # unary plus dropped
    assert g.decode(tok(g, "g1", "+")) == "g1 +"  # a partial prefix decodes too


def test_encode_rejects_what_the_grammar_cannot_write():
    g = Grammar(max_tokens=8)
    with pytest.raises(InvalidExpression, match=r"constant '0.7' at column 6"):
        g.encode("g1 + 0.7")
    with pytest.raises(InvalidExpression, match="g5"):
        g.encode("g5")
    with pytest.raises(InvalidExpression, match="two unary minuses"):
        g.encode("--g1")
    with pytest.raises(InvalidExpression, match="10 tokens including END"):
        g.encode("g1+g2+g3+g4+g1")
    with pytest.raises(InvalidExpression, match="syntax error"):
        g.encode("g1 +")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        g.decode([1000])


def test_sampling_is_seeded_valid_and_diverse():
    g = Grammar()
    a = [g.sample_text(np.random.default_rng(3)) for _ in range(5)]
    b = [g.sample_text(np.random.default_rng(3)) for _ in range(5)]
    assert a == b
    rng = np.random.default_rng(0)
    texts = [g.sample_text(rng) for _ in range(300)]
    lengths = [len(g.encode(t)) for t in texts]
    assert max(lengths) <= g.max_tokens
    assert 3 <= np.mean(lengths) <= 16  # END bias keeps lengths moderate
    canon = {MetaReward(t, 4).canonical for t in texts}
    assert len(canon) > 150
    uses_variable = np.mean([bool(MetaReward(t, 4).variables_used) for t in texts])
    assert uses_variable > 0.8
    uniform = [g.sample(rng, uniform=True) for _ in range(200)]
    assert all(s[-1] == g.end_id and len(s) <= g.max_tokens for s in uniform)


def test_mutation_produces_valid_different_formulas():
    g = Grammar(max_tokens=16)
    rng = np.random.default_rng(11)
    parent = "g1 + 0.5*(g2 - g4/3)"
    children = [g.mutate(parent, rng) for _ in range(200)]
    for child in children:
        assert len(g.encode(child)) <= g.max_tokens
        MetaReward(child, 4)
    assert sum(c != parent for c in children) > 190
    # all three mutation kinds occur: a constant swap keeps the structure, an operator swap keeps the leaves
    assert any(c.startswith("g1 + ") and c.endswith("*(g2 - g4/3)") and c != parent for c in children)
    assert any(c in ("g1 - 0.5*(g2 - g4/3)", "g1*0.5*(g2 - g4/3)", "g1 + 0.5/(g2 - g4/3)",
                     "g1 + 0.5*(g2 + g4/3)", "g1 + 0.5*(g2 - g4*3)") for c in children)


def test_mutation_falls_back_to_parent_when_nothing_fits():
    g = Grammar(num_variables=1, constants=["1"], max_tokens=2)
    rng = np.random.default_rng(0)
    assert g.mutate("g1", rng) in ("g1", "1", "-g1", "-1")
    for _ in range(20):
        out = g.mutate("g1", rng)
        assert len(g.encode(out)) <= 2 or out == "g1"


def test_crossover_produces_valid_children_mixing_parents():
    g = Grammar(max_tokens=14)
    rng = np.random.default_rng(5)
    a, b = "g1 + 0.5*g2", "g3*(g4 - 10)"
    children = [g.crossover(a, b, rng) for _ in range(200)]
    for child in children:
        assert len(g.encode(child)) <= g.max_tokens
    mixed = [c for c in children if any(v in c for v in ("g3", "g4", "10")) and c != b]
    assert len(mixed) > 50
    assert "g3*(g4 - 10)" in children  # root replaced by the whole of b
    # a donor longer than max_tokens: children are the parent (fallback) or fit the budget
    small = Grammar(max_tokens=4)
    donor = "(g3 + g4)*(g3 - g4) + 10*(g1 - g2)"
    outs = [small.crossover("g1 + g2", donor, rng, attempts=1) for _ in range(100)]
    assert "g1 + g2" in outs and any(o != "g1 + g2" for o in outs)
    assert all(len(small.encode(o)) <= 4 for o in outs)


def test_mutate_and_crossover_reject_invalid_text():
    g = Grammar()
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidExpression):
        g.mutate("g1 ** 2", rng)
    with pytest.raises(InvalidExpression, match="0.7"):
        g.crossover("g1", "0.7*g2", rng)


def test_tree_render_roundtrip_keeps_values():
    g = Grammar()
    values = np.random.default_rng(2).uniform(0.1, 2.0, size=(40, 4))
    for text in ["g1 - (g2 - g3)", "g1/(g2/g3)", "g1/(g2*g3)", "-(g1 + g2)*g3", "g1*(g2*g3)", "g1 - -g2",
                 "(g1 + g2)/(g3 - 10)"]:
        rendered = g.render(g.to_tree(text))
        np.testing.assert_allclose(MetaReward(rendered, 4).evaluate(values), MetaReward(text, 4).evaluate(values),
                                   rtol=1e-12)
