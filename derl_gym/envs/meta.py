"""The meta level as Gymnasium environments: writing a Meta-Reward is the agent's task.

Both envs are fed a **scorer** and own nothing else (no runner, no store, no cache, no temporary
folder); they import nothing from :mod:`derl_gym.runtime`, so task envs stay below the runtime.
A scorer is either

* an object with ``evaluate(formulas, seed=...) -> [(result, from_cache), ...]`` -- the
  :class:`~derl_gym.runtime.evaluator.Evaluator` (runner + store cache: equivalent formulas are
  trained once); or
* a callable ``scorer(formula) -> result | float | (result or float, from_cache)``, e.g.
  ``lambda f: standin_inner(spec, f)``.

A *result* is anything with ``score`` (and optionally ``canonical``, ``status`` and ``to_dict()``),
such as an :class:`~derl_gym.runtime.spec.InnerResult`; a plain float is the score. A scorer that
raises gives ``invalid_reward`` and ``info["error"]`` (the episode goes on).

:class:`MetaRewardEnv` (``derl_gym/MetaReward-v0``): one episode writes one formula token by token.
The action is a grammar token (``Discrete(vocab_size)``), :meth:`MetaRewardEnv.action_masks` gives
the grammar's valid next tokens (sb3-contrib ``MaskablePPO`` reads it), and the observation is
the token ids written so far, padded to ``max_tokens`` with ``PAD = vocab_size``. Every
intermediate reward is 0; when END is chosen (or is the only token left) the formula is scored
and the reward is its score. ``info`` then has ``"formula"``, ``"canonical"``, ``"inner_result"``
(a dict) and ``"from_cache"``. A masked-out action ends the episode with ``invalid_reward``.

:class:`MetaRewardTextEnv` (``derl_gym/MetaRewardText-v0``) is for language-model meta-agents:
each step's action is a whole formula (``spaces.Text``; a ``<formula>...</formula>`` answer is
unwrapped), the observation is the meta-prompt (:func:`~derl_gym.agents.meta.language.build_meta_prompt`)
with the primitives and the formulas tried so far in the episode with their scores, and an
episode is ``episode_length`` attempts. DERL's language-model policy acts in it directly:
``policy.sample(1, rng, prompt=observation)`` writes a formula under the grammar constraint.
"""

from __future__ import annotations

import logging
import string
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

logger = logging.getLogger(__name__)

Scorer = Any  # an Evaluator-like object or Callable[[str], result | float | tuple[result | float, bool]]

_NO_SCORER = ("pass scorer=: an Evaluator (derl_gym.runtime.Evaluator(spec, runner, store), which caches "
              "equivalent formulas) or a function formula -> score, e.g. lambda f: standin_inner(spec, f)")


def _result_dict(result: Any, formula: str) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    return {"expression": formula, "canonical": getattr(result, "canonical", None),
            "score": float(getattr(result, "score", result)), "status": getattr(result, "status", "ok")}


def score_with(scorer: Scorer, formula: str, seed: int = 0) -> tuple[float | None, dict[str, Any]]:
    """Score one formula with a scorer (an ``evaluate`` object or a callable; see the module docstring).

    Args:
        scorer: an object with ``evaluate(formulas, seed=...)`` or a callable ``scorer(formula)``.
        formula: the Meta-Reward formula to score.
        seed: passed to ``scorer.evaluate``.

    Returns:
        ``(score, info)``: ``info`` has ``canonical``, ``inner_result`` (a dict) and ``from_cache``; when
        the scorer raised, the score is None and ``info`` has ``error`` instead (nothing is raised).

    Example:
        >>> from derl_gym.envs.meta import score_with
        >>> score, info = score_with(lambda formula: 0.75, "g1 + g2")
        >>> score, info["inner_result"]["score"], info["from_cache"]
        (0.75, 0.75, False)
        >>> def crashing(formula):
        ...     raise RuntimeError("inner run crashed")
        >>> score_with(crashing, "g1")
        (None, {'error': 'RuntimeError: inner run crashed', 'from_cache': False})
    """
    try:
        if hasattr(scorer, "evaluate"):
            result, from_cache = scorer.evaluate([formula], seed=seed)[0]
        else:
            out = scorer(formula)
            result, from_cache = out if isinstance(out, tuple) else (out, False)
    except Exception as exc:  # noqa: BLE001  (a failing inner run is a result, not a crash)
        logger.warning("scorer failed on %r: %s", formula, exc)
        return None, {"error": f"{type(exc).__name__}: {exc}", "from_cache": False}
    score = float(getattr(result, "score", result))
    info = {"canonical": getattr(result, "canonical", None), "inner_result": _result_dict(result, formula),
            "from_cache": bool(from_cache)}
    return (score if np.isfinite(score) else 0.0), info


def _resolve_variables(scorer: Scorer, num_variables: int | None, primitives: Any) -> tuple[int, Any]:
    """Return ``(K, PrimitiveSet or None)`` from the arguments or the scorer's spec."""
    if primitives is None and num_variables is None:
        spec = getattr(scorer, "spec", None)
        if spec is not None and hasattr(spec, "primitives"):
            primitives = spec.primitives.build()
        elif getattr(scorer, "num_variables", None) is not None:
            num_variables = int(scorer.num_variables)
    if primitives is not None:
        from derl_gym.rewards.primitives import as_primitive_set

        primitives = as_primitive_set(primitives)
        if num_variables is not None and int(num_variables) != len(primitives):
            raise ValueError(f"num_variables={num_variables} but the primitive set has {len(primitives)} primitives")
        return len(primitives), primitives
    if num_variables is None:
        raise ValueError("num_variables is unknown: pass num_variables=K or primitives=, or a scorer with a spec "
                         "(an Evaluator)")
    return int(num_variables), None


def _check_scorer(scorer: Scorer) -> None:
    if scorer is None or not (hasattr(scorer, "evaluate") or callable(scorer)):
        raise ValueError(f"scorer={scorer!r} cannot score formulas; {_NO_SCORER}")


class MetaRewardEnv(gym.Env):
    """Write a Meta-Reward token by token; the reward is the scorer's score of the finished formula.

    Args:
        scorer: scores formulas (see the module docstring).
        num_variables, primitives: give K (default: the scorer's spec).
        max_tokens: bounds the formula (grammar tokens including END).
        seed: passed to an Evaluator's ``evaluate`` (the inner-loop seed).
        constants, grammar: override the grammar.
        invalid_reward: the reward of a masked-out action or a scorer that raises.
        render_mode: ``None`` or ``"ansi"``.

    Example:
        >>> import gymnasium as gym
        >>> import derl_gym
        >>> score = lambda formula: 1.0 if "g1" in formula else 0.0      # any formula -> score function
        >>> env = gym.make("derl_gym/MetaReward-v0", scorer=score, num_variables=4, max_tokens=8)
        >>> obs, info = env.reset(seed=0)
        >>> env.action_space, obs.tolist()                                # padded token ids (PAD = 20)
        (Discrete(20), [20, 20, 20, 20, 20, 20, 20, 20])
        >>> for token in env.unwrapped.grammar.encode("g1 + 0.5*g2"):
        ...     obs, reward, terminated, truncated, info = env.step(token)
        >>> reward, terminated, info["formula"]
        (1.0, True, 'g1 + 0.5*g2')
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, scorer: Scorer = None, num_variables: int | None = None, primitives: Any = None,
                 max_tokens: int = 24, seed: int = 0, constants: Sequence[str] | None = None, grammar: Any = None,
                 invalid_reward: float = 0.0, render_mode: str | None = None) -> None:
        super().__init__()
        _check_scorer(scorer)
        self.scorer = scorer
        self.num_variables, self.primitives = _resolve_variables(scorer, num_variables, primitives)
        if grammar is None:
            from derl_gym.agents.meta.base import make_grammar

            grammar = make_grammar(self.num_variables, max_tokens, constants)
        self.grammar = grammar
        self.max_tokens = int(getattr(grammar, "max_tokens", max_tokens))
        self.vocab_size = int(grammar.vocab_size)
        self.end_id = int(grammar.end_id)
        self.pad_id = self.vocab_size
        self.seed_value = int(seed)
        self.invalid_reward = float(invalid_reward)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.MultiDiscrete(np.full(self.max_tokens, self.vocab_size + 1, dtype=np.int64))
        self._prefix: list[int] = []
        self._done = False

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
            info = {"formula": self.formula, "error":
                    f"token {name!r} is not valid after {self.formula!r}; valid: {allowed} (use action_masks())",
                    "action_mask": np.zeros(self.vocab_size, dtype=bool)}
            return self._obs(), self.invalid_reward, True, False, info
        self._prefix.append(token)
        if token != self.end_id:
            next_mask = self.action_masks()
            if not (next_mask[self.end_id] and next_mask.sum() == 1):
                return self._obs(), 0.0, False, False, {"action_mask": next_mask}
            self._prefix.append(self.end_id)  # END is the only choice left: finish without the extra step
        self._done = True
        text = self.grammar.decode(self._prefix)
        score, info = score_with(self.scorer, text, self.seed_value)
        info.update(formula=text, tokens=list(self._prefix), action_mask=np.zeros(self.vocab_size, dtype=bool))
        return self._obs(), (self.invalid_reward if score is None else score), True, False, info

    def render(self) -> str | None:
        """Return the formula written so far (``render_mode="ansi"``)."""
        return self.formula if self.render_mode == "ansi" else None


#: Characters a text-action formula may use (variables, primitive names, numbers, operators, tags).
FORMULA_CHARSET = string.ascii_letters + string.digits + " +-*/()._<>"
#: Characters of the text prompt.
PROMPT_CHARSET = string.printable


class MetaRewardTextEnv(gym.Env):
    """Propose whole formulas as text; each step's reward is the formula's score.

    For language-model meta-agents. The observation is the meta-prompt that describes the task and
    the primitives, shows ``examples`` and lists the last ``history`` formulas tried in this
    episode with their scores; an episode is ``episode_length`` attempts. An unparsable formula
    gets ``invalid_reward`` and ``info["error"]`` (the parse error, also shown in the next prompt).

    Args:
        scorer, num_variables, primitives, seed, invalid_reward, render_mode: as for :class:`MetaRewardEnv`.
        episode_length: attempts per episode.
        history: how many of the episode's formulas the prompt lists.
        task: the task description (default: the scorer's spec description).
        examples: example formulas shown in the prompt.
        max_formula_length, max_prompt_length: the Text spaces' lengths.

    Example:
        >>> import gymnasium as gym
        >>> import derl_gym
        >>> score = lambda formula: 1.0 if "g1" in formula else 0.0
        >>> env = gym.make("derl_gym/MetaRewardText-v0", scorer=score, num_variables=4, episode_length=2)
        >>> prompt, info = env.reset(seed=0)
        >>> prompt.splitlines()[0]
        'You design the reward function of a reinforcement-learning agent.'
        >>> env.step("<formula>g1 + g2</formula>")[1:3]                 # (reward, terminated)
        (1.0, False)
        >>> _, reward, terminated, _, info = env.step("g1 ** 2")
        >>> reward, terminated, info["error"]
        (0.0, True, "'**' at column 4 is not allowed: only the binary operators + - * / are allowed (in 'g1 ** 2')")
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, scorer: Scorer = None, num_variables: int | None = None, primitives: Any = None,
                 episode_length: int = 8, history: int = 10, seed: int = 0, task: str | None = None,
                 examples: Sequence[str] = (), max_formula_length: int = 256, max_prompt_length: int = 8192,
                 invalid_reward: float = 0.0, render_mode: str | None = None) -> None:
        super().__init__()
        _check_scorer(scorer)
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length!r}")
        self.scorer = scorer
        self.num_variables, self.primitives = _resolve_variables(scorer, num_variables, primitives)
        self.variables = self.primitives if self.primitives is not None else self.num_variables
        self.episode_length = int(episode_length)
        self.history_size = int(history)
        spec = getattr(scorer, "spec", None)
        self.task = task if task is not None else str(getattr(spec, "description", "") or "")
        self.examples = list(examples)
        self.seed_value = int(seed)
        self.invalid_reward = float(invalid_reward)
        self.max_prompt_length = int(max_prompt_length)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Text(max_length=int(max_formula_length), min_length=0, charset=FORMULA_CHARSET)
        self.observation_space = spaces.Text(max_length=self.max_prompt_length, min_length=0, charset=PROMPT_CHARSET)
        self._history: list[tuple[str, float | None, str | None]] = []
        self._steps = 0

    def describe_primitives(self) -> str:
        """Return the primitives' description used in the prompt."""
        from derl_gym.agents.meta.language import describe_variables

        return self.primitives.describe() if self.primitives is not None else describe_variables(self.num_variables)

    def _obs(self) -> str:
        from derl_gym.agents.meta.language import build_meta_prompt

        text = build_meta_prompt(self.describe_primitives(), self._history, max_history=self.history_size,
                                 task=self.task, examples=self.examples, answer="plain",
                                 max_chars=self.max_prompt_length)
        return "".join(ch for ch in text if ch in PROMPT_CHARSET)

    @property
    def history(self) -> list[tuple[str, float | None, str | None]]:
        """The episode's ``(formula, score or None, error or None)`` so far."""
        return list(self._history)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new episode with an empty history; returns ``(prompt, info)``."""
        super().reset(seed=seed)
        self._history = []
        self._steps = 0
        return self._obs(), {}

    def step(self, action: str):
        """Score formula ``action``; returns ``(prompt, reward, terminated, truncated, info)``."""
        from derl_gym.agents.meta.language import extract_formula
        from derl_gym.rewards.expression import InvalidExpression, MetaReward

        text = str(action)
        if "<formula>" in text.lower():
            text = extract_formula(text)
        self._steps += 1
        info: dict[str, Any] = {"formula": text}
        try:
            MetaReward(text, self.variables)
        except InvalidExpression as exc:
            reward, info["error"] = self.invalid_reward, str(exc)
            self._history.append((text, None, str(exc).splitlines()[0][:80] if str(exc) else "invalid"))
        else:
            score, scored = score_with(self.scorer, text, self.seed_value)
            info.update(scored)
            reward = self.invalid_reward if score is None else score
            self._history.append((text, None if score is None else reward, scored.get("error")))
        terminated = self._steps >= self.episode_length
        return self._obs(), reward, terminated, False, info

    def render(self) -> str | None:
        """Return the current prompt (``render_mode="ansi"``)."""
        return self._obs() if self.render_mode == "ansi" else None
