"""DERL and DERL-pop: a small autoregressive policy over grammar tokens trained with GRPO.

The policy (token embedding -> GRU -> logits) writes a formula token by token; at every step the
logits of tokens the grammar forbids are masked out (constrained decoding), so every sample is a
valid formula that ends with END within ``max_tokens``. One DERL iteration samples a group of G
formulas, the inner loop scores them, and :meth:`DERL.update` takes a GRPO step:

* group-relative advantages ``A_i = (s_i - mean(s)) / (std(s) + eps)`` (an all-equal group has
  no signal: no update);
* a PPO-style clipped surrogate on the token log-probabilities of the sampled sequences, for
  ``epochs`` passes over the group, where the "old" log-probabilities are those of the policy
  that sampled the group;
* an exact per-token KL penalty ``KL(pi || pi_ref)`` over the masked next-token distribution,
  where ``pi_ref`` is the frozen initial policy (or the cold-started policy, see below).

Optional cold start: before the first iteration, supervised fitting (cross-entropy) on the token
sequences of a list of seed formulas (e.g. ``"g1"``, ``"g1 + 0.5*g2"``, ...); the cold-started
policy becomes the KL reference.

DERL-pop is the same optimizer with ``warm_start_inner = True``: the evolve loop then starts each
inner training from the best inner agent of the previous iteration (same inner budget per run).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Sequence

import numpy as np

from derl_gym.agents.meta.base import DEFAULT_MAX_TOKENS, GrammarOptimizer, default_seed_formulas
from derl_gym.agents.meta.safe_state import (
    decode_optimizer_state,
    decode_tensors,
    encode_optimizer_state,
    encode_tensors,
)

logger = logging.getLogger(__name__)

_NEG = -1e9  # logit for masked-out tokens (finite, so fully-masked padding rows stay NaN-free)


def _torch():
    import torch

    return torch


def _build_policy(vocab_size: int, embed_dim: int, hidden_dim: int):
    """Return the token policy module (embedding -> GRU -> linear head); BOS id = ``vocab_size``."""
    torch = _torch()
    nn = torch.nn

    class TokenPolicy(nn.Module):
        """Autoregressive policy over grammar tokens; returns logits ``[B, L, vocab_size]``."""

        def __init__(self) -> None:
            super().__init__()
            self.vocab_size = vocab_size
            self.embed = nn.Embedding(vocab_size + 1, embed_dim)
            self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
            self.head = nn.Linear(hidden_dim, vocab_size)

        def forward(self, inputs, hidden=None):
            out, hidden = self.rnn(self.embed(inputs), hidden)
            return self.head(out), hidden

    return TokenPolicy()


class DERL(GrammarOptimizer):
    """Differentiable Evolutionary RL meta-optimizer: GRPO on a token policy.

    Parameters: ``group_size`` is informational (``propose(n)`` decides the group); ``lr`` Adam
    learning rate; ``clip`` PPO ratio clip; ``kl_coef`` weight of the KL to the reference policy;
    ``epochs`` gradient passes per update; ``temperature`` sampling temperature (the policy's
    log-probabilities are those of the tempered distribution, so the ratio is on-policy);
    ``seed_formulas`` / ``cold_start`` (``True`` = :func:`default_seed_formulas`) enable the
    supervised cold start with ``cold_start_steps`` Adam steps at ``cold_start_lr``;
    ``device`` defaults to CUDA when available, else CPU (CPU runs are deterministic per seed).
    """

    name = "derl"
    warm_start_inner = False

    def __init__(self, num_variables: int, seed: int = 0, *, grammar: Any = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, constants: Sequence[str] | None = None,
                 lr: float = 3e-3, clip: float = 0.2, kl_coef: float = 0.05, epochs: int = 4,
                 temperature: float = 1.0, embed_dim: int = 32, hidden_dim: int = 64,
                 adv_eps: float = 1e-6, max_grad_norm: float = 1.0,
                 cold_start: bool = False, seed_formulas: Sequence[str] | None = None,
                 cold_start_steps: int = 150, cold_start_lr: float = 1e-2,
                 device: str | None = None) -> None:
        super().__init__(num_variables, seed, grammar=grammar, max_tokens=max_tokens, constants=constants)
        torch = _torch()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        self.lr, self.clip, self.kl_coef, self.epochs = float(lr), float(clip), float(kl_coef), int(epochs)
        self.temperature, self.adv_eps, self.max_grad_norm = float(temperature), float(adv_eps), float(max_grad_norm)
        self.max_tokens = int(getattr(self.grammar, "max_tokens", max_tokens))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.vocab_size = int(self.grammar.vocab_size)
        self.bos_id = self.vocab_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = _build_policy(self.vocab_size, embed_dim, hidden_dim).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        #: formula text -> token ids of the sequences proposed and not yet updated on.
        self._pending: dict[str, list[int]] = {}
        self.cold_start_stats: dict[str, Any] = {}
        if seed_formulas is None and cold_start:
            seed_formulas = default_seed_formulas(self.num_variables)
        if seed_formulas:
            self.cold_start_stats = self.cold_start(seed_formulas, steps=cold_start_steps, lr=cold_start_lr)
        self.reference = self._frozen_copy()

    # ------------------------------------------------------------------ helpers
    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters of the token policy."""
        return sum(p.numel() for p in self.policy.parameters())

    def _frozen_copy(self):
        ref = copy.deepcopy(self.policy)
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref.train(False)

    def _masks_for(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Return bool masks ``[B, L, V]``: the grammar's valid tokens before each position."""
        length = max(len(s) for s in sequences)
        masks = np.zeros((len(sequences), length, self.vocab_size), dtype=bool)
        for b, seq in enumerate(sequences):
            for t in range(len(seq)):
                masks[b, t] = np.asarray(self.grammar.valid_next(list(seq[:t])), dtype=bool)
        return masks

    def _batch(self, sequences: Sequence[Sequence[int]]):
        """Return (inputs, targets, masks, valid) tensors for teacher-forced scoring."""
        torch = _torch()
        length = max(len(s) for s in sequences)
        inputs = np.full((len(sequences), length), self.bos_id, dtype=np.int64)
        targets = np.zeros((len(sequences), length), dtype=np.int64)
        valid = np.zeros((len(sequences), length), dtype=bool)
        for b, seq in enumerate(sequences):
            inputs[b, 1:len(seq)] = seq[:-1]
            targets[b, :len(seq)] = seq
            valid[b, :len(seq)] = True
        masks = self._masks_for(sequences)
        masks[~valid] = True  # padding rows: any finite distribution, excluded from losses
        to = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return to(inputs), to(targets), to(masks), to(valid)

    def _log_probs(self, model, inputs, masks):
        """Return masked, tempered log-probabilities ``[B, L, V]`` of ``model``."""
        torch = _torch()
        logits, _ = model(inputs)
        logits = logits / self.temperature
        logits = torch.where(masks, logits, torch.full_like(logits, _NEG))
        return torch.log_softmax(logits, dim=-1)

    def _check_sequence(self, ids: Sequence[int]) -> bool:
        """True when ``ids`` is a complete sequence the grammar's masks allow token by token."""
        if not ids or ids[-1] != self.grammar.end_id or len(ids) > self.max_tokens:
            return False
        for t, token in enumerate(ids):
            mask = self.grammar.valid_next(list(ids[:t]))
            if not (0 <= token < self.vocab_size) or not mask[token]:
                return False
        return True

    def _encode(self, text: str) -> list[int] | None:
        """Return ``text`` as a grammar-valid token sequence ending in END, or None."""
        try:
            ids = [int(i) for i in self.grammar.encode(text)]
        except Exception as exc:  # noqa: BLE001  (a grammar error of any kind means: not encodable)
            logger.debug("cannot encode %r: %s", text, exc)
            return None
        if not ids or ids[-1] != self.grammar.end_id:
            ids.append(int(self.grammar.end_id))
        return ids if self._check_sequence(ids) else None

    # ------------------------------------------------------------------ sampling
    def sample_sequences(self, n: int) -> list[list[int]]:
        """Return ``n`` token sequences sampled from the masked policy (each ends with END)."""
        torch = _torch()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        sequences: list[list[int]] = [[] for _ in range(n)]
        if n == 0:
            return sequences
        done = np.zeros(n, dtype=bool)
        hidden = None
        tokens = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        self.policy.train(False)
        with torch.no_grad():
            for _ in range(self.max_tokens):
                logits, hidden = self.policy(tokens, hidden)
                logits = (logits[:, -1, :] / self.temperature).double().cpu().numpy()
                next_tokens = np.full(n, self.grammar.end_id, dtype=np.int64)
                for b in range(n):
                    if done[b]:
                        continue
                    mask = np.asarray(self.grammar.valid_next(sequences[b]), dtype=bool)
                    if not mask.any():
                        raise RuntimeError(f"grammar allows no token after {sequences[b]!r}; "
                                           "the grammar's masks must always allow END or a continuation")
                    row = np.where(mask, logits[b], -np.inf)
                    probs = np.exp(row - row.max())
                    cdf = np.cumsum(probs)
                    u = self.rng.random() * cdf[-1]
                    token = int(min(np.searchsorted(cdf, u, side="right"), self.vocab_size - 1))
                    while not mask[token]:  # float edge case: step back to a valid token
                        token -= 1
                    sequences[b].append(token)
                    next_tokens[b] = token
                    if token == self.grammar.end_id:
                        done[b] = True
                if done.all():
                    break
                tokens = torch.as_tensor(next_tokens, device=self.device).view(n, 1)
        for b, seq in enumerate(sequences):
            if not done[b]:
                raise RuntimeError(f"sample did not end within max_tokens={self.max_tokens}: "
                                   f"{self.grammar.decode(seq)!r}; the grammar must force END in time")
        return sequences

    def propose(self, n: int) -> list[str]:
        """Return ``n`` formulas sampled from the policy with grammar-constrained decoding."""
        sequences = self.sample_sequences(n)
        texts = [self.grammar.decode(seq) for seq in sequences]
        for text, seq in zip(texts, sequences):
            self._pending[text] = seq
        return texts

    def sequence_log_prob(self, text: str) -> float:
        """Return the policy's log-probability of writing ``text`` (``-inf`` if not encodable)."""
        torch = _torch()
        ids = self._encode(text)
        if ids is None:
            return -math.inf
        inputs, targets, masks, valid = self._batch([ids])
        with torch.no_grad():
            logp = self._log_probs(self.policy, inputs, masks).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return float((logp * valid).sum())

    # ------------------------------------------------------------------ learning
    def cold_start(self, formulas: Sequence[str], steps: int = 150, lr: float = 1e-2) -> dict[str, Any]:
        """Fit the policy to ``formulas`` by cross-entropy; returns stats (loss, used, skipped).

        Formulas the grammar cannot write are skipped with a warning. The KL reference becomes
        the fitted policy.
        """
        torch = _torch()
        sequences, skipped = [], []
        for text in formulas:
            ids = self._encode(text)
            (sequences.append(ids) if ids is not None else skipped.append(text))
        if skipped:
            logger.warning("cold start: the grammar cannot write %s; skipped", skipped)
        if not sequences:
            raise ValueError(f"cold start: none of the seed formulas {list(formulas)!r} can be written by the "
                             "grammar; pass formulas over g1..gK with the grammar's constants")
        inputs, targets, masks, valid = self._batch(sequences)
        optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.policy.train()
        loss_value = math.nan
        for _ in range(int(steps)):
            logp = self._log_probs(self.policy, inputs, masks).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            loss = -(logp * valid).sum() / valid.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
        self.reference = self._frozen_copy()
        return {"cold_start_loss": loss_value, "cold_start_used": len(sequences), "cold_start_skipped": skipped}

    def _learn(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        """One GRPO update on the group of scored formulas (the base class dropped unscored ones);
        returns loss, kl, clip fraction, mean |advantage| and ``group_size``, the number of
        sequences in the group."""
        torch = _torch()
        sequences, kept = [], []
        for i, text in enumerate(expressions):
            ids = self._pending.get(text)
            if ids is None:
                ids = self._encode(text)
            if ids is None:
                logger.warning("DERL update: %r is not a sequence this grammar writes; ignored", text)
                continue
            sequences.append(ids)
            kept.append(i)
        self._pending.clear()
        stats: dict[str, Any] = {"updated": False, "loss": 0.0, "kl": 0.0, "clip_fraction": 0.0,
                                 "group_size": len(sequences)}
        if len(sequences) < 2:
            return stats
        group = scores[kept]
        std = float(group.std())
        if std < 1e-12:
            return stats  # all-equal group: zero advantages, nothing to learn
        adv = (group - group.mean()) / (std + self.adv_eps)
        inputs, targets, masks, valid = self._batch(sequences)
        advantages = torch.as_tensor(adv, dtype=torch.float32, device=self.device).unsqueeze(-1)
        validf = valid.float()
        counts = validf.sum(dim=1).clamp(min=1.0)
        with torch.no_grad():
            old_logp = self._log_probs(self.policy, inputs, masks).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            ref_logp_all = self._log_probs(self.reference, inputs, masks)
        self.policy.train()
        for _ in range(self.epochs):
            logp_all = self._log_probs(self.policy, inputs, masks)
            logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            ratio = torch.exp(logp - old_logp)
            surrogate = torch.minimum(ratio * advantages,
                                      torch.clamp(ratio, 1.0 - self.clip, 1.0 + self.clip) * advantages)
            probs = logp_all.exp()
            kl_tok = (probs * (logp_all - ref_logp_all)).sum(-1)  # exact KL over the masked distribution
            per_seq_surr = (surrogate * validf).sum(1) / counts
            per_seq_kl = (kl_tok * validf).sum(1) / counts
            loss = -per_seq_surr.mean() + self.kl_coef * per_seq_kl.mean()
            self.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.optimizer.step()
            with torch.no_grad():
                clipped = ((ratio - 1.0).abs() > self.clip).float()
                stats["clip_fraction"] = float((clipped * validf).sum() / validf.sum())
            stats["loss"] = float(loss.detach())
            stats["kl"] = float(per_seq_kl.mean().detach())
        stats.update(updated=True, mean_abs_advantage=float(np.abs(adv).mean()))
        return stats

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "policy": encode_tensors(self.policy.state_dict()),
            "reference": encode_tensors(self.reference.state_dict()),
            "optimizer": encode_optimizer_state(self.optimizer.state_dict()),
            "pending": {text: list(map(int, ids)) for text, ids in self._pending.items()},
            "hparams": {"lr": self.lr, "clip": self.clip, "kl_coef": self.kl_coef, "epochs": self.epochs,
                        "temperature": self.temperature, "vocab_size": self.vocab_size,
                        "max_tokens": self.max_tokens},
        }

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        vocab = extra.get("hparams", {}).get("vocab_size", self.vocab_size)
        if vocab != self.vocab_size:
            raise ValueError(f"state dict was written for a grammar with {vocab} tokens, this one has "
                             f"{self.vocab_size}; use the same num_variables and constants")
        # decode all three before loading any: a refused blob leaves the weights as they were
        policy = decode_tensors(extra.get("policy"), where="state['extra']['policy'] (token policy weights)")
        reference = decode_tensors(extra.get("reference"), where="state['extra']['reference'] (KL reference weights)")
        optimizer = decode_optimizer_state(extra.get("optimizer"), where="state['extra']['optimizer'] (Adam state)")
        self.policy.load_state_dict(policy)
        self.reference.load_state_dict(reference)
        self.optimizer.load_state_dict(optimizer)
        self._pending = {text: list(ids) for text, ids in extra.get("pending", {}).items()}


class DERLPop(DERL):
    """DERL-pop: DERL whose evolve loop warm-starts each inner run from the previous iteration's
    best inner agent (``warm_start_inner = True``); the meta-optimizer itself is identical."""

    name = "derl-pop"
    warm_start_inner = True
