"""Discovered rewards for other trainers: TRL reward functions, a verifiers task, run exports.

- :mod:`derl_gym.integrations.trl`: a Meta-Reward plus its primitives as a TRL reward function
  (``GRPOTrainer(reward_funcs=[trl_reward_function("g1 + 0.5*g2", task="gsm8k")])``), also from the
  JSON of ``derl-gym export`` (:func:`~derl_gym.integrations.trl.from_export`).
- :mod:`derl_gym.integrations.verifiers`: the same reward as a task of the ``verifiers`` library
  (one weighted ``@vf.reward`` for the whole formula, each primitive a ``@vf.metric``); needs the
  ``verifiers`` package.
- :mod:`derl_gym.integrations.export`: what ``derl-gym export RUN_DIR`` writes (read from the run's
  store only).

Nothing here imports TRL or verifiers at import time.
"""

from __future__ import annotations

from derl_gym.integrations.export import ExportError, export_run
from derl_gym.integrations.trl import from_export, trl_reward_function

__all__ = ["ExportError", "export_run", "from_export", "trl_reward_function"]
