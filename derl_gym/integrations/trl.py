"""A Meta-Reward as a TRL reward function: ``GRPOTrainer(reward_funcs=[fn])``.

TRL calls a reward function as ``fn(prompts=..., completions=..., completion_ids=..., **columns)``,
where ``columns`` are the dataset's other columns (one value per completion) plus ``trainer_state``,
``log_extra`` and ``log_metric``, and expects one float per completion. The functions here compute
the primitives g1..gK of each completion and return the Meta-Reward of them, exactly as derl-gym's
own inner loop does: a math completion is graded by the GSM8K / MATH env itself (one step of
``MetaRewardWrapper(env, formula, primitives)``), so the reward a TRL run gets is the reward the
formula was selected under. Each call also logs the mean of every primitive through ``log_metric``
(``meta_reward/strict_match`` ... next to TRL's own ``reward``).

Three ways to name what a completion is graded against (:func:`trl_reward_function`'s ``task``):

- ``"gsm8k"`` / ``"math"`` (:class:`AnswerRewardFunction`): any dataset with a reference-answer
  column (``answer_column``, default ``"answer"``): a GSM8K ``answer`` field (``"... #### 42"``) or a
  bare final answer (``"42"``, ``"\\frac{1}{2}"``; a MATH ``solution`` with a ``\\boxed{}`` also works).
- an env's own problems (:class:`MetaRewardFunction`, ``index_column=``): rows carry the index of a
  problem of ``gym.make(env_id, **env_kwargs)`` (how derl-gym's GRPO inner trainer builds its dataset).
- ``"completion"`` (:class:`CompletionRewardFunction`): any primitive set over a one-step
  :class:`~derl_gym.rewards.primitives.Trajectory` whose action is the completion text and whose
  ``info`` holds the row's columns (for primitives that read the text, such as a length score).

:func:`from_export` builds the function from the JSON written by ``derl-gym export RUN_DIR``.

Example:
    >>> from derl_gym.integrations.trl import trl_reward_function
    >>> fn = trl_reward_function("g1 + 0.5*g2", task="gsm8k")
    >>> fn(prompts=["2 + 3?"] * 2, completions=["5", "Step 1: 2 + 3 = 5.\\nSo \\\\boxed{5}"], answer=["#### 5"] * 2)
    [1.0, 1.5]
    >>> fn.__name__
    'meta_reward'
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from derl_gym.rewards.expression import MetaReward
from derl_gym.rewards.primitives import PrimitiveSet, Step, Trajectory, as_primitive_set

logger = logging.getLogger(__name__)

__all__ = ["RewardRecord", "MetaRewardFunction", "AnswerRewardFunction", "CompletionRewardFunction",
           "trl_reward_function", "from_export", "TASKS", "completion_text", "prompt_text"]

#: Values of ``task``: grade math answers (GSM8K's exact numbers, MATH's math-verify) or compute the
#: primitives on a one-step trajectory of the completion.
TASKS = ("gsm8k", "math", "completion")
#: TRL's own keyword arguments that are not dataset columns.
_TRL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments", "completion_ids")


class RewardRecord(NamedTuple):
    """One scored completion: ``key`` (problem index, or the reference answer), the completion text,
    the Meta-Reward, the primitive values g1..gK and the env's task reward (1.0 when correct).

    Example:
        >>> from derl_gym.integrations.trl import trl_reward_function
        >>> fn = trl_reward_function("g1 + 0.5*g2", task="gsm8k")
        >>> _ = fn(prompts=["1 + 2?"], completions=["\\\\boxed{3}"], answer=["#### 3"])
        >>> record = fn.records[-1]
        >>> record.completion, record.reward, record.primitive_values, record.task_reward
        ('\\\\boxed{3}', 1.5, [1.0, 1.0, 0.0, 1.0], 1.0)
    """

    key: Any
    completion: str
    reward: float
    primitive_values: list[float]
    task_reward: float


def completion_text(completion: Any) -> str:
    """Return the text of a TRL completion: a string, or the content of the last message of a
    conversational completion (``[{"role": "assistant", "content": ...}]``).

    Example:
        >>> from derl_gym.integrations.trl import completion_text
        >>> completion_text("42"), completion_text([{"role": "assistant", "content": "\\\\boxed{42}"}])
        ('42', '\\\\boxed{42}')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return "" if completion is None else str(completion)


def prompt_text(prompt: Any) -> str:
    """Return the text of a TRL prompt: a string, or the content of the last user message of a
    conversational prompt (the whole conversation's contents when it has no user message).

    Example:
        >>> from derl_gym.integrations.trl import prompt_text
        >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6 * 7?"}])
        '6 * 7?'
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        users = [str(m.get("content", "")) for m in prompt if m.get("role") == "user"]
        return users[-1] if users else "\n".join(str(m.get("content", "")) for m in prompt)
    return "" if prompt is None else str(prompt)


def _column(kwargs: Mapping[str, Any], name: str, n: int, what: str) -> list[Any]:
    """Return dataset column ``name`` (one value per completion); raises ``ValueError`` naming the
    columns TRL passed when it is missing or has the wrong length."""
    if name not in kwargs or kwargs[name] is None:
        columns = sorted(k for k in kwargs if k not in _TRL_KWARGS)
        raise ValueError(f"the dataset has no {name!r} column ({what}); its columns are {columns or 'none'} besides "
                         f"'prompt'. Add the column or pass the right column name")
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


class _RewardFunctionBase:
    """What every reward function here shares: the formula, the primitives, the records and the logging."""

    def __init__(self, meta_reward: MetaReward, primitives: PrimitiveSet, name: str) -> None:
        self.meta_reward = meta_reward
        self.primitives = primitives
        self.__name__ = name
        self.records: list[RewardRecord] = []
        self.pending: list[float] = []

    @property
    def formula(self) -> str:
        """The Meta-Reward's text."""
        return self.meta_reward.text

    def drain(self) -> list[float]:
        """Return and clear the task rewards recorded since the last call (for a training curve)."""
        out, self.pending = self.pending, []
        return out

    def _finish(self, records: list[RewardRecord], kwargs: Mapping[str, Any]) -> list[float]:
        self.records += records
        self.pending += [r.task_reward for r in records]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and records:
            values = np.array([r.primitive_values for r in records], dtype=float)
            for i, primitive in enumerate(self.primitives.names):
                log_metric(f"{self.__name__}/{primitive}", float(values[:, i].mean()))
        return [r.reward for r in records]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.formula!r}, {self.primitives!r})"


class MetaRewardFunction(_RewardFunctionBase):
    """A TRL reward function over a one-step env's own problems: each row names a problem by its index.

    ``wrapped_env`` is ``MetaRewardWrapper(env, formula, primitives)`` around a GSM8K / MATH env; for
    each completion the function resets it to the row's problem (``reset(options={"index": i})``),
    steps it with the completion text and returns the wrapper's reward. ``records`` keeps a
    :class:`RewardRecord` per completion; ``pending`` the task rewards since :meth:`drain`.

    Example:
        >>> import json, pathlib, tempfile
        >>> import gymnasium as gym, derl_gym
        >>> from derl_gym.wrappers import MetaRewardWrapper
        >>> tmp = tempfile.TemporaryDirectory()
        >>> (pathlib.Path(tmp.name) / "gsm8k").mkdir()
        >>> rows = [{"question": "What is 1 + 2?", "answer": "1 + 2 = 3\\n#### 3"}]
        >>> _ = (pathlib.Path(tmp.name) / "gsm8k" / "test.jsonl").write_text("\\n".join(map(json.dumps, rows)))
        >>> env = gym.make("derl_gym/GSM8K-v0", split="test", data_dir=tmp.name)
        >>> fn = MetaRewardFunction(MetaRewardWrapper(env, "g1 + 0.5*g2"))
        >>> fn(prompts=["What is 1 + 2?"] * 2, completions=["\\\\boxed{3}", "\\\\boxed{4}"], problem_index=[0, 0])
        [1.5, 0.5]
        >>> fn.close(); tmp.cleanup()
    """

    def __init__(self, wrapped_env: Any, *, index_column: str = "problem_index", name: str = "meta_reward") -> None:
        self.env = wrapped_env
        self.index_column = index_column
        super().__init__(wrapped_env.get_wrapper_attr("expression"), wrapped_env.get_wrapper_attr("primitives"), name)

    def __call__(self, prompts: Sequence[Any] = (), completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
        """Return the Meta-Reward of every completion (one float each)."""
        indices = _column(kwargs, self.index_column, len(completions), "the index of each row's problem in the env")
        records = []
        for completion, index in zip(completions, indices):
            text = completion_text(completion)
            self.env.reset(options={"index": int(index)})
            _, reward, _, _, info = self.env.step(text)
            records.append(RewardRecord(int(index), text, float(reward),
                                        [float(v) for v in info.get("primitive_values", [])],
                                        float(info.get("task_reward", 0.0))))
        return self._finish(records, kwargs)

    def close(self) -> None:
        """Close the wrapped env."""
        self.env.close()


def ground_truth(task: str, answer: Any) -> str:
    """Return the reference answer of one row for ``task``.

    GSM8K: the number after ``####`` (or the whole field when it has none); MATH: the answer (or the
    last ``\\boxed{}`` of a solution).

    Raises:
        ValueError: nothing is left (the message names the value).

    Example:
        >>> from derl_gym.integrations.trl import ground_truth
        >>> ground_truth("gsm8k", "6 * 7 = 42\\n#### 42"), ground_truth("gsm8k", "1,000")
        ('42', '1000')
        >>> ground_truth("math", "so it is \\\\boxed{\\\\frac{1}{2}}")
        '\\\\frac{1}{2}'
    """
    from derl_gym.envs.math import gsm8k_ground_truth, math_ground_truth

    text = str(answer).strip() if isinstance(answer, (str, int, float)) and not isinstance(answer, bool) else ""
    if task == "gsm8k":
        truth = gsm8k_ground_truth(text) or text.replace(",", "")
    else:
        truth = math_ground_truth({"solution": text} if "\\boxed" in text else {"answer": text}) or ""
    if not truth:
        raise ValueError(f"reference answer {answer!r} is empty for task {task!r}; the answer column must hold a "
                         "GSM8K answer ('... #### 42'), a final answer ('42') or a solution with \\boxed{...}")
    return truth


def _answer_env(task: str, problems: list[Any], grader: Any = None) -> Any:
    """Return the GSM8K / MATH env over ``problems`` (no data files read): the same answer checking and
    ``info`` as the registered envs, because it is the registered env class. A MATH env checks with
    ``grader`` (a :class:`~derl_gym.envs.math.MathGrader`, shared so its math-verify process outlives the env)."""
    from derl_gym.envs.math import GSM8KEnv, MATHEnv

    cls = GSM8KEnv if task == "gsm8k" else MATHEnv
    env = cls.__new__(cls)
    width = max([1, *(len(p.question) for p in problems)])
    # the shared one-step env's constructor takes the problems; the subclass constructors only load them
    super(cls, env).__init__(problems, "external", max_length=width)
    if cls is MATHEnv:
        env.verify_timeout = grader.timeout
        env.grader = grader
    return env


class AnswerRewardFunction(_RewardFunctionBase):
    """A TRL reward function for any math dataset with a reference-answer column.

    For each completion a GSM8K (``task="gsm8k"``: exact numbers) or MATH (``"math"``: math-verify,
    ``verify_timeout`` seconds per check) env over the row's problem is stepped with the completion
    inside ``MetaRewardWrapper``, as derl-gym's inner loop does; the return is the Meta-Reward of the
    primitives (default :func:`~derl_gym.envs.math.math_primitives`). ``records`` and ``pending`` as
    :class:`MetaRewardFunction`. A MATH function keeps one math-verify process for all its calls
    (:attr:`grader`); :meth:`close` ends it.

    Example:
        >>> fn = AnswerRewardFunction(MetaReward("g1 - g4", 4), task="gsm8k")
        >>> fn(prompts=["?"], completions=["12 or 13? \\\\boxed{13}"], answer=["#### 12"])
        [-1.0]
    """

    def __init__(self, meta_reward: MetaReward, primitives: PrimitiveSet | None = None, *, task: str = "gsm8k",
                 answer_column: str = "answer", verify_timeout: float | None = 5.0, mode: str = "episode",
                 name: str = "meta_reward") -> None:
        from derl_gym.envs.math import math_primitives

        if task not in ("gsm8k", "math"):
            raise ValueError(f"AnswerRewardFunction grades 'gsm8k' or 'math' answers, got task={task!r}")
        super().__init__(meta_reward, as_primitive_set(primitives) if primitives is not None else math_primitives(),
                         name)
        self.task = task
        self.answer_column = answer_column
        self.verify_timeout = verify_timeout
        self.mode = mode
        self._grader: Any = None

    @property
    def grader(self) -> Any:
        """The :class:`~derl_gym.envs.math.MathGrader` of a MATH function (made on first use; None for GSM8K)."""
        if self.task == "math" and self._grader is None:
            from derl_gym.envs.math import MathGrader

            self._grader = MathGrader(self.verify_timeout)
        return self._grader

    def close(self) -> None:
        """End the MATH grader's math-verify process, if one was started (a later call starts a new one)."""
        if self._grader is not None:
            self._grader.close()

    def __call__(self, prompts: Sequence[Any] = (), completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
        """Return the Meta-Reward of every completion (one float each)."""
        from derl_gym.envs.math import MathProblem
        from derl_gym.wrappers.meta_reward import MetaRewardWrapper

        answers = _column(kwargs, self.answer_column, len(completions), "the reference answer of each row")
        prompts = list(prompts) if prompts is not None and len(prompts) == len(completions) else [""] * len(completions)
        if not completions:
            return []
        problems = [MathProblem(problem_id=f"row-{i}", question=prompt_text(p), ground_truth=ground_truth(self.task, a))
                    for i, (p, a) in enumerate(zip(prompts, answers))]
        # not closed: it holds nothing but the shared grader, which outlives it
        env = MetaRewardWrapper(_answer_env(self.task, problems, self.grader), self.meta_reward, self.primitives,
                                mode=self.mode)
        records = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            env.reset(options={"index": i})
            _, reward, _, _, info = env.step(text)
            records.append(RewardRecord(problems[i].ground_truth, text, float(reward),
                                        [float(v) for v in info.get("primitive_values", [])],
                                        float(info.get("task_reward", 0.0))))
        return self._finish(records, kwargs)


class CompletionRewardFunction(_RewardFunctionBase):
    """A TRL reward function for any primitive set that reads a completion and its row.

    Each completion becomes a one-step :class:`~derl_gym.rewards.primitives.Trajectory`: initial
    observation = the prompt text, action = the completion text, reward 0, terminated, ``info`` = the
    row's dataset columns plus ``response`` (the completion text). Returns the Meta-Reward of the
    primitives on it (what ``MetaRewardWrapper`` pays at the end of such an episode).

    Example:
        >>> from derl_gym.rewards.primitives import Primitive, PrimitiveSet
        >>> longish = Primitive("longish", "1 if over 10 characters", lambda t: len(t.steps[-1].action) > 10)
        >>> said = Primitive("polite", "the row says the reply was polite", lambda t: t.steps[-1].info["polite"])
        >>> fn = CompletionRewardFunction(MetaReward("g1 + 2*g2", ["longish", "polite"]), PrimitiveSet([longish, said]))
        >>> fn(prompts=["hi"] * 2, completions=["hello there, friend", "yo"], polite=[1.0, 0.0])
        [3.0, 0.0]
    """

    def __init__(self, meta_reward: MetaReward, primitives: PrimitiveSet, *, name: str = "meta_reward") -> None:
        super().__init__(meta_reward, as_primitive_set(primitives), name)

    def __call__(self, prompts: Sequence[Any] = (), completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
        """Return the Meta-Reward of every completion (one float each)."""
        n = len(completions)
        prompts = list(prompts) if prompts is not None and len(prompts) == n else [""] * n
        columns = {k: list(v) for k, v in kwargs.items()
                   if k not in _TRL_KWARGS and isinstance(v, (list, tuple)) and len(v) == n}
        records = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            row = {k: v[i] for k, v in columns.items()}
            trajectory = Trajectory(prompt_text(prompts[i]), {},
                                    [Step(text, prompt_text(prompts[i]), 0.0, True, False, {**row, "response": text}, {})])
            values = self.primitives.compute(trajectory)
            reward = float(self.meta_reward.evaluate(values[None, : self.meta_reward.num_variables])[0])
            records.append(RewardRecord(i, text, reward, [float(v) for v in values], float(trajectory.success)))
        return self._finish(records, kwargs)


def _task_of_env(env_id: str | None) -> str | None:
    if not env_id:
        return None
    tail = env_id.rsplit("/", 1)[-1].lower()
    if tail.startswith("gsm8k"):
        return "gsm8k"
    if tail.startswith("math-") or tail == "math":
        return "math"
    return None


def trl_reward_function(formula: str | MetaReward, primitives: PrimitiveSet | Sequence[Any] | None = None, *,
                        task: str | None = None, env_id: str | None = None, env_kwargs: Mapping[str, Any] | None = None,
                        answer_column: str = "answer", index_column: str | None = None,
                        verify_timeout: float | None = None, mode: str = "episode",
                        name: str = "meta_reward") -> _RewardFunctionBase:
    """Return a TRL reward function (``GRPOTrainer(reward_funcs=[fn])``) paying ``formula`` over ``primitives``.

    ``task`` is ``"gsm8k"`` or ``"math"`` (grade each completion against the ``answer_column`` of its
    row: :class:`AnswerRewardFunction`) or ``"completion"`` (compute ``primitives`` on a one-step
    trajectory of the completion with the row's columns in ``info``: :class:`CompletionRewardFunction`).
    Left out, it follows from ``env_id`` (``derl_gym/GSM8K-v0`` -> gsm8k, ``derl_gym/MATH-v0`` -> math).
    With ``index_column`` the rows instead name problems of ``gym.make(env_id, **env_kwargs)`` by index
    (:class:`MetaRewardFunction`). ``primitives`` defaults to the math primitives for math tasks;
    ``verify_timeout`` (MATH) defaults to ``env_kwargs["verify_timeout"]`` or 5 s. The function's
    ``__name__`` is ``name`` (TRL logs the reward under it).

    Raises ``ValueError`` for an unknown task, a task that cannot be inferred, ``"completion"``
    without primitives, or a formula that uses a variable the primitive set does not have
    (:class:`~derl_gym.rewards.expression.InvalidExpression`).

    Example:
        >>> fn = trl_reward_function("g1 + 0.25*g3", env_id="derl_gym/GSM8K-v0")
        >>> fn(prompts=["?"], completions=["Step 1: 6 * 7 = 42.\\nStep 2: done.\\n#### 42"], answer=["42"])
        [1.25]
    """
    env_kwargs = dict(env_kwargs or {})
    resolved = task or _task_of_env(env_id)
    if index_column is not None:
        if not env_id:
            raise ValueError("index_column= names problems of an env: pass env_id= (and env_kwargs=) too")
        import gymnasium as gym

        import derl_gym  # noqa: F401  (registers the envs)
        from derl_gym.wrappers.meta_reward import MetaRewardWrapper

        wrapped = MetaRewardWrapper(gym.make(env_id, **env_kwargs), formula, primitives, mode=mode)
        return MetaRewardFunction(wrapped, index_column=index_column, name=name)
    if resolved is None:
        raise ValueError(f"cannot tell how to grade completions for env_id={env_id!r}: pass task='gsm8k' or 'math' "
                         "(grade against the dataset's answer column) or task='completion' (compute the primitives on "
                         "each completion with the row's columns). Multi-turn envs (ALFWorld, ScienceWorld) are "
                         "trained by derl-gym's grpo inner trainer (rollout_func), not by a single-completion reward")
    if resolved not in TASKS:
        raise ValueError(f"unknown task {resolved!r}; choose one of {TASKS}")
    if resolved == "completion":
        if primitives is None:
            raise ValueError("task='completion' needs primitives= (a PrimitiveSet whose functions read the one-step "
                             "trajectory of a completion)")
        pset = as_primitive_set(primitives)
        return CompletionRewardFunction(_meta(formula, pset), pset, name=name)
    from derl_gym.envs.math import math_primitives

    pset = as_primitive_set(primitives) if primitives is not None else math_primitives()
    timeout = verify_timeout if verify_timeout is not None else env_kwargs.get("verify_timeout", 5.0)
    return AnswerRewardFunction(_meta(formula, pset), pset, task=resolved, answer_column=answer_column,
                                verify_timeout=timeout, mode=mode, name=name)


def _meta(formula: str | MetaReward, primitives: PrimitiveSet) -> MetaReward:
    """Return ``formula`` parsed over ``primitives`` (re-parsed when it was parsed over another set)."""
    text = formula.text if isinstance(formula, MetaReward) else str(formula)
    return MetaReward(text, primitives)


# ------------------------------------------------------------------------------ exported runs

def load_export(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Return the export dict of ``source``: a path to the JSON of ``derl-gym export``, or the dict itself.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file or dict is not a derl-gym reward export (the message names it).

    Example:
        >>> import json, pathlib, tempfile
        >>> from derl_gym.integrations.trl import load_export
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp, "reward.json")
        ...     _ = path.write_text(json.dumps({"format": "derl-gym-reward/1", "rewards": []}))
        ...     load_export(path)["format"]
        'derl-gym-reward/1'
        >>> load_export({"format": "something else"})
        Traceback (most recent call last):
        ...
        ValueError: the given dict is not a derl-gym reward export (no 'format': 'derl-gym-reward/1'); ...
    """
    if isinstance(source, Mapping):
        data = dict(source)
        where = "the given dict"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no export file {where}; write one with `derl-gym export RUN_DIR --out FILE`") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not JSON ({exc}); write it with `derl-gym export RUN_DIR --out FILE`") from None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("derl-gym-reward/"):
        raise ValueError(f"{where} is not a derl-gym reward export (no 'format': 'derl-gym-reward/1'); write it with "
                         "`derl-gym export RUN_DIR`")
    return data


def exported_reward(data: Mapping[str, Any], method: str | None = None) -> dict[str, Any]:
    """Return one reward entry of an export.

    That is the only one, the one of ``method``, or (a compare run without ``method``) the one with
    the best validation score.

    Raises:
        ValueError: the export holds no reward, or no entry for ``method`` (the message names the methods).

    Example:
        >>> from derl_gym.integrations.trl import exported_reward
        >>> export = {"rewards": [{"method": "derl", "formula": "g1 + g2", "validation": 0.7},
        ...                       {"method": "random", "formula": "g1", "validation": 0.5}]}
        >>> exported_reward(export)["formula"], exported_reward(export, method="random")["formula"]
        ('g1 + g2', 'g1')
    """
    rewards = list(data.get("rewards") or [])
    if not rewards:
        raise ValueError("the export holds no reward (no scored formula)")
    if method is not None:
        found = [r for r in rewards if r.get("method") == method]
        if not found:
            raise ValueError(f"the export has no method {method!r}; it has {[r.get('method') for r in rewards]}")
        return dict(found[0])
    return dict(max(rewards, key=lambda r: float(r.get("validation") or 0.0)))


def export_primitives(data: Mapping[str, Any]) -> PrimitiveSet:
    """Return the primitive set an export names (its ``PrimitiveSpec`` factory and kwargs, built here);
    warns when the built set's names differ from the exported ones.

    Example:
        >>> from derl_gym.integrations.trl import export_primitives
        >>> export_primitives({"primitives": {"factory": "derl_gym.envs.math:math_primitives", "kwargs": {}}}).names
        ['strict_match', 'boxed_format', 'explicit_steps', 'loose_match']
    """
    from derl_gym.runtime.spec import PrimitiveSpec

    spec = data.get("primitives") or {}
    pset = PrimitiveSpec(str(spec.get("factory", "")), dict(spec.get("kwargs") or {})).build()
    names = [v.get("name") for v in spec.get("variables") or []]
    if names and names != pset.names:
        logger.warning("the export's primitives were %s but %s builds %s here; the formula's g1..gK follow the "
                       "built set", names, spec.get("factory"), pset.names)
    return pset


def from_export(source: str | os.PathLike | Mapping[str, Any], *, method: str | None = None,
                primitives: PrimitiveSet | Sequence[Any] | None = None, task: str | None = None,
                **kwargs: Any) -> _RewardFunctionBase:
    """Return the TRL reward function of a run's discovered formula (the JSON of ``derl-gym export``).

    ``method`` picks a method of a compare run (default: the best validation score). The primitives
    are the run's own (its ``PrimitiveSpec`` rebuilt) unless ``primitives=`` replaces them (the formula
    must then read only g1..gK of that set); ``task`` defaults to the run's train env (GSM8K / MATH);
    other keyword arguments go to :func:`trl_reward_function` (``answer_column``, ``verify_timeout``,
    ``name`` ...). Raises ``ValueError`` when the run's env is not a single-completion math env and no
    ``task`` is given.

    Example:
        >>> export = {"format": "derl-gym-reward/1",  # what `derl-gym export RUN_DIR` writes, trimmed
        ...           "env": {"train": {"env_id": "derl_gym/GSM8K-v0", "kwargs": {"split": "train"}}},
        ...           "primitives": {"factory": "derl_gym.envs.math:math_primitives", "kwargs": {}},
        ...           "rewards": [{"method": "derl", "formula": "g1 + 0.5*g2", "validation": 0.61}]}
        >>> fn = from_export(export)  # or from_export("reward.json")
        >>> fn.formula, fn(prompts=["1 + 2?"], completions=["so \\\\boxed{3}"], answer=["#### 3"])
        ('g1 + 0.5*g2', [1.5])
    """
    data = load_export(source)
    entry = exported_reward(data, method)
    env = (data.get("env") or {}).get("train") or {}
    pset = as_primitive_set(primitives) if primitives is not None else export_primitives(data)
    kwargs.setdefault("env_kwargs", env.get("kwargs") or {})
    return trl_reward_function(entry["formula"], pset, task=task, env_id=env.get("env_id"), **kwargs)
