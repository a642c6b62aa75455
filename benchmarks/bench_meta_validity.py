"""Validity of language-model formula proposals: unconstrained vs character-only vs grammar constraint.

For the offline tiny model (random weights, and after DERL's cold-start SFT on the shipped seed
formulas) this samples N completions of the meta-prompt three ways:

* ``unconstrained``: any token until EOS (or the token limit), as a plain LM would answer;
* ``charset``: only tokens made of formula characters plus EOS (the reference implementation's
  restriction to formula characters);
* ``grammar``: :class:`derl_gym.agents.meta.constrained.FormulaConstraint` (this project).

A sample *parses* when :class:`MetaReward` accepts its text; it is *valid* when its text parses as a Meta-Reward over g1..gK, reads at least one variable
and fits the grammar (``max_tokens``). Also timed: ms per generated token and proposals/s, and the
GRU policy's proposals/s. Prints a table and writes ``benchmarks/results/bench_meta_validity.{json,md}``.

    .venv/bin/python benchmarks/bench_meta_validity.py              # N=200, ~1 min on one CPU core
    .venv/bin/python benchmarks/bench_meta_validity.py --n 1000 --model /path/to/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _parses(text: str, k: int) -> bool:
    from derl_gym.rewards.expression import InvalidExpression, MetaReward

    try:
        MetaReward(text, k)
        return True
    except (InvalidExpression, ValueError, RecursionError):
        return False


def _valid(text: str, grammar, k: int) -> bool:
    from derl_gym.rewards.expression import InvalidExpression, MetaReward

    try:
        return bool(MetaReward(text, k).variables_used) and grammar.fits(text)
    except (InvalidExpression, ValueError, RecursionError):
        return False


def sample_masked(policy, n: int, rng, mode: str, temperature: float = 1.0) -> tuple[list[str], int, float]:
    """Return (texts, generated tokens, seconds) for ``mode`` in unconstrained | charset | grammar."""
    import torch

    from derl_gym.agents.meta.constrained import CharsetConstraint

    if mode == "grammar":
        t0 = time.perf_counter()
        samples = policy.sample(n, rng, temperature)
        return [s.text for s in samples], sum(len(s.ids) for s in samples), time.perf_counter() - t0
    charset = CharsetConstraint(policy.tokenizer, vocab_size=policy.constraint.vocab_size) if mode == "charset" else None
    limit = policy.max_new_tokens
    t0 = time.perf_counter()
    ids: list[list[int]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    with torch.no_grad():
        cache, last = policy._prompt_cache(policy.model, n)  # noqa: SLF001 (benchmark of the same sampler)
        mask = torch.as_tensor(charset.mask()[: policy.vocab_size], device=policy.device) if charset else None
        for step in range(limit):
            if step:
                out = policy.model(input_ids=inputs, use_cache=True, **{policy._cache_arg: cache})  # noqa: SLF001
                cache, last = getattr(out, policy._cache_arg), out.logits[:, -1, :]  # noqa: SLF001
            logits = last.float() / temperature
            if mask is not None:
                logits = torch.where(mask, logits, torch.full_like(logits, -math.inf))
            probs = torch.softmax(logits.double(), -1).cpu().numpy()
            nxt = np.full(n, policy.eos_id, dtype=np.int64)
            for b in range(n):
                if done[b]:
                    continue
                cdf = np.cumsum(probs[b])
                token = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
                ids[b].append(token)
                nxt[b] = token
                done[b] = token == policy.eos_id
            if done.all():
                break
            inputs = torch.as_tensor(nxt, device=policy.device).view(n, 1)
    seconds = time.perf_counter() - t0
    strings = policy.constraint.strings
    texts = ["".join(strings[t] for t in seq if t != policy.eos_id and t < len(strings)).strip() for seq in ids]
    return texts, sum(len(s) for s in ids), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples per row")
    parser.add_argument("--model", default="tiny", help="'tiny' or a local causal-LM folder")
    parser.add_argument("--k", type=int, default=4, help="number of primitives")
    parser.add_argument("--cold-start-steps", type=int, default=60)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(RESULTS / "bench_meta_validity"))
    args = parser.parse_args()

    import torch

    from derl_gym.agents.meta import make_optimizer

    if args.device in (None, "cpu"):
        torch.set_num_threads(1)
    rows = []
    opt = make_optimizer("derl", args.k, seed=0, meta_model=args.model, cold_start=False, device=args.device)
    policy, grammar = opt.policy, opt.grammar
    for stage in ("random init", "after cold start"):
        if stage == "after cold start":
            opt.cold_start_stats = opt.cold_start(
                __import__("derl_gym.agents.meta.seed_formulas", fromlist=["x"]).seed_formulas(args.k, grammar),
                steps=args.cold_start_steps, lr=1e-3)
        for mode in ("unconstrained", "charset", "grammar"):
            texts, tokens, seconds = sample_masked(policy, args.n, np.random.default_rng(1), mode)
            valid = [_valid(t, grammar, args.k) for t in texts]
            rows.append({"model": args.model, "stage": stage, "decoding": mode, "n": args.n,
                         "parses": float(np.mean([_parses(t, args.k) for t in texts])), "valid": float(np.mean(valid)), "distinct_valid": len({t for t, v in zip(texts, valid) if v}),
                         "ms_per_token": 1000 * seconds / max(tokens, 1), "proposals_per_s": args.n / seconds,
                         "example": next((t for t, v in zip(texts, valid) if not v), "")[:60]})
            print(f"{stage:17s} {mode:13s} valid {rows[-1]['valid']:.3f}  {rows[-1]['ms_per_token']:.2f} ms/token  "
                  f"{rows[-1]['proposals_per_s']:.1f} proposals/s", flush=True)
    gru = make_optimizer("derl", args.k, seed=0, cold_start=False, device=args.device)
    t0 = time.perf_counter()
    texts = gru.propose(args.n)
    seconds = time.perf_counter() - t0
    rows.append({"model": "gru", "stage": "random init", "decoding": "grammar", "n": args.n,
                 "parses": float(np.mean([_parses(t, args.k) for t in texts])), "valid": float(np.mean([_valid(t, grammar, args.k) for t in texts])), "distinct_valid": len(set(texts)),
                 "ms_per_token": float("nan"), "proposals_per_s": args.n / seconds, "example": ""})
    print(f"gru grammar valid {rows[-1]['valid']:.3f}  {rows[-1]['proposals_per_s']:.1f} proposals/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/bench_meta_validity.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
            "device": str(policy.device), "torch_threads": torch.get_num_threads(), "max_new_tokens": policy.max_new_tokens}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| model | stage | decoding | parses | valid | distinct valid | ms/token | proposals/s | an invalid sample |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        example = r["example"].replace("|", "\\|")
        lines.append(f"| {r['model']} | {r['stage']} | {r['decoding']} | {r['parses']:.3f} | {r['valid']:.3f} | {r['distinct_valid']} | "
                     f"{r['ms_per_token']:.2f} | {r['proposals_per_s']:.1f} | `{example}` |")
    text = (f"# Validity of formula proposals (N={args.n} per row, K={args.k})\n\n`{meta['command']}` on "
            f"{meta['device']}\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
