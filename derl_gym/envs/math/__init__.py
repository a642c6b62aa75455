"""GSM8K and MATH: data loading, answer extraction and grading, primitives and envs, a module each.

- :mod:`~derl_gym.envs.math.data`: JSONL problems from ``data_dir`` / ``$DERL_GYM_DATA``, the Hugging
  Face hub only when asked or when no local folder is given, and the hash-based train/validation split.
- :mod:`~derl_gym.envs.math.answers`: final answers of responses and references (boxes, numbers).
- :mod:`~derl_gym.envs.math.grading`: equivalence (exact numbers for GSM8K; math-verify for MATH, in a
  child process bounded per check, without signal handlers or module flags).
- :mod:`~derl_gym.envs.math.primitives`: g1 strict match, g2 boxed format, g3 explicit steps, g4 loose match.
- :mod:`~derl_gym.envs.math.env`: ``GSM8KEnv`` (``derl_gym/GSM8K-v0``) and ``MATHEnv`` (``derl_gym/MATH-v0``).

Every public name is re-exported here, so ``from derl_gym.envs.math import GSM8KEnv, math_equivalent``
and the entry points ``derl_gym.envs.math:GSM8KEnv`` / ``derl_gym.envs.math:math_primitives`` work.
Each module's ``__all__`` says what it exports; this package's ``__all__`` is their union (one list
per name, kept in its module).

Example:
    >>> import derl_gym.envs.math as math_envs
    >>> math_envs.GSM8KEnv is math_envs.env.GSM8KEnv, "load_gsm8k" in math_envs.__all__
    (True, True)
"""

from __future__ import annotations

from derl_gym.envs.math import answers, data, env, grading, primitives
from derl_gym.envs.math.answers import *  # noqa: F403
from derl_gym.envs.math.data import *  # noqa: F403
from derl_gym.envs.math.env import *  # noqa: F403
from derl_gym.envs.math.env import _MathEnv  # noqa: F401  (the shared base: isinstance checks in trainers)
from derl_gym.envs.math.grading import *  # noqa: F403
from derl_gym.envs.math.primitives import *  # noqa: F403

__all__ = [*data.__all__, *answers.__all__, *grading.__all__, *primitives.__all__, *env.__all__]
