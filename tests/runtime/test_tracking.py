"""Experiment tracking: a real short meta run writes TensorBoard events that read back as the store says;
``report_to="none"`` writes nothing; W&B is a thin adapter with a clear error when not installed; reports
need no event files; SB3 inner runs record their primitive means."""

from __future__ import annotations

import math
import statistics
import sys
import types

import pytest

from derl_gym.agents.meta import make_optimizer
from derl_gym.cli import main
from derl_gym.runtime.evolve import compare, run_evolution
from derl_gym.runtime.runners import InlineRunner
from derl_gym.runtime.standin import standin_inner, standin_primitive_means, standin_spec
from derl_gym.runtime.store import ResultStore
from derl_gym.runtime.tracking import RunTracker, check_report_to, resolve_report_to

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SPEC = standin_spec()
GRPO_TAGS = ("optimizer/clip_fraction", "optimizer/kl", "optimizer/entropy", "optimizer/adv_std",
             "optimizer/adv_spread", "optimizer/loss")


def _events(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _event_files(root) -> list:
    return sorted(root.rglob("events.out.tfevents.*"))


def _derl(seed: int = 0):
    return make_optimizer("derl", 4, seed=seed, cold_start_steps=30)  # a short cold start: formulas that differ


def test_derl_run_logs_scores_grpo_stats_curves_and_primitive_means(tmp_path):
    iterations, group = 3, 4
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, _derl(), InlineRunner(job_fn=standin_inner), store, iterations, group,
                               seed=0, report_to="tensorboard")
        curves = {r["canonical"]: r["curve"] for r in store.rows()}
        stored_best = max(r["score"] for r in store.rows() if r["status"] == "ok")
    assert _event_files(tmp_path / "tensorboard" / "derl"), "no event file under <run_dir>/tensorboard/derl"
    acc = _events(tmp_path / "tensorboard" / "derl")
    tags = set(acc.Tags()["scalars"])
    # per iteration: scores as in the records, best-so-far ends at the store's best score
    assert _scalars(acc, "meta/best_score") == [(r.iteration, pytest.approx(r.best_score)) for r in result.records]
    assert _scalars(acc, "meta/mean_score") == [(r.iteration, pytest.approx(r.mean_score)) for r in result.records]
    best_so_far = [v for _, v in _scalars(acc, "meta/best_so_far")]
    assert best_so_far == sorted(best_so_far)
    assert best_so_far[-1] == pytest.approx(stored_best) == pytest.approx(result.best_score)
    assert [v for _, v in _scalars(acc, "meta/failed")] == [0.0] * iterations
    # DERL's GRPO statistics, every updated iteration, finite, and equal to what the checkpoint recorded
    updated = [r for r in result.records if r.stats["updated"]]
    assert updated and [r.iteration for r in updated] == [s for s, _ in _scalars(acc, "optimizer/entropy")]
    assert [v for _, v in _scalars(acc, "optimizer/updated")] == [float(r.stats["updated"]) for r in result.records]
    for tag in GRPO_TAGS:
        assert tag in tags, (tag, sorted(tags))
        logged = dict(_scalars(acc, tag))
        key = tag.split("/", 1)[1]
        for record in updated:
            assert math.isfinite(logged[record.iteration])
            assert logged[record.iteration] == pytest.approx(record.stats[key], rel=1e-5, abs=1e-7)
    assert all(0.0 <= v <= 1.0 for _, v in _scalars(acc, "optimizer/clip_fraction"))
    # one learning curve per formula and iteration, equal to the stored curve
    for record in result.records:
        for j, canonical in enumerate(record.canonicals):
            tag = f"inner/iter{record.iteration}/formula{j}/success"
            assert curves[canonical] and _scalars(acc, tag) == [(s, pytest.approx(v)) for s, v in curves[canonical]]
    # primitive means: iteration mean over the scored runs, recomputed independently
    for record in result.records:
        means = [standin_primitive_means(e) for e in record.expressions]
        expected = statistics.fmean(m["progress_last"] for m in means)
        logged = dict(_scalars(acc, "primitives/mean/g4_progress_last"))[record.iteration]
        assert logged == pytest.approx(expected, rel=1e-5)
        best = max(range(len(record.scores)), key=lambda i: record.scores[i])
        assert dict(_scalars(acc, "primitives/best/g1_success"))[record.iteration] == pytest.approx(
            means[best]["success"], rel=1e-5)
    assert "formulas/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("formulas/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert f"`{result.records[-1].expressions[0]}`" in text and "g1_success" in text


def test_resume_logs_only_new_iterations_and_keeps_best_so_far(tmp_path):
    with ResultStore(tmp_path) as store:
        first = run_evolution(SPEC, make_optimizer("random", 4, seed=3), InlineRunner(job_fn=standin_inner), store,
                              2, 3, seed=0, report_to="tensorboard")
        second = run_evolution(SPEC, make_optimizer("random", 4, seed=3), InlineRunner(job_fn=standin_inner), store,
                               3, 3, seed=0, report_to="tensorboard")
    assert second.resumed_iterations == 2
    assert len(_event_files(tmp_path / "tensorboard" / "random")) == 2  # one file per process run
    acc = _events(tmp_path / "tensorboard" / "random")
    assert [s for s, _ in _scalars(acc, "meta/best_score")] == [1, 2, 3]  # iterations 1-2 not logged twice
    assert dict(_scalars(acc, "meta/best_so_far"))[3] == pytest.approx(max(first.best_score, second.best_score))


def test_report_to_none_writes_no_event_files(tmp_path):
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=standin_inner), store,
                               2, 3, seed=0, report_to="none")
    assert result.best_expression is not None
    assert _event_files(tmp_path) == []
    assert not (tmp_path / "tensorboard").exists()


def test_compare_writes_one_tensorboard_run_per_method_and_seed(tmp_path):
    with ResultStore(tmp_path) as store:
        result = compare(SPEC, ["random", "outcome"], budget=4, seeds=[0, 1], runner=InlineRunner(job_fn=standin_inner),
                         store=store, group_size=2, report_to="tensorboard")
    root = tmp_path / "tensorboard"
    for method in ("random", "outcome"):
        for seed in (0, 1):
            acc = _events(root / method / f"seed{seed}")
            assert dict(_scalars(acc, "meta/best_so_far"))[result.iterations] == pytest.approx(
                result.runs[method][seed].best_score)
    table = _events(root / "compare").Tensors("results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| outcome |" in table


def test_wandb_without_wandb_installed_raises_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    with pytest.raises(ImportError, match="pip install wandb"):
        check_report_to("wandb")
    with pytest.raises(ImportError, match="report_to='wandb' needs the wandb package"):
        RunTracker(tmp_path, report_to="wandb")
    with ResultStore(tmp_path) as store, pytest.raises(ImportError, match="pip install wandb"):
        run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=standin_inner), store, 1, 2,
                      report_to="wandb")
    with pytest.raises(SystemExit, match="--report-to wandb: .*pip install wandb"):
        main(["evolve", "--preset", "standin", "--method", "random", "--iterations", "1", "--group-size", "2",
              "--backend", "inline", "--run-dir", str(tmp_path / "cli"), "--no-test", "--report-to", "wandb"])
    assert not (tmp_path / "cli").exists()  # refused before anything ran


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="tensorboard, wandb, none"):
        resolve_report_to("mlflow")
    assert resolve_report_to("auto") == "tensorboard" == resolve_report_to(None)
    assert resolve_report_to(" None ") == "none"


def test_wandb_adapter_logs_prefixed_keys_to_one_run(tmp_path, monkeypatch):
    calls: dict[str, list] = {"init": [], "log": [], "finish": []}

    class FakeRun:
        def log(self, data):
            calls["log"].append(dict(data))

        def finish(self):
            calls["finish"].append(True)

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    fake = types.ModuleType("wandb")
    fake.init, fake.Html = init, lambda text: ("html", text)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with ResultStore(tmp_path) as store:
        result = run_evolution(SPEC, make_optimizer("random", 4, seed=0), InlineRunner(job_fn=standin_inner), store,
                               2, 3, seed=0, report_to="wandb")
    assert len(calls["init"]) == 1 and calls["init"][0]["dir"] == str(tmp_path / "wandb")
    assert calls["finish"] == [True]
    best = [d for d in calls["log"] if "random/meta/best_score" in d]
    assert [(d["random/step"], d["random/meta/best_score"]) for d in best] == [
        (r.iteration, pytest.approx(r.best_score)) for r in result.records]
    assert _event_files(tmp_path) == []


def test_report_works_from_the_store_alone(tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    assert main(["evolve", "--preset", "standin", "--method", "derl", "--no-cold-start", "--iterations", "2",
                 "--group-size", "3", "--backend", "inline", "--run-dir", str(run_dir), "--no-test",
                 "--no-progress", "--report-to", "tensorboard"]) == 0
    assert _event_files(run_dir / "tensorboard")
    assert f"tensorboard --logdir {(run_dir / 'tensorboard').resolve()}" in capsys.readouterr().out
    shutil.rmtree(run_dir / "tensorboard")
    (run_dir / "report.md").unlink()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "## derl" in report
    assert not (run_dir / "tensorboard").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_sb3_inner_run_records_primitive_means_of_its_training_episodes():
    from derl_gym.runtime.inner import run_inner
    from tests.runtime.test_inner import toy_spec

    spec = toy_spec(total_timesteps=256).replace(eval_episodes=2)
    result = run_inner(spec, "g1 + 0.5*g4", seed=0)
    assert result.ok, result.error
    means = result.extra["primitive_means"]
    assert list(means) == [p.name for p in spec.primitives.build()]
    assert all(0.0 <= v <= 1.0 for v in means.values())
    assert result.extra["train_episodes"] > 0
    # g1 is task success: its mean over the training episodes is the training success rate
    assert means["success"] == pytest.approx(result.extra["train_success"])
