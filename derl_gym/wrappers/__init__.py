"""Gymnasium wrappers of derl-gym.

- :class:`MetaRewardWrapper` (``meta_reward``): replaces an env's reward with a Meta-Reward over
  primitives and keeps the task reward in ``info``.
- :class:`TextActionWrapper` (``text_actions``): text observations/actions to SB3-friendly spaces;
  imported lazily on first access, so ``import derl_gym.wrappers`` does not import torch.
"""

from derl_gym.wrappers.meta_reward import MetaRewardWrapper

__all__ = ["MetaRewardWrapper", "TextActionWrapper"]


def __getattr__(name: str):
    """Import :class:`TextActionWrapper` lazily from :mod:`derl_gym.wrappers.text_actions`."""
    if name == "TextActionWrapper":
        from derl_gym.wrappers.text_actions import TextActionWrapper

        return TextActionWrapper
    raise AttributeError(f"module 'derl_gym.wrappers' has no attribute {name!r}")
