"""Build, train and evaluate Stable-Baselines3 agents on text worlds wrapped by TextActionWrapper.

- :data:`ALGORITHMS` / :func:`get_algorithm`: ``"maskable_ppo"`` (sb3-contrib, masked, default),
  ``"ppo"`` and ``"a2c"`` (SB3, unmasked: a masked-out index reaches the env as the wrapper's
  invalid command). All use :class:`~derl_gym.agents.inner.policy.ActionScoringPolicy` unless
  ``policy`` is given.
- :func:`make_vec_env`: ``n`` env factories -> ``DummyVecEnv`` (or ``SubprocVecEnv``).
- :func:`build_model`: an algorithm instance from an :class:`~derl_gym.runtime.spec.AgentSpec`.
- :class:`SuccessCurveCallback`: records ``(env_steps, mean task success)`` after each rollout.
- :func:`evaluate_policy` / :func:`evaluate_random`: success rate with the task reward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from derl_gym.agents.inner.policy import ActionScoringPolicy
from derl_gym.rewards.primitives import play_episode

logger = logging.getLogger(__name__)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGO_KWARGS",
    "get_algorithm",
    "make_vec_env",
    "build_model",
    "SuccessCurveCallback",
    "EvalResult",
    "episode_success",
    "evaluate_policy",
    "evaluate_random",
]


def _maskable_ppo():
    from sb3_contrib import MaskablePPO

    return MaskablePPO


def _ppo():
    from stable_baselines3 import PPO

    return PPO


def _a2c():
    from stable_baselines3 import A2C

    return A2C


#: algorithm name -> zero-argument loader of the algorithm class
ALGORITHMS: dict[str, Callable[[], type[BaseAlgorithm]]] = {
    "maskable_ppo": _maskable_ppo,
    "ppo": _ppo,
    "a2c": _a2c,
}

#: defaults merged under AgentSpec.algo_kwargs (small rollouts: text-world episodes are short)
DEFAULT_ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "maskable_ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3,
                     "gamma": 0.95, "gae_lambda": 0.95, "ent_coef": 0.01},
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3,
            "gamma": 0.95, "gae_lambda": 0.95, "ent_coef": 0.01},
    "a2c": {"n_steps": 16, "learning_rate": 7e-4, "gamma": 0.95, "ent_coef": 0.01},
}

#: keys of ``AgentSpec.algo_kwargs`` consumed by the trainer, not passed to the algorithm
TRAINER_KEYS = ("vec_env",)


def _example_env() -> gym.Env:
    """Return the one-step text world of this module's examples, wrapped by TextActionWrapper.

    Two candidate commands: ``"open door"`` wins (task reward 1), ``"open trapdoor"`` loses; either ends
    the episode. A uniform-random policy wins half the time, a trained one always.
    """
    from gymnasium import spaces

    from derl_gym.wrappers import TextActionWrapper

    class Doors(gym.Env):
        observation_space = action_space = spaces.Text(64)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
            super().reset(seed=seed)
            return "A door and a trapdoor.", {"admissible_commands": ["open door", "open trapdoor"]}

        def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
            won = action == "open door"
            return ("You are out." if won else "You fell."), float(won), True, False, {"won": won,
                                                                                        "admissible_commands": []}

    return TextActionWrapper(Doors(), max_actions=4, dim=32)


def _example_model(n_steps: int, seed: int) -> BaseAlgorithm:
    """Return an untrained MaskablePPO (batch 32, learning rate 3e-3, ``n_steps`` per env) on two
    :func:`_example_env` worlds, for this module's examples that train one."""
    from derl_gym.runtime.spec import AgentSpec

    agent = AgentSpec(algorithm="maskable_ppo", algo_kwargs={"n_steps": n_steps, "batch_size": 32, "learning_rate": 3e-3})
    return build_model(agent, make_vec_env([_example_env, _example_env]), seed=seed)


def get_algorithm(name: str) -> type[BaseAlgorithm]:
    """Return the algorithm class registered as ``name``.

    Args:
        name: a key of :data:`ALGORITHMS` (``"maskable_ppo"``, ``"ppo"``, ``"a2c"``).

    Returns:
        The class (imported on first use).

    Raises:
        ValueError: for an unknown name (the message lists the known ones).

    Example:
        >>> get_algorithm("maskable_ppo").__name__, get_algorithm("a2c").__name__
        ('MaskablePPO', 'A2C')
        >>> get_algorithm("dqn")
        Traceback (most recent call last):
        ...
        ValueError: unknown algorithm 'dqn'; choose one of ['a2c', 'maskable_ppo', 'ppo']
    """
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None


def is_maskable(model: BaseAlgorithm) -> bool:
    """Return True when ``model.predict`` accepts ``action_masks`` (an sb3-contrib ``MaskablePPO``).

    Example:
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> env = make_vec_env([_example_env])
        >>> [is_maskable(build_model(AgentSpec(algorithm=name), env)) for name in ("maskable_ppo", "ppo")]
        [True, False]
    """
    from sb3_contrib import MaskablePPO

    return isinstance(model, MaskablePPO)


def make_vec_env(env_fns: Sequence[Callable[[], gym.Env]], kind: str = "dummy") -> VecEnv:
    """Return the vectorised env of ``env_fns``.

    Args:
        env_fns: zero-argument env factories, one per parallel env.
        kind: ``"dummy"`` (all envs in this process) or ``"subproc"`` (one spawned process per env; a
            single env always runs in this process).

    Returns:
        A ``DummyVecEnv`` or a ``SubprocVecEnv``.

    Raises:
        ValueError: for another ``kind``.

    Example:
        >>> vec = make_vec_env([_example_env, _example_env])
        >>> _ = vec.reset()
        >>> type(vec).__name__, vec.num_envs, vec.env_method("action_masks")[0].tolist()
        ('DummyVecEnv', 2, [True, True, False, False])
        >>> make_vec_env([_example_env, _example_env], kind="threads")
        Traceback (most recent call last):
        ...
        ValueError: vec_env must be 'dummy' or 'subproc', got 'threads'
    """
    if kind == "dummy" or len(env_fns) == 1:
        return DummyVecEnv(list(env_fns))
    if kind == "subproc":
        return SubprocVecEnv(list(env_fns), start_method="spawn")
    raise ValueError(f"vec_env must be 'dummy' or 'subproc', got {kind!r}")


def build_model(agent: Any, env: VecEnv, seed: int | None = None) -> BaseAlgorithm:
    """Return an untrained algorithm for ``agent`` (an AgentSpec) on ``env``.

    ``agent.algo_kwargs`` override :data:`DEFAULT_ALGO_KWARGS`; ``agent.policy_kwargs`` go to the
    policy (``policy`` may be given inside ``policy_kwargs`` to replace ActionScoringPolicy).
    ``n_steps`` is per env; ``batch_size`` is clipped to ``n_steps * n_envs``.

    Args:
        agent: an :class:`~derl_gym.runtime.spec.AgentSpec` (``algorithm``, ``algo_kwargs``,
            ``policy_kwargs``, ``device``).
        env: the vectorised training env (see :func:`make_vec_env`).
        seed: the algorithm's seed (None: unseeded).

    Returns:
        The untrained algorithm instance (``verbose=0``).

    Raises:
        ValueError: for an unknown ``agent.algorithm``.

    Example:
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> agent = AgentSpec(algorithm="maskable_ppo", algo_kwargs={"n_steps": 16})
        >>> model = build_model(agent, make_vec_env([_example_env, _example_env]), seed=0)
        >>> type(model).__name__, type(model.policy).__name__, model.n_steps, model.batch_size   # 64 -> 16 * 2
        ('MaskablePPO', 'ActionScoringPolicy', 16, 32)
    """
    algo_cls = get_algorithm(agent.algorithm)
    kwargs = {**DEFAULT_ALGO_KWARGS.get(agent.algorithm, {}), **dict(agent.algo_kwargs)}
    for key in TRAINER_KEYS:
        kwargs.pop(key, None)
    if "batch_size" in kwargs and "n_steps" in kwargs:
        kwargs["batch_size"] = int(min(kwargs["batch_size"], kwargs["n_steps"] * env.num_envs))
    policy_kwargs = dict(agent.policy_kwargs)
    policy = policy_kwargs.pop("policy", ActionScoringPolicy)
    return algo_cls(policy, env, policy_kwargs=policy_kwargs, seed=seed, device=agent.device, verbose=0, **kwargs)


def episode_success(info: dict[str, Any], reward: float | None = None) -> bool:
    """Return True when a finished episode was won.

    Args:
        info: the last step's ``info``: ``won``, else ``task_reward`` (the env's own reward, before a
            Meta-Reward replaced it) decides.
        reward: the last reward, used when ``info`` has neither.

    Returns:
        True when ``info["won"]`` is true or the task reward is at least 1.

    Example:
        >>> episode_success({"won": True}), episode_success({"task_reward": 1.0}, reward=0.2)
        (True, True)
        >>> episode_success({"task_reward": 0.0}, reward=1.0), episode_success({}, reward=1.0), episode_success({})
        (False, True, False)
    """
    if bool(info.get("won", False)):
        return True
    task_reward = info.get("task_reward", reward)
    return task_reward is not None and float(task_reward) >= 1.0


class SuccessCurveCallback(BaseCallback):
    """Record ``(env_steps, mean task success of the episodes finished in that rollout)`` per rollout.

    ``curve`` holds the points (rollouts that finished no episode add none); ``successes`` every
    finished episode's 0/1 outcome in order; :attr:`primitive_means` the mean of the finished episodes'
    ``info["primitive_values"]`` (what :class:`~derl_gym.wrappers.MetaRewardWrapper` adds at the terminal step).

    Example:
        >>> model = _example_model(n_steps=32, seed=0)
        >>> curve = SuccessCurveCallback()
        >>> _ = model.learn(512, callback=curve)
        >>> [steps for steps, _ in curve.curve]         # one point per rollout of 32 steps x 2 envs
        [64, 128, 192, 256, 320, 384, 448, 512]
        >>> len(curve.successes), curve.curve[0][1] < 0.8 < curve.curve[-1][1]   # it learns to open the door
        (512, True)
        >>> curve.primitive_means                       # no MetaRewardWrapper here: no primitive values
        []
    """

    def __init__(self) -> None:
        super().__init__(verbose=0)
        self.curve: list[tuple[int, float]] = []
        self.successes: list[int] = []
        self._pending: list[int] = []
        self._primitive_sum: np.ndarray | None = None
        self._primitive_count = 0

    @property
    def primitive_means(self) -> list[float]:
        """The mean primitive values (g1..gK) over the finished training episodes; empty when none recorded any."""
        if self._primitive_sum is None or not self._primitive_count:
            return []
        return [float(v) for v in self._primitive_sum / self._primitive_count]

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        infos = self.locals.get("infos") or []
        if dones is None:
            return True
        for done, info in zip(dones, infos):
            if done:
                ok = int(episode_success(info))
                self._pending.append(ok)
                self.successes.append(ok)
                values = info.get("primitive_values")
                if values is not None:  # once per episode: the sum costs nothing next to the rollout
                    values = np.asarray(values, dtype=np.float64)
                    if self._primitive_sum is None:
                        self._primitive_sum = np.zeros_like(values)
                    if values.shape == self._primitive_sum.shape:
                        self._primitive_sum += values
                        self._primitive_count += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._pending:
            self.curve.append((int(self.num_timesteps), float(np.mean(self._pending))))
            self._pending = []


@dataclass
class EvalResult:
    """Evaluation outcome: ``success_rate`` in [0, 1], per-episode ``successes`` (0/1), task ``returns`` and
    ``lengths``, and ``env_steps`` (their sum).

    Example:
        >>> result = EvalResult(0.5, successes=[1, 0], returns=[1.0, 0.0], lengths=[3, 20], env_steps=23)
        >>> result.success_rate == sum(result.successes) / len(result.successes), EvalResult(0.0).lengths
        (True, [])
    """

    success_rate: float
    successes: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    env_steps: int = 0


def _run_episodes(env: gym.Env, choose: Callable[[Any, np.ndarray], int], episodes: int, seed: int | None,
                  max_steps: int) -> EvalResult:
    """Play ``episodes`` episodes with ``choose(observation, action_masks)`` (the first reset seeded)
    through :func:`~derl_gym.rewards.primitives.play_episode`; returns their :class:`EvalResult`."""
    action_masks = env.get_wrapper_attr("action_masks")
    successes, returns, lengths = [], [], []
    for episode in range(episodes):
        trajectory = play_episode(env, lambda obs, info, t: choose(obs, np.asarray(action_masks(), dtype=bool)),
                                  max_steps=max(1, int(max_steps)), seed=seed if episode == 0 else None)
        last = trajectory.steps[-1]
        successes.append(int(episode_success(last.info, last.reward)))
        returns.append(trajectory.task_return)
        lengths.append(len(trajectory))
    rate = float(np.mean(successes)) if successes else 0.0
    return EvalResult(rate, successes, returns, lengths, int(sum(lengths)))


def evaluate_policy(model: BaseAlgorithm, env: gym.Env, episodes: int, seed: int | None = None,
                    deterministic: bool = True, max_steps: int = 10_000) -> EvalResult:
    """Run ``episodes`` episodes of ``model`` on ``env`` (a TextActionWrapper env, task reward).

    The first reset uses ``seed``; actions are masked (MaskablePPO) and deterministic by default.
    ``max_steps`` caps an episode in case the env never truncates.

    Args:
        model: a trained algorithm (see :func:`build_model`).
        env: one TextActionWrapper env (not vectorised).
        episodes: how many episodes to play.
        seed: the seed of the first reset.
        deterministic: pick the most likely action (default) instead of sampling.
        max_steps: the longest an episode may run.

    Returns:
        An :class:`EvalResult` over the episodes.

    Example:
        >>> model = _example_model(n_steps=16, seed=1)
        >>> _ = model.learn(256)
        >>> result = evaluate_policy(model, _example_env(), episodes=10, seed=0)
        >>> result.success_rate, result.lengths == [1] * 10, result.env_steps   # it always opens the door
        (1.0, True, 10)
    """
    maskable = is_maskable(model)

    def choose(obs: Any, masks: np.ndarray) -> int:
        if maskable:
            action, _ = model.predict(obs, deterministic=deterministic, action_masks=masks)
        else:
            action, _ = model.predict(obs, deterministic=deterministic)
        return int(np.asarray(action).item())

    return _run_episodes(env, choose, episodes, seed, max_steps)


def evaluate_random(env: gym.Env, episodes: int, seed: int | None = None, max_steps: int = 10_000) -> EvalResult:
    """Run ``episodes`` episodes of the masked uniform-random policy (the baseline a trained agent must beat).

    Args:
        env: one TextActionWrapper env.
        episodes: how many episodes to play.
        seed: seeds both the first reset and the policy's choices.
        max_steps: the longest an episode may run.

    Returns:
        An :class:`EvalResult` over the episodes.

    Example:
        >>> result = evaluate_random(_example_env(), episodes=40, seed=0)
        >>> 0.2 < result.success_rate < 0.8, len(result.successes)   # one door of two: about half
        (True, 40)
        >>> evaluate_random(_example_env(), episodes=40, seed=0) == result   # the seed fixes the choices
        True
    """
    rng = np.random.default_rng(seed)

    def choose(obs: Any, masks: np.ndarray) -> int:
        return int(rng.choice(np.flatnonzero(masks)))

    return _run_episodes(env, choose, episodes, seed, max_steps)
