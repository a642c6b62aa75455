"""How noisy is the meta signal? Validation success of the same formula across inner seeds vs across formulas.

Trains every formula on every seed (common random numbers: the same seeds for every formula), scoring
validation (the search's signal) and the preset's test splits (reported only, never a search input),
then decomposes the variance of the validation score (two-way ANOVA, see
:func:`derl_gym.runtime.report.variance_components`):

- formula variance: how much the true formula means differ (the signal);
- seed variance: a seed's shared effect on every formula (cancelled by common random numbers);
- residual variance: formula x seed noise (training + evaluation noise that CRN cannot cancel);
- evaluation part of the noise: the binomial variance ``p (1 - p) / E`` of E validation episodes.

From these it prints what N seeds per formula and E validation episodes buy: the std of a formula's
mean score, the std of the difference of two formulas under CRN, and the signal-to-noise ratio, next to
their cost in inner trainings. It does the same for a learning-curve score (mean training success over
the last quarter of the curve) and reports the rank correlation of validation with test L2 over runs.

Writes ``benchmarks/results/meta_noise.{json,md}``. Resumable: results live in ``--run-dir``'s
store, so re-running the same command retrains nothing that finished (results are cached per formula
and seed).

    .venv/bin/python benchmarks/bench_meta_noise.py --quick              # stand-in, seconds
    .venv/bin/python benchmarks/bench_meta_noise.py --preset alfworld-l2 --seeds 0,1,2 --workers 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from derl_gym.runtime.evaluator import Evaluator  # noqa: E402
from derl_gym.runtime.report import spearman, t_interval, variance_components  # noqa: E402
from benchmarks._common import add_run_flags, inner_loop, int_list, parse_args  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from derl_gym.runtime.runners import make_runner  # noqa: E402
from derl_gym.runtime.selection import curve_tail  # noqa: E402
from derl_gym.runtime.store import ResultStore  # noqa: E402

DEFAULT_FORMULAS = ("g1", "(g1 + g2 + g3 + g4)/4", "g1 + 0.5*(g2 + g3 + g4)/3", "g1 + 0.5*g4")
RESULTS = ROOT / "benchmarks" / "results"


def curve_score(curve) -> float:
    """Return the search's ``curve-tail`` score (:func:`derl_gym.runtime.selection.curve_tail`), NaN if empty."""
    tail = curve_tail(curve or [])
    return float("nan") if tail is None else tail


def tradeoff(comp: dict, eval_var: float, episodes: int, wall_per_run: float,
             seeds_options=(1, 2, 3, 4, 8), episode_factors=(1, 2, 4)) -> list[dict]:
    """Return rows of (seeds N, episodes E) -> std of a formula's mean, std of a CRN difference, SNR, cost.

    The residual (formula x seed) variance splits into evaluation noise (``eval_var`` at ``episodes``
    episodes, shrinking as 1/E) and training noise (the rest, independent of E); both shrink as 1/N."""
    train_var = max(0.0, comp["residual_var"] - eval_var)
    rows = []
    for n in seeds_options:
        for f in episode_factors:
            e = episodes * f
            resid = (train_var + eval_var / f) / n
            mean_std = math.sqrt(resid + comp["seed_var"] / n)   # one formula's mean, no CRN
            diff_std = math.sqrt(2 * resid)                      # two formulas on the same N seeds (CRN)
            snr = math.sqrt(comp["formula_var"] / resid) if resid > 0 else float("inf")
            rows.append({"seeds": n, "eval_episodes": e, "std_of_mean": mean_std, "std_of_crn_difference": diff_std,
                         "detectable_difference_2sd": 2 * diff_std,
                         "snr_crn": snr, "inner_trainings_per_formula": n,
                         "wall_seconds_per_formula_est": n * wall_per_run})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="alfworld-l2")
    parser.add_argument("--formulas", default=";".join(DEFAULT_FORMULAS), help="';'-separated formulas")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated inner seeds (the same for every formula)")
    parser.add_argument("--workers", type=int, default=1, help="parallel inner runs (keep 1 on a shared machine)")
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--eval-episodes", type=int, default=None, help="override the preset's eval_episodes")
    parser.add_argument("--run-dir", default=None, help="store directory (default benchmarks/results/meta_noise_run)")
    parser.add_argument("--out", default=None,
                        help="output stem (.json and .md; default benchmarks/results/meta_noise, meta_noise_quick with --quick)")
    add_run_flags(parser, "stand-in inner loop (no training), seconds")
    args, argv = parse_args(parser, argv)

    formulas = [f.strip() for f in args.formulas.split(";") if f.strip()]
    seeds = int_list(args.seeds)
    spec, job_fn = inner_loop(args.quick, args.preset, args.total_timesteps, args.eval_episodes)
    run_dir = Path(args.run_dir or ("/tmp/derl-gym-meta-noise-quick" if args.quick else RESULTS / "meta_noise_run"))
    if not args.quick:
        spec.prepare()
    splits = list(spec.test_envs)
    store = ResultStore(run_dir)
    runner = make_runner("process", workers=args.workers, job_fn=job_fn, retries=1)
    evaluator = Evaluator(spec, runner, store, method="meta-noise", eval_splits=splits,
                          reuse_across_versions=args.reuse_across_versions)
    start = time.perf_counter()
    results: dict[tuple[str, int], object] = {}
    try:
        for seed in seeds:  # seed-major: an interrupted run leaves complete columns
            for formula, (result, cached) in zip(formulas, evaluator.evaluate(formulas, seed=seed)):
                results[(formula, seed)] = result
                print(f"seed {seed}  {formula:32s} val {result.score:.3f}  "
                      f"test {json.dumps((result.extra or {}).get('test', {}))}  "
                      f"{result.wall_seconds:.0f} s{' (cached)' if cached else ''}", flush=True)
    finally:
        runner.close()
        store.close()
    total = time.perf_counter() - start

    ok = {k: r for k, r in results.items() if r.ok}
    runs = [{"formula": f, "seed": s, "status": r.status, "validation": r.score,
             "test": (r.extra or {}).get("test", {}), "curve_score": curve_score(r.curve),
             "wall_seconds": r.wall_seconds, "env_steps": r.env_steps} for (f, s), r in results.items()]
    complete = [f for f in formulas if all((f, s) in ok for s in seeds)]
    payload: dict = {"preset": spec.name, "quick": args.quick, "spec_hash": spec.spec_hash(), "formulas": formulas,
                     "seeds": seeds, "eval_episodes": spec.eval_episodes,
                     "total_timesteps": spec.agent.total_timesteps, "workers": args.workers,
                     "bench_wall_seconds": total, "runs": runs,
                     "command": "python benchmarks/bench_meta_noise.py " + shlex.join(argv)}
    lines = [f"# Meta-signal noise ({spec.name}{', stand-in' if args.quick else ''})", "",
             f"Command: `{payload['command']}`", "",
             f"Formulas x seeds (common random numbers): {len(formulas)} x {len(seeds)}; "
             f"{spec.agent.total_timesteps} env steps per run, {spec.eval_episodes} validation episodes; "
             f"{args.workers} worker(s).", "",
             "| formula | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± 95% CI | "
             + " | ".join(f"test {s} mean" for s in splits) + " | wall s / run |",
             "|---|" + "---|" * (len(seeds) + 2 + len(splits))]
    for f in formulas:
        vals = [ok[(f, s)].score if (f, s) in ok else float("nan") for s in seeds]
        got = [v for v in vals if v == v]
        m, h = t_interval(got)
        tests = [statistics.fmean([(ok[(f, s)].extra or {}).get("test", {}).get(sp, float("nan"))
                                   for s in seeds if (f, s) in ok]) if got else float("nan") for sp in splits]
        walls = [ok[(f, s)].wall_seconds for s in seeds if (f, s) in ok]
        lines.append(f"| `{f}` | " + " | ".join("-" if v != v else f"{v:.3f}" for v in vals)
                     + f" | {m:.3f} ± {h:.3f} | " + " | ".join(f"{t:.3f}" for t in tests)
                     + f" | {statistics.fmean(walls) if walls else float('nan'):.0f} |")
    if len(complete) >= 2 and len(seeds) >= 2:
        table = [[ok[(f, s)].score for s in seeds] for f in complete]
        comp = variance_components(table)
        p_bar = statistics.fmean(v for row in table for v in row)
        eval_var = statistics.fmean(v * (1 - v) for row in table for v in row) / spec.eval_episodes
        curve_table = [[curve_score(ok[(f, s)].curve) for s in seeds] for f in complete]
        curve_comp = (variance_components(curve_table)
                      if all(v == v for row in curve_table for v in row) else None)
        wall = statistics.fmean(r.wall_seconds for r in ok.values())
        rows = tradeoff(comp, eval_var, spec.eval_episodes, wall)
        val_all = [r.score for r in ok.values()]
        l2 = [(r.extra or {}).get("test", {}).get("L2") for r in ok.values()]
        rho = spearman(val_all, l2) if all(v is not None for v in l2) and l2 else float("nan")
        tails = [curve_score(r.curve) for r in ok.values()]
        rho_tail = spearman(tails, l2) if all(v is not None for v in l2) and l2 else float("nan")
        payload.update(components=comp, eval_binomial_var=eval_var, mean_success=p_bar, curve_components=curve_comp,
                       tradeoff=rows, wall_seconds_per_run=wall, spearman_validation_vs_L2_runs=rho,
                       spearman_curve_tail_vs_L2_runs=rho_tail)
        sd = math.sqrt
        lines += ["", "## Variance decomposition of validation success (two-way ANOVA, formulas x seeds)", "",
                  "| component | variance | std |", "|---|---|---|",
                  f"| formula (signal) | {comp['formula_var']:.4f} | {sd(comp['formula_var']):.3f} |",
                  f"| seed, shared by all formulas (CRN cancels it) | {comp['seed_var']:.4f} | {sd(comp['seed_var']):.3f} |",
                  f"| formula x seed residual | {comp['residual_var']:.4f} | {sd(comp['residual_var']):.3f} |",
                  f"| of which evaluation (binomial p(1-p)/E, E={spec.eval_episodes}) | {eval_var:.4f} | {sd(eval_var):.3f} |",
                  f"| one run's noise (within-formula variance across seeds) | {comp['within_var']:.4f} | {sd(comp['within_var']):.3f} |",
                  "", f"Signal-to-noise of one run (std formula / std within): **{comp['snr']:.2f}**.",
                  f"Rank correlation (Spearman) of validation with test L2 over all {len(val_all)} runs: {rho:.2f}.", ""]
        if curve_comp is not None:
            lines += [f"Learning-curve score (mean training success over the last quarter): formula var "
                      f"{curve_comp['formula_var']:.4f}, residual {curve_comp['residual_var']:.4f}, within "
                      f"{curve_comp['within_var']:.4f}, SNR {curve_comp['snr']:.2f}; Spearman with test L2 over "
                      f"the same runs {rho_tail:.2f} (`--selection-score curve-tail` searches by it).", ""]
        lines += ["## What N seeds and E episodes buy", "",
                  "| seeds N | eval episodes E | std of a formula's mean | std of a CRN difference | difference seen at 2 std | SNR (CRN) | "
                  "inner trainings / formula | est. wall s / formula (1 worker) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['seeds']} | {r['eval_episodes']} | {r['std_of_mean']:.3f} | "
                         f"{r['std_of_crn_difference']:.3f} | {r['detectable_difference_2sd']:.3f} | {r['snr_crn']:.2f} | {r['inner_trainings_per_formula']} | "
                         f"{r['wall_seconds_per_formula_est']:.0f} |")
        lines += ["", "The residual splits into evaluation noise (shrinks as 1/E; costs only evaluation episodes) and "
                  "training noise (shrinks only with more seeds N, at N inner trainings per formula)."]
    else:
        lines += ["", f"Not enough complete formulas x seeds for a decomposition ({len(complete)} complete formulas)."]
    train_wall = sum(r.wall_seconds for r in ok.values())
    lines += ["", f"Bench wall time of this sitting: {total:.0f} s (runs answered by the store cost nothing here); "
              f"inner training time of all {len(ok)} finished runs as stored: {train_wall:.0f} s."]
    out = args.out or str(RESULTS / ("meta_noise_quick" if args.quick else "meta_noise"))  # --quick never overwrites
    write_results(out, payload, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
