"""The meta level as Gymnasium environments: writing a Meta-Reward is the agent's task.

:class:`MetaRewardEnv` (``derl_gym/MetaReward-v0``): one episode writes one formula token by
token. The action is a grammar token (``Discrete(vocab_size)``), :meth:`MetaRewardEnv.action_masks`
gives the grammar's valid next tokens (sb3-contrib ``MaskablePPO`` reads it), and the observation
is the token ids written so far, padded to ``max_tokens`` with ``PAD = vocab_size``
(``MultiDiscrete([vocab_size + 1] * max_tokens)``). Every intermediate reward is 0. When END is
chosen -- or when END is the only token the grammar still allows, in which case the episode ends
without the extra step -- the formula is scored by the inner loop and the reward is the inner
agent's validation success. ``info`` then has ``"formula"``, ``"canonical"``, ``"inner_result"``
(an :class:`~derl_gym.runtime.spec.InnerResult` as a dict) and ``"from_cache"``.

A masked-out (invalid) action ends the episode with reward ``invalid_reward`` (0.0) and
``info["error"]``; ``MaskablePPO`` never takes one.

:class:`MetaRewardTextEnv` (``derl_gym/MetaRewardText-v0``) is for language-model meta-agents:
each step's action is a whole formula (``spaces.Text``), the observation is a prompt describing
the primitives and the formulas tried so far with their scores, and an episode is
``episode_length`` attempts. An unparsable formula gets reward 0 and its parse error in
``info["error"]``.

Scoring, in order of preference:

* ``inner_fn(spec, expression, seed=...)`` -- a plain function returning an ``InnerResult`` or a
  float (quick stand-ins, tests); results are cached in the env per canonical formula;
* ``evaluator`` -- an :class:`~derl_gym.runtime.evaluator.Evaluator` (runner + store cache);
* otherwise an Evaluator is built on first use from ``spec`` (or ``preset``), ``runner``
  (default: a one-worker ``ProcessRunner``) and a :class:`~derl_gym.runtime.store.ResultStore`
  at ``store_path`` (default: a temporary directory).
"""

from __future__ import annotations

import logging
import string
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from derl_gym.runtime.spec import InnerLoopSpec, InnerResult

logger = logging.getLogger(__name__)

InnerFn = Callable[..., "InnerResult | float"]


def _canonical(text: str, variables: Any) -> str:
    """Return the canonical form of ``text`` (raises ``InvalidExpression`` if it does not parse)."""
    from derl_gym.rewards.expression import MetaReward

    return MetaReward(text, variables).canonical


class _InnerLoopScorer:
    """Scores formulas with the inner loop (``inner_fn`` or an Evaluator); shared by both envs."""

    def __init__(self, spec: InnerLoopSpec | None, *, evaluator: Any = None, inner_fn: InnerFn | None = None,
                 runner: Any = None, store_path: str | Path | None = None, seed: int = 0,
                 variables: Any = 4, canonicalize: bool = True) -> None:
        self.inner_spec = spec
        self.canonicalize = bool(canonicalize)
        self.evaluator = evaluator
        self.inner_fn = inner_fn
        self.runner = runner
        self.store_path = store_path
        self.seed = int(seed)
        self.variables = variables
        self._cache: dict[str, InnerResult] = {}
        self._owned: list[Any] = []
        if evaluator is None and inner_fn is None and spec is None:
            raise ValueError("nothing to score formulas with: pass preset= or spec= (real inner loop), "
                             "evaluator=, or inner_fn=(spec, expression, seed=...) -> InnerResult | float")

    def _build_evaluator(self) -> Any:
        from derl_gym.runtime.evaluator import Evaluator
        from derl_gym.runtime.store import ResultStore

        runner = self.runner
        if runner is None:
            from derl_gym.runtime.runners import ProcessRunner

            runner = ProcessRunner(max_workers=1)
            self._owned.append(runner)
        path = self.store_path
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="derl_meta_env_")) / "results.sqlite"
        store = ResultStore(path)
        self._owned.append(store)
        return Evaluator(self.inner_spec, runner, store)

    def score(self, expression: str) -> tuple[InnerResult, bool]:
        """Return ``(InnerResult, from_cache)`` for a valid formula text."""
        if self.inner_fn is not None:
            if self.canonicalize:
                canonical = _canonical(expression, self.variables)
            else:
                from derl_gym.rewards.expression import MetaReward

                MetaReward(expression, self.variables)  # validates (cheap); no sympy canonical form
                canonical = expression
            if canonical in self._cache:
                return self._cache[canonical], True
            try:
                out = self.inner_fn(self.inner_spec, expression, seed=self.seed)
            except Exception as exc:  # noqa: BLE001  (a failing inner run is a recorded result)
                logger.warning("inner_fn failed on %r: %s", expression, exc)
                out = InnerResult.failure(expression, canonical, f"{type(exc).__name__}: {exc}", seed=self.seed)
            if not isinstance(out, InnerResult):
                out = InnerResult(expression=expression, canonical=canonical, score=float(out), seed=self.seed)
            self._cache[canonical] = out
            return out, False
        if self.evaluator is None:
            self.evaluator = self._build_evaluator()
        result, from_cache = self.evaluator.evaluate([expression], seed=self.seed)[0]
        return result, bool(from_cache)

    def close(self) -> None:
        """Close the runner and store this scorer created (not ones passed in)."""
        for thing in self._owned:
            close = getattr(thing, "close", None)
            if callable(close):
                close()
        self._owned.clear()


def _resolve_spec(preset: str | None, spec: InnerLoopSpec | None) -> InnerLoopSpec | None:
    if spec is not None:
        return spec
    if preset is None:
        return None
    from derl_gym.runtime.presets import get_preset

    return get_preset(preset)


def _resolve_primitives(spec: InnerLoopSpec | None, num_variables: int | None, primitives: Any = None):
    """Return ``(num_variables, PrimitiveSet or None)``."""
    if primitives is None and spec is not None and num_variables is None:
        primitives = spec.primitives.build()
    if primitives is not None:
        from derl_gym.rewards.primitives import as_primitive_set

        primitives = as_primitive_set(primitives)
        if num_variables is not None and int(num_variables) != len(primitives):
            raise ValueError(f"num_variables={num_variables} but the primitive set has {len(primitives)} primitives")
        return len(primitives), primitives
    if num_variables is None:
        raise ValueError("num_variables is unknown: pass num_variables=K, primitives=, spec= or preset=")
    return int(num_variables), None


class MetaRewardEnv(gym.Env):
    """Write a Meta-Reward token by token; the reward is the inner loop's validation success.

    ``preset`` names an inner-loop preset (``derl_gym.runtime.presets``) and ``spec`` overrides it;
    ``num_variables`` defaults to the size of the spec's primitive set. ``max_tokens`` bounds the
    formula length (grammar tokens including END); ``constants`` overrides the grammar's constant
    tokens; ``seed`` is the inner-loop seed used for every evaluation (the same formula always
    gets the same, cacheable score). ``canonicalize=False`` skips the (sympy, ~0.1 s) canonical
    form in the ``inner_fn`` path: results are cached per formula text and ``info["canonical"]`` is
    whatever the inner result says -- for very cheap stand-in inner loops. See the module docstring
    for the scoring options. The inner-loop spec is ``env.inner_spec`` (``env.spec`` is Gymnasium's
    registration record).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, preset: str | None = "alfworld-tiny", spec: InnerLoopSpec | None = None,
                 num_variables: int | None = None, max_tokens: int = 24, evaluator: Any = None,
                 inner_fn: InnerFn | None = None, runner: Any = None, store_path: str | Path | None = None,
                 seed: int = 0, constants: Sequence[str] | None = None, grammar: Any = None,
                 invalid_reward: float = 0.0, canonicalize: bool = True, render_mode: str | None = None) -> None:
        super().__init__()
        if inner_fn is not None or evaluator is not None:
            self.inner_spec = spec if spec is not None else (_resolve_spec(preset, None) if num_variables is None else None)
        else:
            self.inner_spec = _resolve_spec(preset, spec)
        self.num_variables, self.primitives = _resolve_primitives(self.inner_spec, num_variables)
        if grammar is None:
            from derl_gym.agents.meta.base import make_grammar

            grammar = make_grammar(self.num_variables, max_tokens, constants)
        self.grammar = grammar
        self.max_tokens = int(getattr(grammar, "max_tokens", max_tokens))
        self.vocab_size = int(grammar.vocab_size)
        self.end_id = int(grammar.end_id)
        self.pad_id = self.vocab_size
        self.invalid_reward = float(invalid_reward)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.MultiDiscrete(np.full(self.max_tokens, self.vocab_size + 1, dtype=np.int64))
        self.scorer = _InnerLoopScorer(self.inner_spec, evaluator=evaluator, inner_fn=inner_fn, runner=runner,
                                       store_path=store_path, seed=seed, canonicalize=canonicalize,
                                       variables=self.primitives if self.primitives is not None else self.num_variables)
        self._prefix: list[int] = []
        self._done = False

    # ------------------------------------------------------------------ helpers
    def _obs(self) -> np.ndarray:
        obs = np.full(self.max_tokens, self.pad_id, dtype=np.int64)
        tokens = [t for t in self._prefix if t != self.end_id][: self.max_tokens]
        obs[: len(tokens)] = tokens
        return obs

    def action_masks(self) -> np.ndarray:
        """Return the bool mask of grammar-valid next tokens (all False once the episode is over)."""
        if self._done:
            return np.zeros(self.vocab_size, dtype=bool)
        return np.asarray(self.grammar.valid_next(self._prefix), dtype=bool)

    @property
    def formula(self) -> str:
        """The formula text written so far."""
        return self.grammar.decode(self._prefix)

    def _finish(self) -> tuple[float, dict[str, Any]]:
        text = self.grammar.decode(self._prefix)
        result, from_cache = self.scorer.score(text)
        info = {"formula": text, "canonical": result.canonical, "inner_result": result.to_dict(),
                "from_cache": from_cache, "tokens": list(self._prefix)}
        return float(result.score), info

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new formula; returns ``(observation, info)`` with ``info["action_mask"]``."""
        super().reset(seed=seed)
        self._prefix = []
        self._done = False
        return self._obs(), {"action_mask": self.action_masks()}

    def step(self, action):
        """Append token ``action``; returns ``(obs, reward, terminated, truncated, info)``."""
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        token = int(action)
        mask = self.action_masks()
        if not (0 <= token < self.vocab_size) or not mask[token]:
            self._done = True
            allowed = [self.grammar.vocabulary[i] for i in np.flatnonzero(mask)]
            name = self.grammar.vocabulary[token] if 0 <= token < self.vocab_size else token
            info = {"formula": self.grammar.decode(self._prefix), "error":
                    f"token {name!r} is not valid after {self.formula!r}; valid: {allowed} (use action_masks())",
                    "action_mask": np.zeros(self.vocab_size, dtype=bool)}
            return self._obs(), self.invalid_reward, True, False, info
        self._prefix.append(token)
        if token != self.end_id:
            next_mask = self.action_masks()
            forced_end = next_mask[self.end_id] and next_mask.sum() == 1
            if not forced_end:
                return self._obs(), 0.0, False, False, {"action_mask": next_mask}
            self._prefix.append(self.end_id)
        self._done = True
        reward, info = self._finish()
        info["action_mask"] = np.zeros(self.vocab_size, dtype=bool)
        return self._obs(), reward, True, False, info

    def render(self) -> str | None:
        """Return the formula written so far (``render_mode="ansi"``)."""
        if self.render_mode == "ansi":
            return self.formula
        return None

    def close(self) -> None:
        """Close the runner and store the env created."""
        self.scorer.close()
        super().close()


#: Characters a text-action formula may use (variables, primitive names, numbers, operators).
FORMULA_CHARSET = string.ascii_letters + string.digits + " +-*/()._"
#: Characters of the text prompt.
PROMPT_CHARSET = string.printable


class MetaRewardTextEnv(gym.Env):
    """Propose whole formulas as text; each step's reward is the formula's validation success.

    For language-model meta-agents. The observation is a prompt (:func:`build_meta_prompt`) that
    describes the primitives and lists the last ``history`` formulas tried in this episode with
    their scores; an episode is ``episode_length`` attempts. An unparsable formula gets reward
    ``invalid_reward`` and ``info["error"]`` (the parse error); a valid one gets ``info`` like
    :class:`MetaRewardEnv`. Other arguments as for :class:`MetaRewardEnv`.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, preset: str | None = "alfworld-tiny", spec: InnerLoopSpec | None = None,
                 num_variables: int | None = None, primitives: Any = None, episode_length: int = 8,
                 history: int = 10, evaluator: Any = None, inner_fn: InnerFn | None = None, runner: Any = None,
                 store_path: str | Path | None = None, seed: int = 0, task: str = "",
                 max_formula_length: int = 256, max_prompt_length: int = 8192,
                 invalid_reward: float = 0.0, canonicalize: bool = True, render_mode: str | None = None) -> None:
        super().__init__()
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length!r}")
        if inner_fn is not None or evaluator is not None:
            self.inner_spec = spec if spec is not None else (
                _resolve_spec(preset, None) if num_variables is None and primitives is None else None)
        else:
            self.inner_spec = _resolve_spec(preset, spec)
        self.num_variables, self.primitives = _resolve_primitives(self.inner_spec, num_variables, primitives)
        self.episode_length = int(episode_length)
        self.history_size = int(history)
        self.task = task or (self.inner_spec.description if self.inner_spec is not None else "")
        self.invalid_reward = float(invalid_reward)
        self.max_prompt_length = int(max_prompt_length)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Text(max_length=int(max_formula_length), min_length=0, charset=FORMULA_CHARSET)
        self.observation_space = spaces.Text(max_length=self.max_prompt_length, min_length=0, charset=PROMPT_CHARSET)
        self.variables = self.primitives if self.primitives is not None else self.num_variables
        self.scorer = _InnerLoopScorer(self.inner_spec, evaluator=evaluator, inner_fn=inner_fn, runner=runner,
                                       store_path=store_path, seed=seed, variables=self.variables,
                                       canonicalize=canonicalize)
        self._history: list[tuple[str, float | None, str | None]] = []
        self._steps = 0

    def _describe(self) -> str:
        from derl_gym.agents.meta.language import describe_variables

        return self.primitives.describe() if self.primitives is not None else describe_variables(self.num_variables)

    def _obs(self) -> str:
        from derl_gym.agents.meta.language import build_meta_prompt

        text = build_meta_prompt(self._describe(), self._history, max_history=self.history_size, task=self.task,
                                 max_chars=self.max_prompt_length)
        return "".join(ch for ch in text if ch in PROMPT_CHARSET)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new episode with an empty history; returns ``(prompt, info)``."""
        super().reset(seed=seed)
        self._history = []
        self._steps = 0
        return self._obs(), {}

    def step(self, action: str):
        """Score formula ``action``; returns ``(prompt, reward, terminated, truncated, info)``."""
        from derl_gym.rewards.expression import InvalidExpression, MetaReward

        text = str(action)
        self._steps += 1
        info: dict[str, Any] = {"formula": text}
        try:
            MetaReward(text, self.variables)
        except InvalidExpression as exc:
            reward = self.invalid_reward
            info["error"] = str(exc)
            self._history.append((text, None, str(exc).splitlines()[0][:80] if str(exc) else "invalid"))
        else:
            result, from_cache = self.scorer.score(text)
            reward = float(result.score)
            info.update(canonical=result.canonical, inner_result=result.to_dict(), from_cache=from_cache)
            self._history.append((text, reward, None))
        terminated = self._steps >= self.episode_length
        return self._obs(), reward, terminated, False, info

    def render(self) -> str | None:
        """Return the current prompt (``render_mode="ansi"``)."""
        return self._obs() if self.render_mode == "ansi" else None

    def close(self) -> None:
        """Close the runner and store the env created."""
        self.scorer.close()
        super().close()
