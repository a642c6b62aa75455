"""Token-policy interface under DERL's GRPO: the GRU implementation, the shared GRPO step, seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.agents.meta.base import make_grammar
from derl_gym.agents.meta.seed_formulas import seed_formulas, shipped_seed_formulas
from derl_gym.agents.meta.token_policy import GRUTokenPolicy, group_advantages, grpo_step
from derl_gym.rewards.expression import MetaReward

K = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sampled_log_probs_match_teacher_forced_scores():
    policy = GRUTokenPolicy(make_grammar(K), seed=0)
    samples = policy.sample(16, np.random.default_rng(0), temperature=0.8)
    totals = policy.sequence_log_probs([s.ids for s in samples], temperature=0.8)
    for sample, total in zip(samples, totals):
        assert sum(sample.log_probs) == pytest.approx(total, abs=1e-4)
        assert sample.text == policy.decode(sample.ids) and policy.encode(sample.text) == sample.ids


def test_policy_state_round_trip_and_reference_is_frozen():
    import torch

    a, b = GRUTokenPolicy(make_grammar(K), seed=1), GRUTokenPolicy(make_grammar(K), seed=2)
    with torch.no_grad():
        next(a.model.parameters()).add_(1.0)  # policy now differs from its reference
    state = json.loads(json.dumps(a.state_dict()))
    b.load_state_dict(state)
    seqs = [s.ids for s in a.sample(8, np.random.default_rng(0))]
    assert a.sequence_log_probs(seqs) == pytest.approx(b.sequence_log_probs(seqs))
    ref_a, _, _ = a.log_prob_table(seqs, reference=True)
    ref_b, _, _ = b.log_prob_table(seqs, reference=True)
    assert torch.allclose(ref_a, ref_b)
    pol_a, _, _ = a.log_prob_table(seqs)
    assert not torch.allclose(pol_a, ref_a)
    assert all(not p.requires_grad for p in a.reference.parameters())


def test_group_advantages():
    assert group_advantages(np.array([0.5, 0.5, 0.5])) is None
    assert group_advantages(np.array([1.0])) is None
    adv = group_advantages(np.array([0.0, 1.0, 2.0]))
    assert adv.mean() == pytest.approx(0.0) and adv.std() == pytest.approx(1.0, abs=1e-5)


def test_grpo_step_logs_clip_kl_entropy_and_advantage_spread():
    import torch

    policy = GRUTokenPolicy(make_grammar(K), seed=0)
    optimizer = torch.optim.Adam(list(policy.parameters()), lr=3e-2)
    seqs = [s.ids for s in policy.sample(8, np.random.default_rng(0))]
    adv = group_advantages(np.arange(8.0))
    stats = grpo_step(policy, optimizer, seqs, adv, epochs=4, kl_coef=0.1, entropy_coef=0.01)
    assert stats["updated"] is True
    for key in ("loss", "kl", "entropy", "clip_fraction", "adv_std", "adv_spread", "mean_abs_advantage"):
        assert math.isfinite(stats[key]), key
    assert stats["kl"] > 0.0 and stats["entropy"] > 0.1  # 4 epochs at a large lr move off the reference
    assert 0.0 <= stats["clip_fraction"] <= 1.0 and stats["clip_fraction"] > 0.0
    assert stats["adv_spread"] == pytest.approx(adv.max() - adv.min())
    # the best-scored sequence became more likely, the worst less likely
    after = policy.sequence_log_probs([seqs[0], seqs[-1]])
    fresh = GRUTokenPolicy(make_grammar(K), seed=0).sequence_log_probs([seqs[0], seqs[-1]])
    assert after[1] > fresh[1] and after[0] < fresh[0]


def test_entropy_bonus_raises_entropy():
    import torch

    def entropy_after(coef: float) -> float:
        policy = GRUTokenPolicy(make_grammar(K), seed=0)
        optimizer = torch.optim.Adam(list(policy.parameters()), lr=1e-2)
        seqs = [s.ids for s in policy.sample(8, np.random.default_rng(0))]
        adv = group_advantages(np.arange(8.0))
        for _ in range(5):
            stats = grpo_step(policy, optimizer, seqs, adv, epochs=2, kl_coef=0.0, entropy_coef=coef)
        return stats["entropy"]

    assert entropy_after(0.5) > entropy_after(0.0) + 0.05


def test_derl_update_reports_the_grpo_stats():
    opt = make_optimizer("derl", K, seed=0)
    formulas = opt.propose(4)
    stats = opt.update(formulas, [0.1, 0.2, 0.3, 0.9])
    assert stats["updated"] and stats["group_size"] == 4
    assert {"kl", "entropy", "clip_fraction", "adv_spread", "adv_std"} <= set(stats)


def test_shipped_seed_formulas_parse_and_adapt_to_k():
    shipped = shipped_seed_formulas()
    assert 180 <= len(shipped) <= 260
    grammar = make_grammar(4)
    assert all(grammar.fits(f) for f in shipped)
    assert all(MetaReward(f, 4).variables_used for f in shipped)
    for k in (1, 2, 3, 6):
        adapted = seed_formulas(k, make_grammar(k))
        assert len(adapted) >= 100 and len(set(adapted)) == len(adapted)
        for f in adapted:
            assert set(MetaReward(f, k).variables_used) <= {f"g{i}" for i in range(1, k + 1)}
    assert any("g6" in f for f in seed_formulas(6))


def test_default_cold_start_fits_the_shipped_seeds():
    opt = make_optimizer("derl", K, seed=0, cold_start_steps=40)
    assert opt.cold_start_stats["cold_start_used"] == len(seed_formulas(K, opt.grammar))
    fresh = make_optimizer("derl", K, seed=0, cold_start=False)
    assert fresh.cold_start_stats == {}
    assert opt.sequence_log_prob("g1 + 0.5*g4") > fresh.sequence_log_prob("g1 + 0.5*g4") + 1.0


@pytest.mark.parametrize("max_tokens", [3, 6, 24])
def test_variable_mask_narrows_the_grammar_and_never_dead_ends(max_tokens):
    from derl_gym.agents.meta.constrained import VariableGrammarMask

    grammar = make_grammar(K, max_tokens=max_tokens)
    masks = VariableGrammarMask(grammar)
    rng = np.random.default_rng(max_tokens)
    for _ in range(300):
        prefix: list[int] = []
        while not prefix or prefix[-1] != grammar.end_id:
            mask = masks.valid_next(prefix)
            assert mask.any() and not (mask & ~grammar.valid_next(prefix)).any()
            prefix.append(int(rng.choice(np.flatnonzero(mask))))
        text = grammar.decode(prefix)
        assert MetaReward(text, K).variables_used and len(prefix) <= max_tokens


def test_gru_proposals_always_read_a_variable():
    opt = make_optimizer("derl", K, seed=0, cold_start=False)
    assert all(MetaReward(f, K).variables_used for f in opt.propose(200))
    assert opt.sequence_log_prob("2*3") == -math.inf
