"""``derl-gym export RUN_DIR``: a run's discovered reward as JSON, for other trainers.

:func:`export_run` reads ``<run_dir>/store.sqlite`` only (no training, no env is built) and returns::

    {"format": "derl-gym-reward/1",
     "command": "evolve" | "compare", "run_dir": ..., "derl_gym_version": ...,
     "preset": ..., "spec_name": ..., "spec_hash": ..., "spec_hash_base": ...,
     "env": {"train": {"env_id", "kwargs"}, "validation": {...}},
     "primitives": {"factory": "module:function", "kwargs": {...},
                    "variables": [{"variable": "g1", "name", "description", "kind", "bounds"}, ...]},
     "rewards": [{"method", "formula", "canonical", "validation", "seed",
                  "seeds": [{"seed", "formula", "validation"}, ...],
                  "test": {split: {"mean", "std", "scores", "seeds"}} | None}, ...],
     "reference": [{"method": "outcome" | "avg", "formula", "test": ...}, ...]}

An evolve run has one reward (its best formula: the highest validation score over all iterations,
the earliest on ties); a compare run one per method (the seed whose search scored best; ``seeds``
lists every seed's best, and ``test`` is the method's final-test row over all of them). ``test`` is
present when the run made its final test (``None`` otherwise). :func:`~derl_gym.integrations.trl.from_export`
turns the JSON into a TRL reward function.
"""

from __future__ import annotations

import logging
import re
import statistics
from pathlib import Path
from typing import Any, Mapping

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMAT", "ExportError", "export_run"]

#: The ``format`` field of an export.
EXPORT_FORMAT = "derl-gym-reward/1"


class ExportError(ValueError):
    """Raised when a run directory cannot be exported; the message names the directory and the fix.

    Example:
        >>> from derl_gym.integrations.export import ExportError
        >>> from derl_gym.runtime.store import ResultStore
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     ResultStore(run_dir).close()  # a store that no evolve/compare run wrote
        ...     try:
        ...         export_run(run_dir)
        ...     except ExportError as error:
        ...         print("was not written by `derl-gym evolve`" in str(error))
        True
    """


def _primitives(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return the spec's primitive factory and kwargs with the names and descriptions of g1..gK (built
    from the factory; left empty with ``build_error`` when it cannot be built here)."""
    from derl_gym.runtime.spec import PrimitiveSpec

    raw = dict(spec.get("primitives") or {})
    out: dict[str, Any] = {"factory": raw.get("factory"), "kwargs": dict(raw.get("kwargs") or {}), "variables": []}
    try:
        pset = PrimitiveSpec(str(raw.get("factory", "")), out["kwargs"]).build()
    except Exception as exc:  # noqa: BLE001 - export what the store has even when the factory is unavailable
        logger.warning("cannot build the primitive set %s here (%s: %s); exporting its factory without names",
                       raw.get("factory"), type(exc).__name__, exc)
        out["build_error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["name"] = pset.name
    out["variables"] = [{"variable": f"g{i + 1}", "name": p.name, "description": p.description, "kind": p.kind,
                         "bounds": [float(p.bounds[0]), float(p.bounds[1])]} for i, p in enumerate(pset)]
    return out


def _best_of_checkpoints(store: Any, label: str) -> tuple[str, str, float] | None:
    """Return ``(formula, canonical, score)`` of the best scored formula in ``label``'s checkpoints
    (highest validation, the earliest on ties; failed runs never count), or None."""
    best: tuple[str, str, float] | None = None
    for cp in store.checkpoints(label):
        canonicals = cp.get("canonicals") or []
        for i, (formula, score) in enumerate(zip(cp.get("expressions") or [], cp.get("scores") or [])):
            status = (cp.get("statuses") or [])[i] if i < len(cp.get("statuses") or []) else "failed"
            if status == "ok" and (best is None or float(score) > best[2]):
                best = (formula, canonicals[i] if i < len(canonicals) else formula, float(score))
    return best


def _test_of_row(row: Mapping[str, Any] | None, splits: list[str]) -> dict[str, Any] | None:
    if not row or row.get("formula") is None:
        return None
    tested = [s for s in row.get("seeds_tested", [])]
    out = {}
    for split in splits:
        scores = [float(x) for x in (row.get("scores") or {}).get(split, [])]
        out[split] = {"mean": statistics.fmean(scores) if scores else None,
                      "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
                      "scores": scores, "seeds": tested}
    return out


def _final_rows(table: Mapping[str, Any] | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Return the final-test rows by label (with the seeds each was tested on) and the split names."""
    if not table:
        return {}, []
    seeds = [int(s) for s in table.get("seeds", [])]
    rows = {}
    for row in table.get("rows", []):
        skipped = {int(s) for s in row.get("skipped", [])}
        rows[row["label"]] = {**row, "seeds_tested": [s for s in seeds if s not in skipped]}
    return rows, list(table.get("splits", []))


def export_run(run_dir: str | Path) -> dict[str, Any]:
    """Return the export dict of an evolve or compare run directory (see the module docstring).

    Reads the store only. Raises :class:`ExportError` when ``run_dir`` has no ``store.sqlite``, was
    not written by ``derl-gym evolve`` / ``compare``, or holds no scored formula.

    Example:
        After ``derl-gym evolve --run-dir runs/demo``, ``export_run("runs/demo")["rewards"][0]["formula"]``
        is the run's best formula. A folder that holds no run is refused, naming the fix:

        >>> import tempfile
        >>> from derl_gym.integrations.export import ExportError, export_run
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     try:
        ...         export_run(empty)
        ...     except ExportError as error:
        ...         print(str(error).endswith("pass the --run-dir of a `derl-gym evolve` or `derl-gym compare` run"))
        True
    """
    from derl_gym import __version__
    from derl_gym.runtime.store import STORE_FILENAME, ResultStore

    run_dir = Path(run_dir)
    if not (run_dir / STORE_FILENAME).is_file():
        raise ExportError(f"{run_dir} has no {STORE_FILENAME}; pass the --run-dir of a `derl-gym evolve` or "
                          "`derl-gym compare` run")
    with ResultStore(run_dir) as store:
        meta = store.meta()
        key = meta.get("run_key") or {}
        spec = meta.get("spec") or {}
        command = key.get("command")
        if command not in ("evolve", "compare") or not spec:
            raise ExportError(f"{run_dir / STORE_FILENAME} was not written by `derl-gym evolve` or `derl-gym compare` "
                              "(its meta table has no run key and spec); export the run directory of one of them")
        out: dict[str, Any] = {
            "format": EXPORT_FORMAT, "command": command, "run_dir": str(run_dir.resolve()),
            "derl_gym_version": __version__, "preset": key.get("preset"), "spec_name": spec.get("name"),
            "spec_description": spec.get("description", ""),
            "spec_hash": meta.get("spec_hash"), "spec_hash_base": meta.get("spec_hash_base") or key.get("spec_hash"),
            "reward_mode": spec.get("reward_mode", "episode"),
            "env": {"train": spec.get("train_env"), "validation": spec.get("validation_env")},
            "primitives": _primitives(spec),
        }
        if command == "evolve":
            rewards, reference = _evolve_rewards(store, meta, key)
        else:
            rewards, reference = _compare_rewards(store, meta)
        n_rows = store.count()
    if not rewards:
        raise ExportError(f"{run_dir} holds no scored formula ({n_rows} stored inner runs, none finished with a score); "
                          "see `derl-gym report` and the errors in the store, then rerun the search")
    out["rewards"] = rewards
    out["reference"] = reference
    return out


def _evolve_rewards(store: Any, meta: Mapping[str, Any], key: Mapping[str, Any]) -> tuple[list, list]:
    method = str(key.get("method") or (meta.get("args") or {}).get("method") or "")
    seed = key.get("seed", (meta.get("args") or {}).get("seed"))
    evolution = meta.get("evolution") or {}
    if evolution.get("best_expression") is not None:
        best = (evolution["best_expression"], evolution.get("best_canonical") or evolution["best_expression"],
                float(evolution.get("best_score") or 0.0))
    else:  # an interrupted run: the checkpoints written so far
        best = _best_of_checkpoints(store, method)
    if best is None:
        return [], []
    rows, splits = _final_rows(meta.get("final_test"))
    label = f"best ({method})"
    reward = {"method": method, "formula": best[0], "canonical": best[1], "validation": best[2], "seed": seed,
              "seeds": [{"seed": seed, "formula": best[0], "validation": best[2]}],
              "test": _test_of_row(rows.get(label), splits) if rows.get(label, {}).get("formula") == best[0] else None}
    reference = [{"method": name, "formula": row.get("formula"), "test": _test_of_row(row, splits)}
                 for name, row in rows.items() if name != label]
    return [reward], reference


def _compare_rewards(store: Any, meta: Mapping[str, Any]) -> tuple[list, list]:
    compare = meta.get("compare") or {}
    per_method: dict[str, list[dict[str, Any]]] = {}
    if compare.get("runs"):
        for method in compare.get("methods") or list(compare["runs"]):
            for seed, run in (compare["runs"].get(method) or {}).items():
                if run.get("best_expression") is not None:
                    per_method.setdefault(method, []).append(
                        {"seed": int(seed), "formula": run["best_expression"],
                         "canonical": run.get("best_canonical") or run["best_expression"],
                         "validation": float(run.get("best_score") or 0.0)})
    else:  # an interrupted compare: the checkpoints of every "<method>/seed<k>" label
        for label in store.methods():
            match = re.fullmatch(r"(.+)/seed(-?\d+)", label)
            best = _best_of_checkpoints(store, label)
            if match and best is not None:
                per_method.setdefault(match.group(1), []).append(
                    {"seed": int(match.group(2)), "formula": best[0], "canonical": best[1], "validation": best[2]})
    rows, splits = _final_rows((compare.get("test") if compare else None) or None)
    rewards = []
    for method, seeds in per_method.items():
        top = max(seeds, key=lambda s: s["validation"])  # max keeps the first (lowest seed) on ties
        rewards.append({"method": method, "formula": top["formula"], "canonical": top["canonical"],
                        "validation": top["validation"], "seed": top["seed"],
                        "seeds": [{k: s[k] for k in ("seed", "formula", "validation")} for s in seeds],
                        "test": _test_of_row(rows.get(method), splits)})
    return rewards, []
