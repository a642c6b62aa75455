"""Hand a text env only the command inside a language model's ``<action>...</action>`` tag.

:class:`ActionTagWrapper` is what the GRPO trainer's multi-turn episodes put *inside*
:class:`~derl_gym.wrappers.MetaRewardWrapper`: the env gets the bare command while the trajectory
keeps the model's whole answer (reasoning tags included) for the ``tags`` step scorer.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
from gymnasium.core import ObsType

__all__ = ["ActionTagWrapper", "extract_action"]

_ACTION_RE = re.compile(r"<action>(.*?)</action>", re.S | re.I)


def extract_action(text: str) -> str:
    """Return the command of a tagged answer.

    Args:
        text: a model's answer, e.g. ``"<planning>...</planning><action>go to desk 1</action>"``.

    Returns:
        The stripped text inside the last ``<action>...</action>``; the stripped text itself when there
        is no such tag.

    Example:
        >>> from derl_gym.wrappers.action_tags import extract_action
        >>> extract_action("<explore>find it</explore> <action> open drawer 1 </action>")
        'open drawer 1'
        >>> extract_action("  look ")
        'look'
    """
    found = _ACTION_RE.findall(text or "")
    return (found[-1] if found else (text or "")).strip()


class ActionTagWrapper(gym.ActionWrapper[ObsType, str, str], gym.utils.RecordConstructorArgs):
    """Hand the env only the command inside ``<action>...</action>`` of a language model's answer.

    Put it *inside* ``MetaRewardWrapper`` so that the trajectory keeps the full answer (tags included)
    for the ``tags`` step scorer. An answer without the tag is passed stripped (the env answers it
    as an invalid command). It takes no arguments, so ``gymnasium.make(env.spec)`` rebuilds it.

    Args:
        env: a text env (actions are strings).

    Example:
        Any text env works; here the formula env (``derl_gym/MetaRewardText-v0``), which reports the
        text it got in ``info["formula"]``:

        >>> import gymnasium as gym
        >>> import derl_gym
        >>> from derl_gym.wrappers import ActionTagWrapper
        >>> score = lambda formula: 1.0 if formula == "g1 + g2" else 0.0
        >>> env = ActionTagWrapper(gym.make("derl_gym/MetaRewardText-v0", scorer=score, num_variables=2))
        >>> _ = env.reset(seed=0)
        >>> _, reward, _, _, info = env.step("<planning>success, then speed</planning><action>g1 + g2</action>")
        >>> info["formula"], reward
        ('g1 + g2', 1.0)
    """

    def __init__(self, env: gym.Env[ObsType, str]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)

    def action(self, action: Any) -> str:
        """Return :func:`extract_action` of ``action`` (the command the env gets)."""
        return extract_action(str(action))
