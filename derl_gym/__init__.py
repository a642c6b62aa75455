"""derl-gym: reward discovery as a Gymnasium problem (DERL, arXiv 2512.13399).

Importing the package registers every environment under the ``derl_gym`` namespace, so
``gymnasium.make("derl_gym/GSM8K-v0")`` works after ``import derl_gym``. Heavy dependencies
(torch, textworld, scienceworld) are imported only when the matching env or agent is used.
"""

from derl_gym.envs import register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["register_envs", "__version__"]
