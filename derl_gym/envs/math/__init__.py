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
"""

from __future__ import annotations

from derl_gym.envs.math.answers import (
    extract_boxed,
    extract_gsm8k_answer,
    extract_last_number,
    extract_math_answer,
    gsm8k_ground_truth,
    math_ground_truth,
    normalize_math_answer,
    parse_number,
)
from derl_gym.envs.math.data import (
    SOURCES,
    MathDataError,
    MathDataNotFoundError,
    MathProblem,
    data_sources,
    load_gsm8k,
    load_jsonl,
    load_math,
    resolve_data_root,
    split_train_validation,
)
from derl_gym.envs.math.env import (
    CHARSET,
    DEFAULT_ACTION_LENGTH,
    DEFAULT_OBSERVATION_LENGTH,
    GSM8KEnv,
    MATHEnv,
    _MathEnv,
    normalize_text,
)
from derl_gym.envs.math.grading import MAX_VERIFY_CHARS, MathGrader, gsm8k_equivalent, math_equivalent
from derl_gym.envs.math.primitives import count_step_markers, loose_match, math_primitives, step_structure_score

__all__ = [
    "MathProblem",
    "MathDataNotFoundError",
    "MathDataError",
    "SOURCES",
    "data_sources",
    "CHARSET",
    "DEFAULT_ACTION_LENGTH",
    "DEFAULT_OBSERVATION_LENGTH",
    "normalize_text",
    "resolve_data_root",
    "load_gsm8k",
    "load_math",
    "load_jsonl",
    "split_train_validation",
    "extract_boxed",
    "extract_last_number",
    "parse_number",
    "gsm8k_ground_truth",
    "extract_gsm8k_answer",
    "gsm8k_equivalent",
    "math_ground_truth",
    "extract_math_answer",
    "normalize_math_answer",
    "MAX_VERIFY_CHARS",
    "MathGrader",
    "math_equivalent",
    "count_step_markers",
    "step_structure_score",
    "loose_match",
    "math_primitives",
    "GSM8KEnv",
    "MATHEnv",
]
