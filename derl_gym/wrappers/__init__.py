"""Gymnasium wrappers of derl-gym.

- :class:`MetaRewardWrapper` (``meta_reward``): replaces an env's reward with a Meta-Reward over
  primitives and keeps the task reward in ``info``.
- :class:`TextActionWrapper` (``text_actions``): text observations/actions to SB3-friendly spaces;
  imported lazily on first access, so ``import derl_gym.wrappers`` does not import torch. Its text
  encoders (``HashEncoder``, ``SentenceEncoder``, ``make_encoder``) live in ``text_encoders`` and are
  re-exported by ``text_actions``.
- :class:`ActionTagWrapper` (``action_tags``): hands a text env the command inside a language
  model's ``<action>...</action>`` tag.
- :func:`spec_with_wrappers` (``spec``): a registered env's spec with wrappers appended, for
  ``gymnasium.make(spec)``.

Every wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``), so
``gymnasium.make(env.spec)`` rebuilds a wrapped env (see each module for what is recorded).
"""

from derl_gym.wrappers.action_tags import ActionTagWrapper
from derl_gym.wrappers.meta_reward import MetaRewardWrapper
from derl_gym.wrappers.spec import spec_with_wrappers

__all__ = ["MetaRewardWrapper", "TextActionWrapper", "ActionTagWrapper", "spec_with_wrappers"]


def __getattr__(name: str):
    """Import :class:`TextActionWrapper` lazily from :mod:`derl_gym.wrappers.text_actions`."""
    if name == "TextActionWrapper":
        from derl_gym.wrappers.text_actions import TextActionWrapper

        return TextActionWrapper
    raise AttributeError(f"module 'derl_gym.wrappers' has no attribute {name!r}")
