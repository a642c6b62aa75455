"""The verifiers adapter against the installed verifiers (0.4: tasks with @vf.reward / @vf.metric, no Rubric):
a real task scores real traces through its own ``score``, with the TRL reward function's values."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

vf = pytest.importorskip("verifiers.v1")

from derl_gym.envs.math import math_primitives  # noqa: E402
from derl_gym.integrations.trl import trl_reward_function  # noqa: E402
from derl_gym.integrations.verifiers import (MetaRewardData, MetaRewardTask, MetaRewardTaskConfig,  # noqa: E402
                                             MetaRewardTaskset, MetaRewardTasksetConfig, make_trace, score_completion,
                                             task_config_from_export)
from derl_gym.rewards.expression import MetaReward  # noqa: E402

COMPLETIONS = ["\\boxed{18}", "Step 1: 16 - 3 - 4 = 9.\nStep 2: 9 * 2 = 18.\nSo \\boxed{18}", "I think 17",
               "18? or \\boxed{17}", "", "First add.\nThen multiply.\n#### 18"]


@pytest.mark.parametrize("formula", ["g1 + 0.5*g2", "g1*g3 + g2/(1 + g4)", "g4 - 2*g3"])
def test_the_task_pays_the_formula_and_records_each_primitive_as_a_metric(formula):
    config = MetaRewardTaskConfig(formula=formula, task="gsm8k")
    fn = trl_reward_function(formula, task="gsm8k")
    expected = fn(prompts=["q"] * len(COMPLETIONS), completions=COMPLETIONS, answer=["... #### 18"] * len(COMPLETIONS))
    values = np.array([r.primitive_values for r in fn.records])
    assert len({tuple(v) for v in values}) >= 4
    np.testing.assert_allclose(expected, MetaReward(formula, math_primitives()).evaluate(values), atol=1e-12)
    for completion, reward, row in zip(COMPLETIONS, expected, values):
        task = MetaRewardTask(MetaRewardData(prompt="Janet's ducks ...", answer="... #### 18"), config)
        trace = score_completion(task, completion)
        assert trace.reward == pytest.approx(reward, abs=1e-12)
        assert set(trace.rewards) == {"meta_reward"} and trace.rewards["meta_reward"].weight == 1.0
        assert trace.metrics == dict(zip(math_primitives().names, row.tolist()))


def test_verifiers_own_score_on_a_hand_built_trace_and_a_conversation_prompt():
    """No derl-gym helper between the trace and the score: a vf.Trace as verifiers' tools build it."""
    task = MetaRewardTask(MetaRewardData(prompt=[vf.SystemMessage(content="Be brief."), vf.UserMessage(content="1+1?")],
                                         answer="2"), MetaRewardTaskConfig(formula="g1 + 0.5*g2", task="math"))
    trace = vf.Trace(task=vf.TraceTask(type="MetaRewardTask", data=task.data, key=task.key, hash=task.hash),
                     agent=vf.AgentInfo(config=vf.AgentConfig(), name="test", trainable=False),
                     nodes=[vf.MessageNode(message=vf.UserMessage(content="1+1?")),
                            vf.MessageNode(parent=0, message=vf.AssistantMessage(content="So \\boxed{2}"), sampled=True)])
    asyncio.run(task.score(trace))
    assert trace.reward == 1.5 and trace.metrics["strict_match"] == 1.0
    assert [m.role for m in make_trace(task, "x").messages] == ["system", "user", "assistant"]
    assert score_completion(task, "So \\boxed{3}").reward == 0.5


def test_a_taskset_from_jsonl_and_a_config_from_an_export(tmp_path, shared_data_dir):
    rows = [json.loads(line) for line in (shared_data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:6]]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": r["question"], "answer": r["answer"], "id_": i})
                              for i, r in enumerate(rows)) + "\n")
    export = {"format": "derl-gym-reward/1", "rewards": [{"method": "derl", "formula": "g2 + g1", "validation": 0.5}],
              "env": {"train": {"env_id": "derl_gym/GSM8K-v0", "kwargs": {}}},
              "primitives": {"factory": "derl_gym.envs.math:math_primitives", "kwargs": {}}}
    config = task_config_from_export(export)
    assert config.formula == "g2 + g1" and config.task == "gsm8k"
    tasks = list(MetaRewardTaskset(MetaRewardTasksetConfig(path=str(path), task=config)))
    assert len(tasks) == 6 and tasks[3].data.idx == 3 and tasks[3].data.columns == {"id_": 3}
    rng = random.Random(0)
    fn = trl_reward_function("g2 + g1", task="gsm8k")
    for task, row in zip(tasks, rows):
        truth = row["answer"].split("####")[-1].strip()
        completion = rng.choice([f"\\boxed{{{truth}}}", f"so {truth}", "\\boxed{0}"])
        expected = fn(prompts=[row["question"]], completions=[completion], answer=[row["answer"]])[0]
        assert score_completion(task, completion).reward == expected
    with pytest.raises(ValueError, match="not GSM8K or MATH"):
        task_config_from_export({**export, "env": {"train": {"env_id": "derl_gym/ALFWorld-v0"}}})
