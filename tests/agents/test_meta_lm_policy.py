"""The language-model meta-optimizer: tokenizer-level grammar constraint, sampling, GRPO, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from derl_gym.agents.meta.base import make_grammar
from derl_gym.agents.meta.constrained import CharsetConstraint, FormulaConstraint
from derl_gym.agents.meta.seed_formulas import seed_formulas
from derl_gym.rewards.expression import MetaReward

K = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_lm():
    """The shared offline tiny model (random weights, BPE tokenizer), built once and cached."""
    pytest.importorskip("transformers")
    from derl_gym.models import load_causal_lm

    return load_causal_lm("tiny", device="cpu")


@pytest.fixture(scope="module")
def lm_policy(tiny_lm):
    from derl_gym.agents.meta.lm_policy import CausalLMPolicy

    model, tokenizer = tiny_lm
    return CausalLMPolicy(model, tokenizer, make_grammar(K), "Write a reward formula over g1..g4.", device="cpu")


def test_thousand_samples_from_a_random_model_all_parse(lm_policy):
    grammar = lm_policy.grammar
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(4):
        for sample in lm_policy.sample(250, rng, temperature=1.0):
            assert sample.ids[-1] == lm_policy.eos_id and len(sample.ids) <= lm_policy.max_new_tokens
            texts.append(sample.text)
    assert len(texts) == 1000
    for text in texts:
        assert MetaReward(text, K).variables_used  # parses and reads at least one variable
        assert len(grammar.encode(text)) <= grammar.max_tokens
    assert len(set(texts)) > 500  # a random model explores (the constraint does not force one formula)


def test_unconstrained_and_charset_masks_do_not_guarantee_validity(lm_policy):
    charset = CharsetConstraint(lm_policy.tokenizer)
    full = FormulaConstraint(lm_policy.grammar, lm_policy.tokenizer)
    start = full.mask(full.start())
    assert start.sum() < charset.mask().sum()  # e.g. ')' and EOS are not allowed first
    assert not start[full.eos_id] and charset.mask()[full.eos_id]


def test_constraint_accepts_every_seed_formula_and_its_masks_are_cached(lm_policy):
    constraint = lm_policy.constraint
    for formula in seed_formulas(K, lm_policy.grammar):
        ids = lm_policy.encode(formula)
        assert ids is not None and constraint.accepts(ids), formula
        assert lm_policy.decode(ids).replace(" ", "") == formula.replace(" ", "")
    before = len(constraint._masks)
    for formula in seed_formulas(K)[:20]:
        constraint.states(lm_policy.encode(formula))
        [constraint.mask(s) for s in constraint.states(lm_policy.encode(formula))]
    assert len(constraint._masks) == before  # no new states: masks come from the cache


def test_constraint_rejects_what_the_grammar_rejects(lm_policy):
    tok = lm_policy.tokenizer
    for bad in ("g1 +", "g5", "(g1", "g1)", "2 + 3", "0.3*g1", "g1  + g2", "g1 + * g2"):
        ids = list(tok(bad, add_special_tokens=False)["input_ids"]) + [lm_policy.eos_id]
        assert not lm_policy.constraint.accepts(ids), bad
        assert lm_policy.encode(bad) is None


def test_constraint_never_dead_ends_near_the_length_limit(tiny_lm):
    """With a short grammar the automaton must still always leave a way to write a variable and end."""
    from derl_gym.agents.meta.lm_policy import CausalLMPolicy

    model, tokenizer = tiny_lm
    grammar = make_grammar(K, max_tokens=5)
    policy = CausalLMPolicy(model, tokenizer, grammar, "formula:", device="cpu")
    samples = policy.sample(300, np.random.default_rng(1), temperature=2.0)
    for s in samples:
        assert MetaReward(s.text, K).variables_used and len(grammar.encode(s.text)) <= 5


def test_sample_log_probs_match_teacher_forcing(lm_policy):
    samples = lm_policy.sample(6, np.random.default_rng(3), temperature=0.7)
    totals = lm_policy.sequence_log_probs([s.ids for s in samples], temperature=0.7)
    for sample, total in zip(samples, totals):
        assert sum(sample.log_probs) == pytest.approx(total, abs=1e-3)


def test_derl_with_tiny_lm_learns_resumes_and_reproduces():
    from derl_gym.agents.meta import make_optimizer

    def score(f: str) -> float:
        return 1.0 if "g4" in MetaReward(f, K).variables_used else 0.0

    opt = make_optimizer("derl", K, seed=0, meta_model="tiny", cold_start_steps=8, device="cpu")
    assert opt.kind == "lm" and "g4" in opt.policy.prompt and "Example formulas" in opt.policy.prompt
    assert opt.cold_start_stats["cold_start_used"] >= 200
    formulas = opt.propose(8)
    assert all(MetaReward(f, K).variables_used for f in formulas)
    stats = opt.update(formulas, [score(f) for f in formulas])
    assert {"kl", "entropy", "clip_fraction", "adv_spread"} <= set(stats)
    state = json.loads(json.dumps(opt.state_dict()))
    other = make_optimizer("derl", K, seed=5, meta_model="tiny", cold_start=False, device="cpu")
    other.load_state_dict(state)
    a, b = opt.propose(4), other.propose(4)
    assert a == b
    sa, sb = opt.update(a, [score(f) for f in a]), other.update(b, [score(f) for f in b])
    assert sa.get("loss") == pytest.approx(sb.get("loss"))
    with pytest.raises(ValueError, match="policy"):
        make_optimizer("derl", K, seed=0, cold_start=False).load_state_dict(state)
