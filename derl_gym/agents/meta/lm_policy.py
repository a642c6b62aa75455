"""A Hugging Face causal language model as DERL's token policy (the paper's Meta-Optimizer).

:class:`CausalLMPolicy` reads the paper's meta-prompt (the task, ``PrimitiveSet.describe()`` and a
few example formulas; :func:`derl_gym.agents.meta.language.build_meta_prompt`), then writes a
formula token by token under :class:`~derl_gym.agents.meta.constrained.FormulaConstraint`, so
every sample parses, uses a variable and ends within the grammar's length. It implements
:class:`~derl_gym.agents.meta.token_policy.TokenPolicy`, so DERL's GRPO step trains it exactly as
it trains the GRU. LoRA (peft) is optional; the model runs on CUDA when present.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from derl_gym.agents.meta.constrained import FormulaConstraint
from derl_gym.agents.meta.token_policy import MASKED_LOGIT, Sample, TokenPolicy

logger = logging.getLogger(__name__)


def _torch():
    import torch

    return torch


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Return the token ids of ``prompt`` as a user turn (the tokenizer's chat template with the
    generation prompt when it has one, else the plain text).

    Example:
        >>> from transformers import AutoTokenizer
        >>> from derl_gym.agents.meta.lm_policy import prompt_ids
        >>> from derl_gym.models import resolve_model_path
        >>> tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny"))  # has a chat template
        >>> ids = prompt_ids(tokenizer, "Write a Meta-Reward over g1, g2.")
        >>> text = tokenizer.decode(ids)
        >>> text.startswith("<|im_start|>user"), "Write a Meta-Reward over g1, g2." in text, text.rstrip().endswith("assistant")
        (True, True, True)
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt + "\n"
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class CausalLMPolicy(TokenPolicy):
    """A causal LM writing Meta-Rewards under the grammar constraint.

    ``model``/``tokenizer``: a ``transformers`` causal LM and its tokenizer; ``grammar``: the
    Meta-Reward grammar; ``prompt``: the meta-prompt text; ``lora``: ``None`` (train all weights)
    or a dict of ``peft.LoraConfig`` arguments (e.g. ``{"r": 8}``; ``target_modules`` defaults to
    the attention projections); ``device`` defaults to CUDA when available.

    Example:
        >>> import numpy as np
        >>> from derl_gym.agents.meta.base import make_grammar
        >>> from derl_gym.agents.meta.lm_policy import CausalLMPolicy
        >>> from derl_gym.models import load_causal_lm
        >>> model, tokenizer = load_causal_lm("tiny", device="cpu")
        >>> grammar = make_grammar(2, max_tokens=10)
        >>> policy = CausalLMPolicy(model, tokenizer, grammar, "Write a Meta-Reward over g1 and g2.", device="cpu")
        >>> samples = policy.sample(2, np.random.default_rng(0))  # random weights, but every sample is a formula
        >>> all(grammar.fits(sample.text) for sample in samples)
        True
        >>> policy.decode(policy.encode("g1 + 0.5*g2"))
        'g1 + 0.5*g2'
    """

    def __init__(self, model: Any, tokenizer: Any, grammar: Any, prompt: str, *, lora: dict[str, Any] | None = None,
                 device: str | None = None) -> None:
        torch = _torch()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = tokenizer
        self.grammar = grammar
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            options = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], **dict(lora)}
            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **options))
        self.model = model.to(self.device)
        self.model.train(False)
        out = self.model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(model.config.vocab_size)
        self.constraint = FormulaConstraint(grammar, tokenizer, vocab_size=max(self.vocab_size, len(tokenizer)))
        self.eos_id = self.constraint.eos_id
        self.max_new_tokens = self.constraint.max_new_tokens
        self.set_prompt(prompt)
        self._single = {}
        for i in self.constraint.candidates:
            s = self.constraint.strings[i]
            if len(s) == 1:
                self._single.setdefault(s, i)
        self._mask_tensors: dict[tuple, Any] = {}
        import inspect

        forward = getattr(self.model, "get_base_model", lambda: self.model)().forward
        # transformers 5 renamed ``past_key_values`` to ``cache``; use what this version takes
        self._cache_arg = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
        self.sync_reference()

    def set_prompt(self, prompt: str) -> None:
        """Use ``prompt`` (the meta-prompt text) for sampling and scoring from now on."""
        self.prompt = str(prompt)
        self.prompt_ids = prompt_ids(self.tokenizer, self.prompt)

    def _weights(self, module: Any) -> dict[str, Any]:
        """The trained tensors only (all weights, or the LoRA adapters)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: p for n, p in module.named_parameters() if n in names}

    def _mask_tensor(self, state: Any):
        torch = _torch()
        tensor = self._mask_tensors.get(state.key) if not state.done else None
        if tensor is None:
            mask = self.constraint.mask(state)[: self.vocab_size]
            tensor = torch.as_tensor(mask, device=self.device)
            if not state.done:
                self._mask_tensors[state.key] = tensor
        return tensor

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0, prompt: str | None = None) -> list[Sample]:
        """Return ``n`` constrained samples (numpy ``rng`` draws the tokens: reproducible).

        ``prompt`` samples for another prompt than :attr:`prompt` (e.g. an env's observation).
        """
        torch = _torch()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if n == 0:
            return []
        ids = self.prompt_ids if prompt is None else prompt_ids(self.tokenizer, prompt)
        states = [self.constraint.start() for _ in range(n)]
        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        self.model.train(False)
        with torch.no_grad():
            past, last = self._prompt_cache(self.model, n, ids)
            for step in range(self.max_new_tokens):
                if step > 0:
                    out = self.model(input_ids=inputs, use_cache=True, **{self._cache_arg: past})
                    past = getattr(out, self._cache_arg)
                    last = out.logits[:, -1, :]
                logits = last.float() / temperature
                masks = torch.stack([self._mask_tensor(s) for s in states])
                logits = torch.where(masks, logits, torch.full_like(logits, -math.inf))
                logp = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
                nxt = np.full(n, self.eos_id, dtype=np.int64)
                for b in range(n):
                    if states[b].done:
                        continue
                    probs = np.exp(logp[b])
                    cdf = np.cumsum(probs)
                    token = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
                    while not np.isfinite(logp[b, token]):  # float edge case: step back to an allowed token
                        token -= 1
                    tokens[b].append(token)
                    logps[b].append(float(logp[b, token]))
                    states[b] = self.constraint.advance(states[b], token)
                    nxt[b] = token
                if all(s.done for s in states):
                    break
                inputs = torch.as_tensor(nxt, device=self.device).view(n, 1)
        for b, state in enumerate(states):
            if not state.done:  # impossible by construction (max_new_tokens bounds every formula)
                raise RuntimeError(f"sample {self.constraint.formula(tokens[b])!r} did not end within "
                                   f"{self.max_new_tokens} tokens")
        # the text as the grammar writes it (``g1 + 0.5*g4``): the same formula, normalised spacing
        return [Sample(seq, lp, self.grammar.decode(state.prefix)) for seq, lp, state in zip(tokens, logps, states)]

    # ------------------------------------------------------------------ scoring
    def _prompt_cache(self, model: Any, batch: int, ids: Sequence[int] | None = None):
        """Run the prompt once and return ``(cache for batch rows, logits after the prompt [batch, V])``."""
        torch = _torch()
        prompt = torch.as_tensor([list(self.prompt_ids if ids is None else ids)], device=self.device)
        out = model(input_ids=prompt, use_cache=True)
        cache = getattr(out, self._cache_arg)
        cache.batch_repeat_interleave(batch)
        return cache, out.logits[:, -1, :].expand(batch, -1)

    def log_prob_table(self, sequences: Sequence[Sequence[int]], temperature: float = 1.0, reference: bool = False):
        """Return ``(log_probs [B, L, V], targets, valid)`` of the completions after the prompt.

        The prompt runs once and its key/value cache is shared by the batch (gradients flow through it).
        """
        import contextlib

        torch = _torch()
        batch, length = len(sequences), max(len(s) for s in sequences)
        targets = np.full((batch, length), self.eos_id, dtype=np.int64)
        valid = np.zeros((batch, length), dtype=bool)
        full = torch.ones(self.vocab_size, dtype=torch.bool, device=self.device)
        rows = []
        for b, seq in enumerate(sequences):
            targets[b, :len(seq)] = seq
            valid[b, :len(seq)] = True
            states = self.constraint.states(seq)
            rows.append(torch.stack([self._mask_tensor(s) for s in states] + [full] * (length - len(seq))))
        masks = torch.stack(rows)
        model = self.reference if reference else self.model
        to = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        with torch.no_grad() if reference else contextlib.nullcontext():
            cache, first = self._prompt_cache(model, batch)
            parts = [first.unsqueeze(1)]
            if length > 1:
                out = model(input_ids=to(targets[:, :-1]), use_cache=True, **{self._cache_arg: cache})
                parts.append(out.logits)
            logits = torch.cat(parts, dim=1).float() / temperature
        logits = torch.where(masks, logits, torch.full_like(logits, MASKED_LOGIT))
        return torch.log_softmax(logits, dim=-1), to(targets), to(valid)

    def encode(self, text: str) -> list[int] | None:
        """Return ``text`` as tokens the constraint accepts (the tokenizer's own split, else one
        token per character), EOS included; None when the grammar cannot write it."""
        text = str(text).strip()
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.eos_id]
        if self.constraint.accepts(ids):
            return ids
        if all(c in self._single for c in text):
            ids = [self._single[c] for c in text] + [self.eos_id]
            if self.constraint.accepts(ids):
                return ids
        return None

    def decode(self, ids: Sequence[int]) -> str:
        """Return the formula text of a completion, spaced as the grammar writes it."""
        return self.grammar.decode(self.constraint.grammar_ids(ids))
