"""Speed of the language-model inner agent: generation tokens/s and TRL GRPO steps/s, CPU and GPU.

Builds a random-weight Qwen2 model with :func:`derl_gym.models.tiny.build_tiny_model` (no hub), then
on each device asked for (``cpu``, and ``cuda`` when present):

- generation: ``batch`` chat prompts, ``new_tokens`` sampled tokens each (eos suppressed so every row
  generates them all); tokens/s = batch * new_tokens / seconds (after one warm-up call);
- GRPO: ``steps`` TRL ``GRPOTrainer`` steps of ``prompts`` x ``num_generations`` completions of
  ``new_tokens`` tokens with a cheap reward (completion length); steps/s from TRL's train runtime.

Writes ``benchmarks/results/bench_lm_inner[_<tag>].json`` and ``.md`` and prints the table.

    .venv/bin/python benchmarks/bench_lm_inner.py                           # tiny model, CPU, ~30 s
    .venv/bin/python benchmarks/bench_lm_inner.py --size 300m --devices cpu cuda --tag gpu   # GPU machine
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derl_gym.models import load_causal_lm  # noqa: E402
from derl_gym.models.tiny import build_tiny_model  # noqa: E402

SIZES = {"tiny": dict(layers=2, hidden=64, heads=4), "small": dict(layers=4, hidden=256, heads=4),
         "300m": dict(layers=16, hidden=1024, heads=16)}


def bench_generation(model, tok, device: str, batch: int, new_tokens: int) -> dict:
    """Return tokens/s of sampled generation of ``new_tokens`` tokens for ``batch`` prompts."""
    import torch

    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Problem {i}: what is {i} + {i}?"}],
                                       tokenize=False, add_generation_prompt=True) for i in range(batch)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, top_k=0, top_p=1.0,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with torch.no_grad():
        model.generate(**enc, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(**enc, **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    generated = int(out.shape[1] - enc["input_ids"].shape[1]) * batch
    return {"batch": batch, "new_tokens": new_tokens, "seconds": seconds, "tokens_per_second": generated / seconds}


def bench_grpo(model, tok, device: str, steps: int, prompts: int, generations: int, new_tokens: int) -> dict:
    """Return GRPO steps/s of TRL's GRPOTrainer on ``model`` (reward: completion length)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    def reward(completions, **kwargs):
        return [len(c[0]["content"]) / 100.0 for c in completions]

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Problem {i}: what is {i} + {i}?"}]}
                            for i in range(64)])
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=prompts * generations, num_generations=generations,
                         max_completion_length=new_tokens, max_steps=steps, learning_rate=1e-5, beta=0.0,
                         logging_steps=1, report_to="none", save_strategy="no", use_cpu=not device.startswith("cuda"),
                         bf16=device.startswith("cuda"), seed=0, disable_tqdm=True, dataloader_num_workers=0,
                         gradient_checkpointing=False, top_k=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=cfg, train_dataset=ds, processing_class=tok)
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"steps": steps, "prompts": prompts, "num_generations": generations, "completion_tokens": new_tokens,
            "seconds": seconds, "steps_per_second": steps / seconds,
            "completions_per_second": steps * prompts * generations / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--devices", nargs="+", default=["cpu"], help="cpu and/or cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = build_tiny_model(Path(tmp) / "model", **SIZES[args.size])
        build_seconds = time.perf_counter() - start
        rows = []
        for device in args.devices:
            if device.startswith("cuda") and not torch.cuda.is_available():
                print(f"skipping {device}: CUDA not available")
                continue
            model, tok = load_causal_lm(str(path), device=device)
            tok.padding_side = "left"
            params = sum(p.numel() for p in model.parameters())
            gen = bench_generation(model, tok, device, args.batch, args.new_tokens)
            grpo = bench_grpo(model, tok, device, args.steps, args.prompts, args.generations, args.new_tokens)
            rows.append({"device": device, "dtype": str(next(model.parameters()).dtype), "parameters": params,
                         "generation": gen, "grpo": grpo,
                         "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None})
            del model
    payload = {"size": args.size, "build_seconds": build_seconds, "threads": torch.get_num_threads(),
               "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "rows": rows, "args": vars(args)}
    lines = [f"# bench_lm_inner ({args.size} model, {rows[0]['parameters']:,} parameters)" if rows else "# bench_lm_inner",
             "", f"model built in {build_seconds:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} CPU threads", "",
             "| device | dtype | generation tokens/s (batch x tokens) | GRPO steps/s (prompts x G x tokens) | completions/s |",
             "|---|---|---|---|---|"]
    for r in rows:
        g, q = r["generation"], r["grpo"]
        lines.append(f"| {r['device']}{' (' + r['gpu'] + ')' if r['gpu'] else ''} | {r['dtype']} | "
                     f"{g['tokens_per_second']:.0f} ({g['batch']} x {g['new_tokens']}) | "
                     f"{q['steps_per_second']:.2f} ({q['prompts']} x {q['num_generations']} x {q['completion_tokens']}) | "
                     f"{q['completions_per_second']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_lm_inner" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{stem}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
