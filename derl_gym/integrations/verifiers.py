"""A Meta-Reward as a task of the ``verifiers`` library (0.4: ``import verifiers.v1 as vf``).

verifiers 0.4 replaced the ``Rubric`` of earlier releases (reward functions with weights) by tasks
whose methods are marked ``@vf.reward(weight=...)`` (summed, weighted, into ``trace.reward``) and
``@vf.metric`` (recorded in ``trace.metrics``, never summed: a 0-weight signal). A Meta-Reward is
not always a weighted sum of its primitives (``g1*g2``, ``g1/(1 + g3)``), so
:class:`MetaRewardTask` scores the whole formula as one reward of weight 1, ``meta_reward``, and
records each primitive as a metric (``strict_match``, ``boxed_format`` ...). The values are those of
the TRL reward function (:func:`derl_gym.integrations.trl.trl_reward_function`) for the same
completion and row: one implementation.

The task's settings live in its config (:class:`MetaRewardTaskConfig`: formula, primitive-set
factory and kwargs, task, answer handling), so verifiers can build, copy and serialise it;
:func:`task_config_from_export` reads them from ``derl-gym export``'s JSON. Each task's data
(:class:`MetaRewardData`) is a prompt plus the reference ``answer`` (and, for
``task="completion"``, any other ``columns`` the primitives read). :class:`MetaRewardTaskset` loads
rows from a JSONL file. :func:`score_completion` scores one completion offline (no model, no
runtime) through the task's own ``score``.

Example:
    >>> cfg = MetaRewardTaskConfig(formula="g1 + 0.5*g2", task="gsm8k")
    >>> task = MetaRewardTask(MetaRewardData(prompt="What is 6*7?", answer="#### 42"), cfg)
    >>> trace = score_completion(task, "6*7 = 42, so \\\\boxed{42}")
    >>> trace.reward, trace.metrics["strict_match"], trace.metrics["boxed_format"]
    (1.5, 1.0, 1.0)
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import verifiers.v1 as vf
from pydantic import Field

from derl_gym.integrations.trl import exported_reward, load_export, trl_reward_function

__all__ = ["MetaRewardData", "MetaRewardTaskConfig", "MetaRewardTask", "MetaRewardTasksetConfig",
           "MetaRewardTaskset", "score_completion", "ascore_completion", "task_config_from_export", "make_trace"]


class MetaRewardData(vf.TaskData):
    """One row: the ``prompt`` (``vf.TaskData``), the reference ``answer`` (GSM8K ``"... #### 42"`` or a
    final answer; empty for ``task="completion"``) and other ``columns`` the primitives may read.

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardData
        >>> row = MetaRewardData(prompt="What is 6*7?", answer="#### 42", columns={"source": "demo"})
        >>> row.prompt_text, row.answer, row.columns
        ('What is 6*7?', '#### 42', {'source': 'demo'})
    """

    answer: str = ""
    columns: dict[str, Any] = Field(default_factory=dict)


class MetaRewardTaskConfig(vf.TaskConfig):
    """The reward: ``formula`` over the primitive set ``primitives_factory(**primitives_kwargs)``
    (a ``"module:function"`` reference, as in a derl-gym spec), graded as ``task`` (``"gsm8k"``,
    ``"math"`` or ``"completion"``; see :func:`~derl_gym.integrations.trl.trl_reward_function`), MATH
    checks bounded by ``verify_timeout`` seconds.

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardTaskConfig
        >>> cfg = MetaRewardTaskConfig(formula="g1 + 0.5*g2", task="gsm8k")
        >>> cfg.primitives_factory, cfg.verify_timeout
        ('derl_gym.envs.math:math_primitives', 5.0)
    """

    formula: str = "g1"
    primitives_factory: str = "derl_gym.envs.math:math_primitives"
    primitives_kwargs: dict[str, Any] = Field(default_factory=dict)
    task: str = "gsm8k"
    verify_timeout: float | None = 5.0


def _reply(trace: Any) -> str:
    """Return the completion a trace scores: the root agent's reply, else the last sampled assistant
    message (unstripped, as TRL would pass it)."""
    if trace.root_reply is not None:
        return str(trace.root_reply)
    messages = trace.assistant_messages
    return str(messages[-1].content or "") if messages else ""


class MetaRewardTask(vf.Task[MetaRewardData, vf.State, MetaRewardTaskConfig]):
    """A verifiers task paying the config's Meta-Reward (``meta_reward``, weight 1) and recording every
    primitive as a metric under its name. ``trace.reward`` is the Meta-Reward; ``trace.metrics`` the
    primitive values g1..gK.

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardData, MetaRewardTask, MetaRewardTaskConfig, score_completion
        >>> task = MetaRewardTask(MetaRewardData(prompt="What is 6*7?", answer="#### 42"),
        ...                       MetaRewardTaskConfig(formula="g1 + 0.5*g2", task="gsm8k"))
        >>> trace = score_completion(task, "\\\\boxed{41}")  # boxed (g2) but wrong (g1)
        >>> trace.reward, trace.metrics["strict_match"], trace.metrics["boxed_format"]
        (0.5, 0.0, 1.0)
    """

    def _function(self) -> Any:
        fn = self.__dict__.get("_derl_fn")
        if fn is None:
            from derl_gym.runtime.spec import PrimitiveSpec

            cfg = self.config
            pset = PrimitiveSpec(cfg.primitives_factory, dict(cfg.primitives_kwargs)).build()
            fn = trl_reward_function(cfg.formula, pset, task=cfg.task, verify_timeout=cfg.verify_timeout)
            self.__dict__["_derl_fn"] = fn
        return fn

    def _evaluate(self, trace: Any) -> tuple[float, dict[str, float]]:
        """Return ``(meta_reward, {primitive name: value})`` of the trace's reply (computed once per trace)."""
        cache = self.__dict__.setdefault("_derl_scores", {})
        if trace.id not in cache:
            fn = self._function()
            columns = {k: [v] for k, v in self.data.columns.items()}
            if self.config.task != "completion":
                columns["answer"] = [self.data.answer]
            (reward,) = fn(prompts=[self.data.prompt_text], completions=[_reply(trace)], **columns)
            values = fn.records[-1].primitive_values
            cache[trace.id] = (float(reward), dict(zip(fn.primitives.names, map(float, values))))
        return cache[trace.id]

    @vf.reward(weight=1.0)
    async def meta_reward(self, trace: vf.Trace) -> float:
        """The Meta-Reward of the reply (the whole formula, weight 1)."""
        return self._evaluate(trace)[0]

    @vf.metric
    async def primitives(self, trace: vf.Trace) -> dict[str, float]:
        """Every primitive's value on the reply, keyed by its name (metrics: recorded, not summed)."""
        return self._evaluate(trace)[1]


class MetaRewardTasksetConfig(vf.TasksetConfig):
    """Where the rows are: a JSONL file with ``prompt`` (text or messages) and ``answer_column``
    (default ``"answer"``) per line; ``task`` is the :class:`MetaRewardTaskConfig` of every task.

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardTaskConfig, MetaRewardTasksetConfig
        >>> cfg = MetaRewardTasksetConfig(path="rows.jsonl", answer_column="solution", task=MetaRewardTaskConfig(task="math"))
        >>> cfg.path, cfg.answer_column, cfg.task.task
        ('rows.jsonl', 'solution', 'math')
    """

    path: str = ""
    answer_column: str = "answer"
    task: MetaRewardTaskConfig = MetaRewardTaskConfig()


class MetaRewardTaskset(vf.Taskset[MetaRewardTask, MetaRewardTasksetConfig]):
    """The rows of ``config.path`` as :class:`MetaRewardTask` s (other columns go to ``data.columns``).

    Example:
        >>> import json, pathlib, tempfile
        >>> from derl_gym.integrations.verifiers import MetaRewardTaskset, MetaRewardTasksetConfig
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "rows.jsonl")
        ...     rows = [{"prompt": "What is 6*7?", "answer": "#### 42", "level": 1}, {"prompt": "2+2?", "answer": "#### 4"}]
        ...     _ = path.write_text("\\n".join(map(json.dumps, rows)))
        ...     tasks = list(MetaRewardTaskset(MetaRewardTasksetConfig(path=str(path))).load())
        >>> len(tasks), tasks[0].data.columns, tasks[1].data.answer
        (2, {'level': 1}, '#### 4')
    """

    def load(self) -> Iterator[MetaRewardTask]:
        """Yield one task per JSONL line; raises ``ValueError`` naming the file and line of a bad row."""
        path = Path(self.config.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no JSONL file {path}; set MetaRewardTasksetConfig(path=...) to rows with "
                                    f"'prompt' and {self.config.answer_column!r}")
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(row, dict) or "prompt" not in row:
                    raise ValueError(f"{path}:{lineno}: a row must be an object with a 'prompt'")
                answer = row.pop(self.config.answer_column, "")
                prompt = row.pop("prompt")
                yield MetaRewardTask(MetaRewardData(prompt=prompt, answer=str(answer), columns=row), self.config.task)


def task_config_from_export(source: str | os.PathLike | Mapping[str, Any], *, method: str | None = None,
                            task: str | None = None, **overrides: Any) -> MetaRewardTaskConfig:
    """Return the :class:`MetaRewardTaskConfig` of a run's discovered formula (``derl-gym export``'s JSON).

    ``task`` defaults to the run's train env (``gsm8k`` for ``derl_gym/GSM8K-v0``, ``math`` for
    ``derl_gym/MATH-v0``); raises ``ValueError`` when it cannot be told. ``overrides`` set other fields
    (e.g. ``primitives_factory=`` to grade with another set of the same size).

    Example:
        >>> from derl_gym.integrations.verifiers import task_config_from_export
        >>> export = {"format": "derl-gym-reward/1",  # what `derl-gym export RUN_DIR` writes, trimmed
        ...           "env": {"train": {"env_id": "derl_gym/MATH-v0", "kwargs": {"verify_timeout": 2.0}}},
        ...           "primitives": {"factory": "derl_gym.envs.math:math_primitives", "kwargs": {}},
        ...           "rewards": [{"method": "derl", "formula": "g1 + 0.5*g2", "validation": 0.61}]}
        >>> cfg = task_config_from_export(export)
        >>> cfg.formula, cfg.task, cfg.verify_timeout
        ('g1 + 0.5*g2', 'math', 2.0)
    """
    from derl_gym.integrations.trl import _task_of_env

    data = load_export(source)
    entry = exported_reward(data, method)
    env = (data.get("env") or {}).get("train") or {}
    resolved = task or _task_of_env(env.get("env_id"))
    if resolved is None:
        raise ValueError(f"the run's train env {env.get('env_id')!r} is not GSM8K or MATH: pass task='gsm8k', 'math' "
                         "or 'completion'")
    prims = data.get("primitives") or {}
    fields: dict[str, Any] = {"formula": entry["formula"], "primitives_factory": prims.get("factory"),
                              "primitives_kwargs": dict(prims.get("kwargs") or {}), "task": resolved}
    if "verify_timeout" in (env.get("kwargs") or {}):
        fields["verify_timeout"] = env["kwargs"]["verify_timeout"]
    fields.update(overrides)
    return MetaRewardTaskConfig(**fields)


def make_trace(task: MetaRewardTask, completion: str) -> vf.Trace:
    """Return an unscored ``vf.Trace`` of ``task`` whose conversation is the task's prompt and one
    sampled assistant message, ``completion`` (no agent ran: as verifiers' own offline tools build one).

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardData, MetaRewardTask, MetaRewardTaskConfig, make_trace
        >>> task = MetaRewardTask(MetaRewardData(prompt="What is 6*7?", answer="#### 42"), MetaRewardTaskConfig())
        >>> trace = make_trace(task, "\\\\boxed{42}")
        >>> [type(node.message).__name__ for node in trace.nodes], trace.nodes[-1].sampled
        (['UserMessage', 'AssistantMessage'], True)
    """
    nodes = []
    prompt = task.data.prompt
    if isinstance(prompt, str):
        nodes.append(vf.MessageNode(message=vf.UserMessage(content=prompt)))
    else:
        for message in prompt or []:
            nodes.append(vf.MessageNode(parent=len(nodes) - 1 if nodes else None, message=message))
    nodes.append(vf.MessageNode(parent=len(nodes) - 1 if nodes else None,
                                message=vf.AssistantMessage(content=completion), sampled=True))
    return vf.Trace(task=vf.TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                    agent=vf.AgentInfo(config=vf.AgentConfig(), name="derl-gym", trainable=False), nodes=nodes)


async def ascore_completion(task: MetaRewardTask, completion: str) -> vf.Trace:
    """Return the trace of ``completion`` scored by ``task.score`` (no runtime): ``trace.reward`` is
    the Meta-Reward, ``trace.rewards["meta_reward"]`` its record, ``trace.metrics`` the primitives.

    Example:
        >>> import asyncio
        >>> from derl_gym.integrations.verifiers import MetaRewardData, MetaRewardTask, MetaRewardTaskConfig, ascore_completion
        >>> task = MetaRewardTask(MetaRewardData(prompt="2+2?", answer="#### 4"), MetaRewardTaskConfig(formula="g1 + 0.5*g2"))
        >>> asyncio.run(ascore_completion(task, "2+2 = 4, so \\\\boxed{4}")).reward
        1.5
    """
    trace = make_trace(task, completion)
    await task.score(trace)
    return trace


def score_completion(task: MetaRewardTask, completion: str) -> vf.Trace:
    """Synchronous :func:`ascore_completion` (runs its own event loop: call the async one from async code).

    Example:
        >>> from derl_gym.integrations.verifiers import MetaRewardData, MetaRewardTask, MetaRewardTaskConfig, score_completion
        >>> task = MetaRewardTask(MetaRewardData(prompt="2+2?", answer="#### 4"), MetaRewardTaskConfig(formula="g1"))
        >>> score_completion(task, "it is 5").reward, score_completion(task, "it is 4").reward
        (0.0, 1.0)
    """
    return asyncio.run(ascore_completion(task, completion))
