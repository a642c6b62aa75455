"""A DRRN-style action-scoring policy for sb3-contrib's ``MaskablePPO``.

The observation (from :class:`~derl_gym.wrappers.text_actions.TextActionWrapper`) holds encodings
of the state texts and ``[max_actions, dim]`` candidate-command encodings. Instead of a fixed
softmax layer over action *indices* (meaningless when every game lists different commands), the
policy scores every candidate from the interaction of a state embedding and that candidate's
embedding::

    s   = MLP_state(concat(state text vectors))            [hidden]
    c_i = MLP_action(candidate_i)                          [hidden]
    logit_i = MLP_score(s * c_i)   (scoring="product", default)
            | (s . c_i) / sqrt(hidden)   (scoring="dot")
            | MLP_score(concat(s, c_i))   (scoring="concat")
            | MLP_score(c_i)   (scoring="match": the state enters only through the features below)
    value = MLP_value(concat(state text vectors))

With ``similarity=True`` (default) the score MLP also sees, per candidate, the raw dot products
between the candidate's encoding and each state text's encoding (task, observation, history):
name-agnostic matching features ("the command mentions the object the task names", "the command
repeats a recent one") that let the policy generalise to games with unseen object names.

so the same weights apply to any game. Masked-out candidates are removed by sb3-contrib's masked
distribution. The policy is a :class:`MaskableActorCriticPolicy` subclass: ``model.save`` /
``MaskablePPO.load`` work as for the built-in policies.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from derl_gym.utils.fastpath import fast_path_enabled

__all__ = ["TextActionExtractor", "ActionScoringHead", "ActionScoringPolicy", "SCORINGS"]

SCORINGS = ("product", "dot", "concat", "match")


def _is_candidate_feature(key: str) -> bool:
    """True for TextActionWrapper's per-candidate feature keys (``action_counts``, ``overlap_<field>``)."""
    return key == "action_counts" or key.startswith("overlap_")


def _split_keys(observation_space: spaces.Dict) -> tuple[list[str], list[str]]:
    """Return (state-text keys with shape [dim], per-candidate feature keys with shape [N]).

    Keys are told apart by name, not by shape, so ``dim == max_actions`` is not ambiguous.
    """
    actions = observation_space.spaces["actions"]
    n, dim = int(actions.shape[0]), int(actions.shape[1])
    state, per_candidate = [], []
    for key, space in observation_space.spaces.items():
        if key in ("actions", "action_mask"):
            continue
        shape = tuple(space.shape or ())
        expected = (n,) if _is_candidate_feature(key) else (dim,)
        if shape != expected:
            raise ValueError(f"observation key {key!r} has shape {shape}; expected {expected} "
                             f"({'a per-candidate feature' if expected == (n,) else 'a text encoding'})")
        (per_candidate if expected == (n,) and _is_candidate_feature(key) else state).append(key)
    return state, per_candidate


class TextActionExtractor(BaseFeaturesExtractor):
    """Flatten the wrapper's Dict observation into ``[state vectors | candidate vectors | candidate features]``.

    Its forward returns a tensor ``[batch, S*dim + N*dim + F*N]`` (S state fields, N = max_actions, F
    per-candidate features such as ``action_counts``); it has no parameters: learning happens in
    :class:`ActionScoringHead`. State-text keys and per-candidate feature keys are told apart by name
    (``action_counts`` and ``overlap_<field>`` are per-candidate), so ``dim == max_actions`` is not ambiguous.

    Args:
        observation_space: the Dict observation space of
            :class:`~derl_gym.wrappers.text_actions.TextActionWrapper` (keys incl. ``"actions"``).

    Raises:
        ValueError: when the space is not a Dict with an ``"actions"`` key, or a key has the wrong shape.

    Example:
        On the two-door world of :mod:`derl_gym.agents.inner.trainer`'s examples (3 state texts,
        4 candidate rows of dim 32, 4 per-candidate features):

        >>> import torch
        >>> from gymnasium import spaces
        >>> from derl_gym.agents.inner.policy import TextActionExtractor
        >>> from derl_gym.agents.inner.trainer import _example_env
        >>> env = _example_env()
        >>> extractor = TextActionExtractor(env.observation_space)
        >>> extractor.state_keys, extractor.features_dim    # 3*32 + 4*32 + 4*4
        (['history', 'observation', 'task'], 240)
        >>> obs, _ = env.reset(seed=0)
        >>> features = extractor({key: torch.as_tensor(value)[None] for key, value in obs.items()})
        >>> features.shape, torch.equal(features[0, 96:224], torch.as_tensor(obs["actions"]).flatten())
        (torch.Size([1, 240]), True)
        >>> TextActionExtractor(spaces.Dict({"observation": spaces.Box(0, 1, (32,))}))
        Traceback (most recent call last):
            ...
        ValueError: ActionScoringPolicy needs the Dict observation of TextActionWrapper (keys incl. 'actions'), got ...
    """

    def __init__(self, observation_space: spaces.Dict) -> None:
        if not isinstance(observation_space, spaces.Dict) or "actions" not in observation_space.spaces:
            raise ValueError("ActionScoringPolicy needs the Dict observation of TextActionWrapper "
                             f"(keys incl. 'actions'), got {observation_space}")
        actions = observation_space.spaces["actions"]
        self.max_actions, self.dim = int(actions.shape[0]), int(actions.shape[1])
        self.state_keys, self.candidate_keys = _split_keys(observation_space)
        features = (len(self.state_keys) + self.max_actions) * self.dim + len(self.candidate_keys) * self.max_actions
        super().__init__(observation_space, features_dim=features)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        """Return ``[batch, S*dim + N*dim + F*N]``."""
        parts = [observations[k].float() for k in self.state_keys]
        parts.append(observations["actions"].float().flatten(1))
        parts.extend(observations[k].float() for k in self.candidate_keys)
        return th.cat(parts, dim=1)


def _mlp(sizes: Sequence[int], activation: type[nn.Module], last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class ActionScoringHead(nn.Module):
    """Map flattened features to (candidate logits ``[batch, N]``, value latent ``[batch, hidden]``).

    Plays the role of SB3's ``mlp_extractor``: ``latent_dim_pi = N`` (the logits themselves, the
    policy's ``action_net`` is the identity) and ``latent_dim_vf = hidden``. The features are those of
    :class:`TextActionExtractor`: ``[state vectors | candidate vectors | candidate features]``.

    Args:
        num_state_fields: S, the number of state texts (task, observation, history ...).
        max_actions: N, the number of candidate rows.
        dim: the encoding width of each text.
        hidden_dim: width of the state, action, value and score MLPs.
        layers: depth of the state/action/value trunks (at least 1).
        scoring: how a state and a candidate embedding make a logit, one of :data:`SCORINGS`.
        activation_fn: the MLPs' activation class.
        similarity: also feed the raw candidate . state-text dot products to the score.
        num_candidate_features: F, per-candidate features (``action_counts``, ``overlap_*``).

    Raises:
        ValueError: for a ``scoring`` not in :data:`SCORINGS`.

    Example:
        >>> import torch
        >>> from derl_gym.agents.inner.policy import ActionScoringHead
        >>> head = ActionScoringHead(num_state_fields=2, max_actions=3, dim=4, hidden_dim=8, num_candidate_features=1)
        >>> features = torch.randn(5, 2 * 4 + 3 * 4 + 1 * 3)   # a batch of 5: 2 state texts, 3 candidates, 1 feature
        >>> logits, value_latent = head(features)
        >>> logits.shape, value_latent.shape, (head.latent_dim_pi, head.latent_dim_vf)
        (torch.Size([5, 3]), torch.Size([5, 8]), (3, 8))

        The same weights score any candidate list: swapping two candidates (their vectors and their
        feature) swaps their logits.

        >>> order = [*range(8), *range(12, 16), *range(8, 12), *range(16, 20), 21, 20, 22]
        >>> torch.allclose(head.forward_actor(features[:, order]), logits[:, [1, 0, 2]], atol=1e-6)
        True
        >>> ActionScoringHead(2, 3, 4, scoring="softmax")
        Traceback (most recent call last):
            ...
        ValueError: scoring must be one of ('product', 'dot', 'concat', 'match'), got 'softmax'
    """

    def __init__(self, num_state_fields: int, max_actions: int, dim: int, hidden_dim: int = 128,
                 layers: int = 1, scoring: str = "product", activation_fn: type[nn.Module] = nn.ReLU,
                 similarity: bool = True, num_candidate_features: int = 0) -> None:
        super().__init__()
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.num_state_fields, self.max_actions, self.dim = num_state_fields, max_actions, dim
        self.hidden_dim, self.scoring, self.similarity = hidden_dim, scoring, bool(similarity)
        self.num_candidate_features = int(num_candidate_features)
        extra = (num_state_fields if self.similarity else 0) + self.num_candidate_features
        state_in = num_state_fields * dim
        trunk = [hidden_dim] * max(1, layers)
        self.state_net = _mlp([state_in, *trunk], activation_fn)
        self.action_net = _mlp([dim, *trunk], activation_fn)
        self.value_trunk = _mlp([state_in, *trunk], activation_fn)
        if scoring in ("product", "match"):
            self.score_net = _mlp([hidden_dim + extra, hidden_dim, 1], activation_fn, last_activation=False)
        elif scoring == "concat":
            self.score_net = _mlp([2 * hidden_dim + extra, hidden_dim, 1], activation_fn, last_activation=False)
        else:
            self.score_net = nn.Identity()
        # dot scoring: similarities enter linearly
        self.similarity_weights = nn.Linear(extra, 1) if (scoring == "dot" and extra) else None
        self.latent_dim_pi = max_actions
        self.latent_dim_vf = hidden_dim

    def _split(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        cut = self.num_state_fields * self.dim
        cut2 = cut + self.max_actions * self.dim
        state = features[:, :cut]
        actions = features[:, cut:cut2].reshape(-1, self.max_actions, self.dim)
        if self.num_candidate_features:
            per_candidate = features[:, cut2:].reshape(-1, self.num_candidate_features, self.max_actions).transpose(1, 2)
        else:  # no per-candidate features: reshape(-1, 0, N) of an empty tensor cannot infer the batch
            per_candidate = features.new_zeros((features.shape[0], self.max_actions, 0))
        return state, actions, per_candidate

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        """Return candidate logits ``[batch, max_actions]``."""
        state, actions, per_candidate = self._split(features)
        s = self.state_net(state).unsqueeze(1)  # [B, 1, H]
        c = self.action_net(actions)  # [B, N, H]
        extras = [per_candidate] if self.num_candidate_features else []
        if self.similarity:  # [B, N, S]: raw candidate . state-field products
            fields = state.reshape(-1, self.num_state_fields, self.dim)
            extras.insert(0, th.bmm(actions, fields.transpose(1, 2)))
        sims = th.cat(extras, dim=-1) if extras else None
        if self.scoring == "dot":
            logits = (s * c).sum(-1) / float(np.sqrt(self.hidden_dim))
            if self.similarity_weights is not None:
                logits = logits + self.similarity_weights(sims).squeeze(-1)
            return logits
        if self.scoring == "product":
            inputs = s * c
        elif self.scoring == "match":  # the state enters only through the similarity features
            inputs = c
        else:
            inputs = th.cat([s.expand_as(c), c], dim=-1)
        if sims is not None:
            inputs = th.cat([inputs, sims], dim=-1)
        return self.score_net(inputs).squeeze(-1)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        """Return the value latent ``[batch, hidden]``."""
        return self.value_trunk(features[:, : self.num_state_fields * self.dim])

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Return ``(logits, value latent)``."""
        return self.forward_actor(features), self.forward_critic(features)


class ActionScoringPolicy(MaskableActorCriticPolicy):
    """MaskablePPO policy that scores each candidate command (DRRN-style); see the module docstring.

    Extra keyword arguments: ``hidden_dim`` (width, default 128), ``layers`` (trunk depth, 1),
    ``scoring`` (``"product"``, ``"dot"``, ``"concat"`` or ``"match"``), ``similarity`` (add candidate/state
    dot products to the score input, default True). ``net_arch`` is ignored.

    Raises:
        ValueError: for a non-Discrete action space, ``use_sde=True``, or an observation whose number of
            candidate rows differs from the number of actions.

    Example:
        :func:`~derl_gym.agents.inner.trainer.build_model` uses this policy for MaskablePPO; on the two-door
        world of :mod:`derl_gym.agents.inner.trainer`'s examples (candidates 2 and 3 are masked out):

        >>> import torch
        >>> from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
        >>> from derl_gym.agents.inner.trainer import _example_env, build_model, make_vec_env
        >>> from derl_gym.runtime.spec import AgentSpec
        >>> env = _example_env()
        >>> model = build_model(AgentSpec(policy_kwargs={"hidden_dim": 16}), make_vec_env([_example_env]), seed=0)
        >>> policy = model.policy
        >>> type(policy).__name__, policy.mlp_extractor.latent_dim_pi, policy.mlp_extractor.latent_dim_vf
        ('ActionScoringPolicy', 4, 16)
        >>> obs, _ = env.reset(seed=0)
        >>> mask = env.action_masks()
        >>> tensors, _ = policy.obs_to_tensor(obs)
        >>> with torch.no_grad():
        ...     draws = {int(policy(tensors, action_masks=mask)[0]) for _ in range(20)}
        ...     _ = torch.manual_seed(1); fast = policy(tensors, action_masks=mask)
        ...     _ = torch.manual_seed(1); parent = MaskableActorCriticPolicy.forward(policy, tensors, action_masks=mask)
        >>> mask.tolist(), draws <= {0, 1}      # only unmasked candidates are drawn
        ([True, True, False, False], True)
        >>> all(torch.equal(a, b) for a, b in zip(fast, parent))   # the inline fast path equals the parent's forward
        True
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 hidden_dim: int = 128, layers: int = 1, scoring: str = "product", similarity: bool = True,
                 activation_fn: type[nn.Module] = nn.ReLU, **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"ActionScoringPolicy needs a Discrete action space, got {action_space}")
        self.hidden_dim, self.layers, self.scoring = int(hidden_dim), int(layers), scoring
        self.similarity = bool(similarity)
        kwargs.pop("net_arch", None)
        if kwargs.pop("use_sde", False):
            raise ValueError("ActionScoringPolicy has a discrete action space; use_sde must be False")
        for key in ("log_std_init", "full_std", "use_expln", "squash_output"):  # continuous-action options
            kwargs.pop(key, None)
        kwargs.setdefault("features_extractor_class", TextActionExtractor)
        self._n_actions = int(action_space.n)
        #: fast path ($DERL_GYM_INNER_FAST): the rollout forward computes the masked categorical inline
        self._fast_forward = fast_path_enabled()
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[],
                         activation_fn=activation_fn, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        self.mlp_extractor = ActionScoringHead(
            num_state_fields=len(extractor.state_keys), max_actions=extractor.max_actions, dim=extractor.dim,
            hidden_dim=self.hidden_dim, layers=self.layers, scoring=self.scoring,
            activation_fn=self.activation_fn, similarity=self.similarity,
            num_candidate_features=len(extractor.candidate_keys),
        ).to(self.device)
        if extractor.max_actions != int(self.action_space.n):
            raise ValueError(f"observation has {extractor.max_actions} candidate rows but the action space "
                             f"has {self.action_space.n} actions; they must match")

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()  # the head already outputs one logit per candidate
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            head = self.mlp_extractor
            gains = {head.state_net: np.sqrt(2), head.action_net: np.sqrt(2), head.value_trunk: np.sqrt(2),
                     head.score_net: np.sqrt(2), self.value_net: 1.0}
            for module, gain in gains.items():
                module.apply(partial(self.init_weights, gain=gain))
            if isinstance(head.score_net, nn.Sequential):  # near-uniform initial policy
                last = head.score_net[-1]
                nn.init.orthogonal_(last.weight, gain=0.01)
                nn.init.zeros_(last.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def forward(self, obs: Any, deterministic: bool = False,
                action_masks: np.ndarray | None = None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Return ``(actions [B], values [B, 1], log_probs [B])`` as ``MaskableActorCriticPolicy.forward``.

        On the fast path (``$DERL_GYM_INNER_FAST``, read at construction) with masks given, and
        outside autograd (the rollout path runs under ``no_grad`` / ``inference_mode``), the masked
        categorical is computed inline with the same tensor operations, in the same order, as
        ``MaskableCategorical`` (normalise, mask with -1e8, normalise, softmax, ``multinomial``,
        gather): the same actions, values and log-probabilities bit for bit and the same draws from
        torch's RNG, without building two ``Categorical`` objects per step. Otherwise the parent's
        forward runs.
        """
        if not (self._fast_forward and action_masks is not None and self.share_features_extractor
                and not th.is_grad_enabled()):
            return super().forward(obs, deterministic=deterministic, action_masks=action_masks)
        features = self.extract_features(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        values = self.value_net(latent_vf)
        raw = self.action_net(latent_pi).view(-1, self._n_actions)
        logits = raw - raw.logsumexp(dim=-1, keepdim=True)
        masks = th.as_tensor(action_masks, dtype=th.bool, device=logits.device).reshape(logits.shape)
        logits = th.where(masks, logits, th.tensor(-1e8, dtype=logits.dtype, device=logits.device))
        logits = logits - logits.logsumexp(dim=-1, keepdim=True)
        probs = th.softmax(logits, dim=-1)
        if deterministic:
            actions = th.argmax(probs, dim=1)
        else:
            actions = th.multinomial(probs, 1, True).T.reshape(-1)
        log_prob = logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("net_arch", None)
        data.update(hidden_dim=self.hidden_dim, layers=self.layers, scoring=self.scoring,
                    similarity=self.similarity)
        return data
