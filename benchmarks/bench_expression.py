"""Benchmark: vectorised Meta-Reward evaluation vs. per-row Python ``eval`` of the formula string.

The reference approach (what a naive implementation does) evaluates the formula text once per
row with Python's ``eval`` and the row's primitive values as locals. It is timed on a subsample
and extrapolated to rows/s; both implementations are checked to give the same numbers on that
subsample (the formula has no division by values near zero, so protected division does not kick in).

Usage::

    .venv/bin/python benchmarks/bench_expression.py [--rows 1000000] [--reference-rows 20000]

Prints rows/s for both and the ratio, and writes ``benchmarks/results/bench_expression.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from derl_gym.rewards.expression import MetaReward

FORMULA = "g1 + 0.5*(g2 - g4/3) + g3*g2/(g4+1)"
K = 4


def reference_eval(formula: str, values: np.ndarray) -> np.ndarray:
    """The reference approach: Python ``eval`` of the formula string once per row (benchmark only)."""
    out = np.empty(len(values))
    names = [f"g{i + 1}" for i in range(values.shape[1])]
    for i, row in enumerate(values.tolist()):
        out[i] = eval(formula, {"__builtins__": {}}, dict(zip(names, row)))  # noqa: S307 - the reference
    return out


def best_of(fn, repeats: int) -> float:
    """Return the fastest wall time (seconds) of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_expression.json")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    values = rng.uniform(0.0, 1.0, size=(args.rows, K))
    reward = MetaReward(FORMULA, K)

    vectorised_s = best_of(lambda: reward.evaluate(values), args.repeats)
    vectorised_rps = args.rows / vectorised_s

    sub = values[: args.reference_rows]
    start = time.perf_counter()
    expected = reference_eval(FORMULA, sub)
    reference_s = time.perf_counter() - start
    reference_rps = len(sub) / reference_s
    got = reward.evaluate(sub)
    max_abs_diff = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=1e-12, atol=1e-12):
        raise SystemExit(f"vectorised and reference results differ (max |diff| = {max_abs_diff:g})")

    result = {
        "formula": FORMULA,
        "rows": args.rows,
        "num_variables": K,
        "seed": args.seed,
        "vectorised_seconds": vectorised_s,
        "vectorised_rows_per_s": vectorised_rps,
        "reference_rows": len(sub),
        "reference_seconds": reference_s,
        "reference_rows_per_s": reference_rps,
        "reference_extrapolated_seconds": args.rows / reference_rps,
        "ratio": vectorised_rps / reference_rps,
        "max_abs_diff_on_reference_rows": max_abs_diff,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(f"formula: {FORMULA}   rows: {args.rows:,} x {K} primitives")
    print(f"vectorised (MetaReward.evaluate): {vectorised_rps:,.0f} rows/s  ({vectorised_s * 1e3:.1f} ms, best of "
          f"{args.repeats})")
    print(f"reference (eval per row):         {reference_rps:,.0f} rows/s  (measured on {len(sub):,} rows, "
          f"{reference_s:.2f} s; extrapolated {args.rows / reference_rps:.1f} s for {args.rows:,})")
    print(f"ratio: {result['ratio']:,.0f}x   (same numbers on the subsample: max |diff| = {max_abs_diff:.1e})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
