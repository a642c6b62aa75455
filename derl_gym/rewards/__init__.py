"""Reward layer: primitives, the Meta-Reward language and its token grammar.

Public API: :class:`MetaReward`, :class:`InvalidExpression`, :func:`canonicalize` (expression),
:class:`Grammar` (token grammar for constrained generation, mutation and crossover),
:class:`Primitive`, :class:`PrimitiveSet`, :class:`Trajectory`, :class:`Step`,
:func:`agent_primitives`, :func:`segment_primitives`, :func:`play_episode`, :func:`rollout` (primitives).
Importing this package does
not import sympy (the canonical form imports it on first use).
"""

from derl_gym.rewards.expression import InvalidExpression, MetaReward, canonicalize
from derl_gym.rewards.grammar import Grammar
from derl_gym.rewards.primitives import (
    Primitive,
    PrimitiveSet,
    Step,
    Trajectory,
    agent_primitives,
    play_episode,
    rollout,
    segment_primitives,
)

__all__ = [
    "MetaReward",
    "InvalidExpression",
    "canonicalize",
    "Grammar",
    "Primitive",
    "PrimitiveSet",
    "Trajectory",
    "Step",
    "agent_primitives",
    "segment_primitives",
    "play_episode",
    "rollout",
]

