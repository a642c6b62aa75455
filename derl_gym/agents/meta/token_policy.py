"""The token-policy interface under DERL's GRPO, its GRU implementation, and the GRPO step.

A :class:`TokenPolicy` writes formulas as sequences of token ids under a per-step mask (the
grammar, or a tokenizer-level constraint that follows it), so every sample is a valid formula.
DERL needs four operations from it:

* :meth:`TokenPolicy.sample` -- ``n`` sequences with the log-probability of each sampled token;
* :meth:`TokenPolicy.log_prob_table` -- masked, tempered log-probabilities ``[B, L, V]`` of given
  sequences (for the policy or its frozen reference), with gradients for the policy;
* :meth:`TokenPolicy.sync_reference` -- freeze a copy of the current weights as the KL reference;
* :meth:`TokenPolicy.state_dict` / :meth:`TokenPolicy.load_state_dict` -- JSON-safe state: tensors
  are safetensors bytes in base64 (:mod:`derl_gym.agents.meta.safe_state`, never pickle).

:class:`GRUTokenPolicy` (embedding -> GRU -> head over the grammar's tokens, ~20k parameters) is
one implementation; :class:`derl_gym.agents.meta.lm_policy.CausalLMPolicy` (a Hugging Face causal
LM, constrained at the tokenizer level) is the other. :func:`grpo_step` and :func:`supervised_fit`
work on either, so both get the same advantages, clipping, KL term and entropy bonus.
"""

from __future__ import annotations

import abc
import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from derl_gym.agents.meta.safe_state import decode_tensors, encode_tensors

logger = logging.getLogger(__name__)

#: Logit given to masked-out tokens (finite, so padding rows stay NaN-free).
MASKED_LOGIT = -1e9


def _torch():
    import torch

    return torch


# ---------------------------------------------------------------------- the interface

@dataclass
class Sample:
    """One sampled sequence: ``ids`` (token ids, the end token included), ``log_probs`` (the
    tempered, masked log-probability of each token) and ``text`` (the decoded formula).

    Example:
        >>> import numpy as np
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.token_policy import GRUTokenPolicy
        >>> grammar = make_grammar(2, max_tokens=10)
        >>> sample = GRUTokenPolicy(grammar, seed=0, device="cpu").sample(1, np.random.default_rng(0))[0]
        >>> sample.ids[-1] == grammar.end_id, len(sample.log_probs) == len(sample.ids), grammar.fits(sample.text)
        (True, True, True)
    """

    ids: list[int]
    log_probs: list[float]
    text: str


class TokenPolicy(abc.ABC):
    """A masked autoregressive policy over some token vocabulary (see the module docstring).

    Implementations keep ``self.model`` (the trained ``torch.nn.Module``), ``self.reference``
    (its frozen copy) and ``self.device``; ``vocab_size`` is the size of the distribution.

    Example:
        >>> import numpy as np
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.token_policy import GRUTokenPolicy, TokenPolicy
        >>> policy = GRUTokenPolicy(make_grammar(2, max_tokens=10), seed=0, device="cpu")  # one implementation
        >>> isinstance(policy, TokenPolicy), policy.decode(policy.encode("g1 + 0.5*g2"))
        (True, 'g1 + 0.5*g2')
        >>> samples = policy.sample(2, np.random.default_rng(0))
        >>> np.allclose(policy.sequence_log_probs([s.ids for s in samples]), [sum(s.log_probs) for s in samples], atol=1e-4)
        True
    """

    vocab_size: int
    device: Any
    model: Any
    reference: Any

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> list[Sample]:
        """Return ``n`` samples drawn under the mask; each ends with the end token."""

    @abc.abstractmethod
    def log_prob_table(self, sequences: Sequence[Sequence[int]], temperature: float = 1.0,
                       reference: bool = False):
        """Return ``(log_probs [B, L, V], targets [B, L], valid [B, L])`` tensors for ``sequences``.

        ``log_probs`` are the masked, tempered log-probabilities before each position (with
        gradients unless ``reference``); ``valid`` marks real positions (padding is False).
        """

    @abc.abstractmethod
    def encode(self, text: str) -> list[int] | None:
        """Return ``text`` as a token sequence the mask allows (end token included), or None."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Return the formula text of a token sequence."""

    # ------------------------------------------------------------------ shared behaviour
    def parameters(self) -> Iterable[Any]:
        """Return the trainable parameters (those with ``requires_grad``)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def sync_reference(self) -> None:
        """Make the frozen reference a copy of the current weights."""
        self.reference = copy.deepcopy(self.model)
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.reference.train(False)

    def sequence_log_probs(self, sequences: Sequence[Sequence[int]], temperature: float = 1.0) -> list[float]:
        """Return the total log-probability of each sequence under the policy (no gradients)."""
        torch = _torch()
        if not sequences:
            return []
        with torch.no_grad():
            table, targets, valid = self.log_prob_table(sequences, temperature)
            logp = table.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            return [float(v) for v in (logp * valid).sum(1).double().cpu()]

    def named_parameters(self) -> Iterable[tuple[str, Any]]:
        """Return the model's ``(name, parameter)`` pairs (trainable or not)."""
        return self.model.named_parameters()

    def _weights(self, module: Any) -> dict[str, Any]:
        """Return the tensors of ``module`` that :meth:`state_dict` saves (default: all of them)."""
        return dict(module.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"policy": blob, "reference": blob}``: weights as safetensors (base64, JSON-safe)."""
        return {"policy": encode_tensors(self._weights(self.model)),
                "reference": encode_tensors(self._weights(self.reference))}

    def load_weights(self, policy: dict[str, Any], reference: dict[str, Any]) -> None:
        """Load decoded tensors (``{name: tensor}``) into the policy and its reference; raises
        ``ValueError`` naming tensors this policy does not have."""
        known = set(self.model.state_dict())
        unknown = sorted((set(policy) | set(reference)) - known)
        if unknown:
            raise ValueError(f"state holds tensors {unknown[:5]} that this policy does not have; it was written "
                             "for another model (load it into the same policy kind, model and grammar)")
        self.model.load_state_dict(policy, strict=False)
        self.reference.load_state_dict(reference, strict=False)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the weights written by :meth:`state_dict`; raises ``UnsafeStateError`` (a
        ``ValueError``) for anything not in the safe format, before changing any weight."""
        policy = decode_tensors(state.get("policy"), where="state['policy'] (token policy weights)")
        reference = decode_tensors(state.get("reference"), where="state['reference'] (KL reference weights)")
        self.load_weights(policy, reference)


# ---------------------------------------------------------------------- GRU implementation

def _build_gru(vocab_size: int, embed_dim: int, hidden_dim: int):
    """Return the module embedding -> GRU -> linear head; BOS id = ``vocab_size``."""
    torch = _torch()
    nn = torch.nn

    class GRUNet(nn.Module):
        """Autoregressive net over grammar tokens; returns ``(logits [B, L, V], hidden)``."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size + 1, embed_dim)
            self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
            self.head = nn.Linear(hidden_dim, vocab_size)

        def forward(self, inputs, hidden=None):
            out, hidden = self.rnn(self.embed(inputs), hidden)
            return self.head(out), hidden

    return GRUNet()


class GRUTokenPolicy(TokenPolicy):
    """A small GRU over the grammar's own tokens, masked at every step by ``grammar.valid_next``
    narrowed to formulas that read at least one variable
    (:class:`~derl_gym.agents.meta.constrained.VariableGrammarMask`).

    ``seed`` fixes the initial weights; ``device`` defaults to CUDA when available.

    Example:
        >>> import numpy as np
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.token_policy import GRUTokenPolicy
        >>> grammar = make_grammar(2, max_tokens=10)
        >>> policy = GRUTokenPolicy(grammar, seed=0, device="cpu")
        >>> texts = [sample.text for sample in policy.sample(4, np.random.default_rng(0))]
        >>> all(grammar.fits(text) and "g" in text for text in texts)  # masked: every sample parses and reads a variable
        True
        >>> policy.encode("g1 + 0.5*g2") == grammar.encode("g1 + 0.5*g2")
        True
    """

    def __init__(self, grammar: Any, seed: int = 0, embed_dim: int = 32, hidden_dim: int = 64,
                 device: str | None = None) -> None:
        torch = _torch()
        self.grammar = grammar
        self.vocab_size = int(grammar.vocab_size)
        self.end_id = int(grammar.end_id)
        self.bos_id = self.vocab_size
        self.max_tokens = int(grammar.max_tokens)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        from derl_gym.agents.meta.constrained import VariableGrammarMask

        self.masks = VariableGrammarMask(grammar)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.model = _build_gru(self.vocab_size, embed_dim, hidden_dim).to(self.device)
        self.sync_reference()

    def _mask(self, prefix: Sequence[int]) -> np.ndarray:
        return self.masks.valid_next(prefix)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> list[Sample]:
        """Return ``n`` grammar-masked samples (numpy ``rng`` draws the tokens: reproducible)."""
        torch = _torch()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        sequences: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        if n == 0:
            return []
        done = np.zeros(n, dtype=bool)
        hidden = None
        tokens = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        self.model.train(False)
        with torch.no_grad():
            for _ in range(self.max_tokens):
                logits, hidden = self.model(tokens, hidden)
                logits = (logits[:, -1, :] / temperature).double().cpu().numpy()
                next_tokens = np.full(n, self.end_id, dtype=np.int64)
                for b in range(n):
                    if done[b]:
                        continue
                    mask = self._mask(sequences[b])
                    if not mask.any():
                        raise RuntimeError(f"grammar allows no token after {sequences[b]!r}; "
                                           "the grammar's masks must always allow END or a continuation")
                    row = np.where(mask, logits[b], -np.inf)
                    probs = np.exp(row - row.max())
                    cdf = np.cumsum(probs)
                    token = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), self.vocab_size - 1))
                    while not mask[token]:  # float edge case: step back to a valid token
                        token -= 1
                    sequences[b].append(token)
                    logps[b].append(float(math.log(probs[token] / cdf[-1])))
                    next_tokens[b] = token
                    if token == self.end_id:
                        done[b] = True
                if done.all():
                    break
                tokens = torch.as_tensor(next_tokens, device=self.device).view(n, 1)
        for b, seq in enumerate(sequences):
            if not done[b]:
                raise RuntimeError(f"sample did not end within max_tokens={self.max_tokens}: "
                                   f"{self.grammar.decode(seq)!r}; the grammar must force END in time")
        return [Sample(seq, lp, self.grammar.decode(seq)) for seq, lp in zip(sequences, logps)]

    def log_prob_table(self, sequences: Sequence[Sequence[int]], temperature: float = 1.0,
                       reference: bool = False):
        """Return ``(log_probs, targets, valid)`` for teacher-forced ``sequences`` (see the base class)."""
        torch = _torch()
        length = max(len(s) for s in sequences)
        batch = len(sequences)
        inputs = np.full((batch, length), self.bos_id, dtype=np.int64)
        targets = np.zeros((batch, length), dtype=np.int64)
        valid = np.zeros((batch, length), dtype=bool)
        masks = np.ones((batch, length, self.vocab_size), dtype=bool)  # padding: any finite distribution
        for b, seq in enumerate(sequences):
            inputs[b, 1:len(seq)] = seq[:-1]
            targets[b, :len(seq)] = seq
            valid[b, :len(seq)] = True
            for t in range(len(seq)):
                masks[b, t] = self._mask(seq[:t])
        to = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        model = self.reference if reference else self.model
        if reference:
            with torch.no_grad():
                logits, _ = model(to(inputs))
        else:
            logits, _ = model(to(inputs))
        logits = torch.where(to(masks), logits / temperature, torch.full_like(logits, MASKED_LOGIT))
        return torch.log_softmax(logits, dim=-1), to(targets), to(valid)

    def encode(self, text: str) -> list[int] | None:
        """Return the grammar token ids of ``text`` ending in END, or None when the grammar cannot write it."""
        try:
            ids = [int(i) for i in self.grammar.encode(text)]
        except Exception as exc:  # noqa: BLE001  (a grammar error of any kind means: not encodable)
            logger.debug("cannot encode %r: %s", text, exc)
            return None
        if not ids or ids[-1] != self.end_id:
            ids.append(self.end_id)
        if len(ids) > self.max_tokens:
            return None
        for t, token in enumerate(ids):
            if not (0 <= token < self.vocab_size) or not self._mask(ids[:t])[token]:
                return None
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Return the formula text of grammar token ids."""
        return self.grammar.decode(ids)


# ---------------------------------------------------------------------- learning

def supervised_fit(policy: TokenPolicy, sequences: Sequence[Sequence[int]], steps: int, lr: float,
                   batch_size: int = 64, rng: np.random.Generator | None = None) -> float:
    """Fit ``policy`` to ``sequences`` by token cross-entropy (Adam, ``steps`` minibatch steps);
    returns the last minibatch loss. The caller decides whether to :meth:`~TokenPolicy.sync_reference`.

    Example:
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.token_policy import GRUTokenPolicy, supervised_fit
        >>> policy = GRUTokenPolicy(make_grammar(2, max_tokens=10), seed=0, device="cpu")
        >>> target = [policy.encode("g1 + 0.5*g2")]
        >>> before = policy.sequence_log_probs(target)[0]
        >>> loss = supervised_fit(policy, target, steps=30, lr=0.05)
        >>> policy.sequence_log_probs(target)[0] > before, loss < 0.1
        (True, True)
    """
    torch = _torch()
    sequences = [list(s) for s in sequences]
    if not sequences:
        raise ValueError("supervised_fit needs at least one sequence")
    rng = rng if rng is not None else np.random.default_rng(0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    policy.model.train()
    loss_value = math.nan
    for _ in range(int(steps)):
        if len(sequences) > batch_size:
            batch = [sequences[i] for i in rng.choice(len(sequences), size=batch_size, replace=False)]
        else:
            batch = sequences
        table, targets, valid = policy.log_prob_table(batch)
        logp = table.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        validf = valid.float()
        loss = -(logp * validf).sum() / validf.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    policy.model.train(False)
    return loss_value


def group_advantages(scores: np.ndarray, eps: float = 1e-6) -> np.ndarray | None:
    """Return GRPO's group-relative advantages ``(s - mean) / (std + eps)``, or None when the group
    has fewer than two members or all scores are equal (no signal).

    Example:
        >>> import numpy as np
        >>> from derl_gym.agents.meta.token_policy import group_advantages
        >>> group_advantages(np.array([0.0, 1.0, 1.0, 0.0])).round(3).tolist()
        [-1.0, 1.0, 1.0, -1.0]
        >>> group_advantages(np.array([0.5, 0.5])) is None  # equal scores: no signal
        True
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2 or float(scores.std()) < 1e-12:
        return None
    return (scores - scores.mean()) / (scores.std() + eps)


def grpo_step(policy: TokenPolicy, optimizer: Any, sequences: Sequence[Sequence[int]], advantages: np.ndarray, *,
              temperature: float = 1.0, clip: float = 0.2, kl_coef: float = 0.05, entropy_coef: float = 0.0,
              epochs: int = 1, max_grad_norm: float = 1.0) -> dict[str, Any]:
    """Take one GRPO update on a scored group; returns its statistics.

    Loss per epoch: ``-mean_seq(clipped surrogate) + kl_coef * KL(pi || pi_ref) - entropy_coef * H(pi)``,
    each averaged over a sequence's tokens, where the ratio is against the policy that sampled the
    group, KL and entropy are exact over the masked next-token distribution. Stats: ``loss``,
    ``kl``, ``entropy`` (nats per token), ``clip_fraction`` (last epoch), ``adv_std``,
    ``adv_spread`` (max - min advantage), ``mean_abs_advantage``, ``updated``.

    Example:
        >>> import numpy as np, torch
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.token_policy import GRUTokenPolicy, group_advantages, grpo_step
        >>> policy = GRUTokenPolicy(make_grammar(2, max_tokens=10), seed=0, device="cpu")
        >>> optimizer = torch.optim.Adam(policy.parameters(), lr=0.01)
        >>> group = [sample.ids for sample in policy.sample(4, np.random.default_rng(1))]
        >>> stats = grpo_step(policy, optimizer, group, group_advantages(np.array([0.0, 1.0, 0.0, 1.0])))
        >>> stats["updated"], {"loss", "kl", "entropy", "clip_fraction"} <= set(stats)
        (True, True)
    """
    torch = _torch()
    with torch.no_grad():
        table_old, targets, valid = policy.log_prob_table(sequences, temperature)
        old_logp = table_old.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ref_table, _, _ = policy.log_prob_table(sequences, temperature, reference=True)
    del table_old
    adv = torch.as_tensor(np.asarray(advantages, dtype=np.float32), device=policy.device).unsqueeze(-1)
    validf = valid.float()
    counts = validf.sum(1).clamp(min=1.0)
    stats: dict[str, Any] = {}
    policy.model.train()
    for epoch in range(int(epochs)):
        table, _, _ = policy.log_prob_table(sequences, temperature)
        logp = table.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ratio = torch.exp(logp - old_logp)
        surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv)
        probs = table.exp()
        kl_tok = (probs * (table - ref_table)).sum(-1)
        ent_tok = -(probs * table).sum(-1)
        per_seq = lambda x: (x * validf).sum(1) / counts  # noqa: E731
        kl = per_seq(kl_tok).mean()
        entropy = per_seq(ent_tok).mean()
        loss = -per_seq(surrogate).mean() + kl_coef * kl - entropy_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(policy.parameters()), max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            clipped = ((ratio - 1.0).abs() > clip).float()
            stats["clip_fraction"] = float((clipped * validf).sum() / validf.sum())
        stats.update(loss=float(loss.detach()), kl=float(kl.detach()), entropy=float(entropy.detach()))
        del table, probs
    policy.model.train(False)
    a = np.asarray(advantages, dtype=np.float64)
    stats.update(updated=True, adv_std=float(a.std()), adv_spread=float(a.max() - a.min()),
                 mean_abs_advantage=float(np.abs(a).mean()))
    return stats
