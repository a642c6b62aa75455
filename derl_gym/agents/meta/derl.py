"""DERL and DERL-pop: a token policy that writes Meta-Rewards, trained with GRPO.

The policy is a :class:`~derl_gym.agents.meta.token_policy.TokenPolicy`: by default a small GRU
over the grammar's tokens (:class:`~derl_gym.agents.meta.token_policy.GRUTokenPolicy`, ~20k
parameters), or, with ``meta_model=``, a Hugging Face causal language model reading the paper's
meta-prompt (:class:`~derl_gym.agents.meta.lm_policy.CausalLMPolicy`; ``meta_model="tiny"`` is
the offline tiny model, any other value a local model folder). Either writes under a per-step
mask (the grammar, or the grammar mapped onto the tokenizer), so every sample is a valid formula
that uses a variable and ends within ``max_tokens`` grammar tokens. One DERL iteration samples a
group of G formulas, the inner loop scores them, and :meth:`DERL.update` takes a GRPO step
(:func:`~derl_gym.agents.meta.token_policy.grpo_step`, the same for both policies):

* group-relative advantages ``A_i = (s_i - mean(s)) / (std(s) + eps)`` (an all-equal group has
  no signal: no update);
* a PPO-style clipped surrogate on the token log-probabilities of the sampled sequences, for
  ``epochs`` passes over the group, against the policy that sampled the group;
* an exact per-token KL penalty ``KL(pi || pi_ref)`` over the masked next-token distribution,
  where ``pi_ref`` is the frozen cold-started policy;
* an entropy bonus ``entropy_coef * H(pi)`` that keeps small groups from collapsing onto one
  formula (with groups of 4, GRPO alone sharpens the policy until every group is identical and
  every later formula is a cache hit).

Cold start (on by default, as in the paper): before the first iteration, a supervised fit on the
shipped seed formulas (:mod:`derl_gym.agents.meta.seed_formulas`, about 200, adapted to K); the
fitted policy becomes the KL reference. Each update's stats (loss, kl, entropy, clip fraction,
advantage spread) are logged and returned, so the evolve loop stores them per iteration.

DERL-pop is the same optimizer with ``warm_start_inner = True``: the evolve loop then starts each
inner training from the best inner agent of the previous iteration (same inner budget per run).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from derl_gym.agents.meta.base import DEFAULT_MAX_TOKENS, GrammarOptimizer
from derl_gym.agents.meta.safe_state import (
    decode_optimizer_state,
    decode_tensors,
    encode_optimizer_state,
)
from derl_gym.agents.meta.token_policy import (
    GRUTokenPolicy,
    TokenPolicy,
    group_advantages,
    grpo_step,
    supervised_fit,
)

logger = logging.getLogger(__name__)

#: Defaults per policy kind: what works on the stand-in objective with groups of 4 (see README).
#: The paper's values for Qwen2.5-0.5B-Instruct are lr 1e-6, kl 0.001, temperature 0.7, group 8.
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gru": {"lr": 1e-3, "kl_coef": 0.05, "epochs": 4, "temperature": 1.0, "entropy_coef": 0.02,
            "cold_start_steps": 150, "cold_start_lr": 1e-2},
    "lm": {"lr": 1e-4, "kl_coef": 0.01, "epochs": 2, "temperature": 1.0, "entropy_coef": 0.02,
           "cold_start_steps": 60, "cold_start_lr": 1e-3},
}


def _torch():
    import torch

    return torch


class DERL(GrammarOptimizer):
    """Differentiable Evolutionary RL meta-optimizer: GRPO on a token policy.

    Policy: ``policy`` (a :class:`TokenPolicy` instance) or ``meta_model`` (``"tiny"`` or a local
    causal-LM folder; default: the GRU with ``embed_dim``/``hidden_dim``). The LM's prompt is
    built from ``task`` (a sentence about the inner task), ``primitives`` (a ``PrimitiveSet`` or its
    description text; default ``g1..gK`` generically) and three example formulas; ``lora`` (a
    dict of ``peft.LoraConfig`` arguments) trains LoRA adapters instead of all weights.

    GRPO: ``lr`` Adam learning rate; ``clip`` ratio clip; ``kl_coef`` KL weight; ``entropy_coef``
    entropy bonus; ``epochs`` gradient passes per update; ``temperature`` sampling temperature
    (log-probabilities are those of the tempered distribution, so the ratio is on-policy).
    ``None`` takes :data:`POLICY_DEFAULTS` for the policy kind. ``group_size`` is informational
    (``propose(n)`` decides the group).

    Cold start: ``cold_start=True`` (default) fits the shipped seed formulas (or
    ``seed_formulas``) with ``cold_start_steps`` Adam steps at ``cold_start_lr``; ``False`` skips it.
    ``device`` defaults to CUDA when available, else CPU (CPU runs are deterministic per seed).

    Example:
        >>> from derl_gym.agents.meta.derl import DERL
        >>> optimizer = DERL(2, seed=0, max_tokens=10, cold_start_steps=20, device="cpu")  # GRU policy, seeds fitted
        >>> optimizer.kind, optimizer.cold_start_stats["cold_start_used"] > 0
        ('gru', True)
        >>> group = optimizer.propose(4)
        >>> stats = optimizer.update(group, [0.1, 0.9, 0.3, 0.5])  # one GRPO step on the scored group
        >>> stats["iteration"], stats["max_score"], "kl" in stats
        (1, 0.9, True)
        >>> resumed = DERL(2, seed=0, max_tokens=10, cold_start=False, device="cpu")
        >>> resumed.load_state_dict(optimizer.state_dict())  # weights, Adam state and RNG: exact resume
        >>> resumed.propose(4) == optimizer.propose(4)
        True
    """

    name = "derl"
    warm_start_inner = False

    def __init__(self, num_variables: int, seed: int = 0, *, grammar: Any = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, constants: Sequence[str] | None = None,
                 policy: TokenPolicy | None = None, meta_model: str | None = None, task: str = "",
                 primitives: Any = None, lora: dict[str, Any] | None = None,
                 lr: float | None = None, clip: float = 0.2, kl_coef: float | None = None,
                 entropy_coef: float | None = None, epochs: int | None = None, temperature: float | None = None,
                 embed_dim: int = 32, hidden_dim: int = 64, adv_eps: float = 1e-6, max_grad_norm: float = 1.0,
                 cold_start: bool = True, seed_formulas: Sequence[str] | None = None,
                 cold_start_steps: int | None = None, cold_start_lr: float | None = None,
                 group_size: int | None = None, device: str | None = None) -> None:
        super().__init__(num_variables, seed, grammar=grammar, max_tokens=max_tokens, constants=constants)
        torch = _torch()
        self.meta_model = str(meta_model) if meta_model is not None else None
        if policy is None:
            if self.meta_model is not None:
                policy = self._build_lm_policy(self.meta_model, task, primitives, lora, device)
            else:
                policy = GRUTokenPolicy(self.grammar, seed=self.seed, embed_dim=embed_dim, hidden_dim=hidden_dim,
                                        device=device)
        self.policy: TokenPolicy = policy
        self.kind = "gru" if isinstance(policy, GRUTokenPolicy) else "lm"
        defaults = POLICY_DEFAULTS[self.kind]
        pick = lambda value, key: defaults[key] if value is None else value  # noqa: E731
        self.lr, self.kl_coef = float(pick(lr, "lr")), float(pick(kl_coef, "kl_coef"))
        self.entropy_coef, self.epochs = float(pick(entropy_coef, "entropy_coef")), int(pick(epochs, "epochs"))
        self.temperature, self.clip = float(pick(temperature, "temperature")), float(clip)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs!r}")
        self.adv_eps, self.max_grad_norm = float(adv_eps), float(max_grad_norm)
        self.group_size = group_size
        self.max_tokens = int(getattr(self.grammar, "max_tokens", max_tokens))
        self.device = policy.device
        self.vocab_size = int(policy.vocab_size)
        #: formula text -> token ids of the sequences proposed and not yet updated on.
        self._pending: dict[str, list[int]] = {}
        self.cold_start_stats: dict[str, Any] = {}
        if seed_formulas is None and cold_start:
            from derl_gym.agents.meta.seed_formulas import seed_formulas as shipped

            seed_formulas = shipped(self.num_variables, self.grammar)
        if seed_formulas:
            self.cold_start_stats = self.cold_start(seed_formulas, steps=int(pick(cold_start_steps, "cold_start_steps")),
                                                    lr=float(pick(cold_start_lr, "cold_start_lr")))
        self.optimizer = torch.optim.Adam(list(self.policy.parameters()), lr=self.lr)

    def _build_lm_policy(self, meta_model: str, task: str, primitives: Any, lora: Any, device: str | None):
        from derl_gym.agents.meta.language import build_meta_prompt, describe_variables
        from derl_gym.agents.meta.lm_policy import CausalLMPolicy
        from derl_gym.agents.meta.seed_formulas import seed_formulas
        from derl_gym.models import load_causal_lm

        torch = _torch()
        model, tokenizer = load_causal_lm(meta_model, device=device or "auto",
                                          dtype="float32" if not torch.cuda.is_available() or device == "cpu" else "auto")
        if primitives is None:
            described = describe_variables(self.num_variables)
        elif isinstance(primitives, str):
            described = primitives
        else:
            described = primitives.describe()
        examples = seed_formulas(self.num_variables, self.grammar)[:1]
        examples += [f for f in (f"g1 + 0.5*g{self.num_variables}", "(g1 + g2)/2") if self.grammar.fits(f)]
        prompt = build_meta_prompt(described, task=task, examples=examples, answer="plain")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # LoRA initialisation
            return CausalLMPolicy(model, tokenizer, self.grammar, prompt, lora=lora, device=device)

    # ------------------------------------------------------------------ helpers
    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters of the token policy."""
        return self.policy.num_parameters

    @property
    def reference(self) -> Any:
        """The frozen KL reference module."""
        return self.policy.reference

    def _encode(self, text: str) -> list[int] | None:
        """Return ``text`` as a token sequence the policy's mask allows (end included), or None."""
        return self.policy.encode(text)

    # ------------------------------------------------------------------ sampling
    def sample_sequences(self, n: int) -> list[list[int]]:
        """Return ``n`` token sequences sampled from the masked policy (each ends with its end token)."""
        return [s.ids for s in self.policy.sample(n, self.rng, self.temperature)]

    def propose(self, n: int) -> list[str]:
        """Return ``n`` formulas sampled from the policy with constrained decoding."""
        samples = self.policy.sample(n, self.rng, self.temperature)
        for sample in samples:
            self._pending[sample.text] = list(sample.ids)
        return [s.text for s in samples]

    def sequence_log_prob(self, text: str) -> float:
        """Return the policy's log-probability of writing ``text`` (``-inf`` if not encodable)."""
        ids = self._encode(text)
        if ids is None:
            return -math.inf
        return self.policy.sequence_log_probs([ids], self.temperature)[0]

    # ------------------------------------------------------------------ learning
    def cold_start(self, formulas: Sequence[str], steps: int = 150, lr: float = 1e-2) -> dict[str, Any]:
        """Fit the policy to ``formulas`` by cross-entropy; returns stats (loss, used, skipped).

        Formulas the policy cannot write are skipped with a warning. The KL reference becomes
        the fitted policy.
        """
        sequences, skipped = [], []
        for text in formulas:
            ids = self._encode(text)
            (sequences.append(ids) if ids is not None else skipped.append(text))
        if skipped:
            logger.warning("cold start: the grammar cannot write %d formula(s), skipped: %s", len(skipped), skipped[:10])
        if not sequences:
            raise ValueError(f"cold start: none of the seed formulas {list(formulas)[:10]!r} can be written by the "
                             "grammar; pass formulas over g1..gK with the grammar's constants")
        torch = _torch()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            loss = supervised_fit(self.policy, sequences, steps=steps, lr=lr,
                                  rng=np.random.default_rng(self.seed))
        self.policy.sync_reference()
        return {"cold_start_loss": loss, "cold_start_used": len(sequences), "cold_start_skipped": skipped}

    def _learn(self, expressions: list[str], scores: np.ndarray) -> dict[str, Any]:
        """One GRPO update on the group of scored formulas (the base class dropped unscored ones);
        returns loss, kl, entropy, clip fraction, advantage spread and ``group_size``, the number
        of sequences in the group."""
        sequences, kept = [], []
        for i, text in enumerate(expressions):
            ids = self._pending.get(text)
            if ids is None:
                ids = self._encode(text)
            if ids is None:
                logger.warning("DERL update: %r is not a sequence this policy writes; ignored", text)
                continue
            sequences.append(ids)
            kept.append(i)
        self._pending.clear()
        stats: dict[str, Any] = {"updated": False, "loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": None,
                                 "adv_std": 0.0, "adv_spread": 0.0, "group_size": len(sequences)}
        adv = group_advantages(scores[kept], self.adv_eps) if kept else None
        if adv is None:
            logger.info("DERL iteration %d: no update (%d scored sequences, all-equal or too few)",
                        self.iteration, len(sequences))
            return stats  # zero advantages: nothing to learn
        stats.update(grpo_step(self.policy, self.optimizer, sequences, adv, temperature=self.temperature,
                               clip=self.clip, kl_coef=self.kl_coef, entropy_coef=self.entropy_coef,
                               epochs=self.epochs, max_grad_norm=self.max_grad_norm))
        logger.info("DERL iteration %d: loss %.4f  kl %.4f  entropy %.3f  clip %.2f  adv spread %.2f",
                    self.iteration, stats["loss"], stats["kl"], stats["entropy"], stats["clip_fraction"],
                    stats["adv_spread"])
        return stats

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        weights = self.policy.state_dict()
        return {
            "policy": weights["policy"],
            "reference": weights["reference"],
            "optimizer": encode_optimizer_state(self.optimizer.state_dict()),
            "pending": {text: list(map(int, ids)) for text, ids in self._pending.items()},
            "hparams": {"lr": self.lr, "clip": self.clip, "kl_coef": self.kl_coef, "epochs": self.epochs,
                        "entropy_coef": self.entropy_coef, "temperature": self.temperature,
                        "vocab_size": self.vocab_size, "max_tokens": self.max_tokens, "policy": self.kind,
                        "meta_model": self.meta_model},
        }

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        hparams = extra.get("hparams", {})
        vocab = hparams.get("vocab_size", self.vocab_size)
        if vocab != self.vocab_size:
            raise ValueError(f"state dict was written for a policy with {vocab} tokens, this one has "
                             f"{self.vocab_size}; use the same num_variables, constants and meta model")
        kind = hparams.get("policy", "gru")
        if kind != self.kind:
            raise ValueError(f"state dict was written for a {kind!r} policy, this optimizer has a {self.kind!r} one; "
                             "build it with the same meta_model")
        # decode all three before loading any: a refused blob leaves the weights as they were
        policy = decode_tensors(extra.get("policy"), where="state['extra']['policy'] (token policy weights)")
        reference = decode_tensors(extra.get("reference"), where="state['extra']['reference'] (KL reference weights)")
        optimizer = decode_optimizer_state(extra.get("optimizer"), where="state['extra']['optimizer'] (Adam state)")
        self.policy.load_weights(policy, reference)
        self.optimizer.load_state_dict(optimizer)
        # The constructor's settings win on resume; Adam's state dict would otherwise bring back the saved lr.
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        current = {"lr": self.lr, "clip": self.clip, "kl_coef": self.kl_coef, "epochs": self.epochs,
                   "entropy_coef": self.entropy_coef, "temperature": self.temperature}
        changed = {k: (hparams[k], v) for k, v in current.items() if k in hparams and hparams[k] != v}
        if changed:
            logger.warning("resuming %s with other settings than its checkpoint (saved -> now): %s", self.name,
                           ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        self._pending = {text: list(ids) for text, ids in extra.get("pending", {}).items()}


class DERLPop(DERL):
    """DERL-pop: DERL whose evolve loop warm-starts each inner run from the previous iteration's
    best inner agent (``warm_start_inner = True``); the meta-optimizer itself is identical.

    Example:
        >>> from derl_gym.agents.meta import make_optimizer
        >>> optimizer = make_optimizer("derl-pop", 2, max_tokens=10, cold_start=False, device="cpu")
        >>> type(optimizer).__name__, optimizer.warm_start_inner, len(optimizer.propose(2))
        ('DERLPop', True, 2)
    """

    name = "derl-pop"
    warm_start_inner = True
