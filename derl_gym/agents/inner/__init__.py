"""Inner-loop agents: the trainer registry, the DRRN-style action-scoring policy and SB3 training/evaluation helpers."""

from derl_gym.agents.inner.policy import ActionScoringHead, ActionScoringPolicy, TextActionExtractor
from derl_gym.agents.inner.registry import (
    InnerTrainer,
    TrainOutput,
    get_trainer,
    register_trainer,
    registered_trainers,
)
from derl_gym.agents.inner.trainer import (
    ALGORITHMS,
    EvalResult,
    SuccessCurveCallback,
    build_model,
    evaluate_policy,
    evaluate_random,
    get_algorithm,
    make_vec_env,
)

__all__ = [
    "ALGORITHMS",
    "ActionScoringHead",
    "ActionScoringPolicy",
    "EvalResult",
    "InnerTrainer",
    "TrainOutput",
    "SuccessCurveCallback",
    "TextActionExtractor",
    "build_model",
    "evaluate_policy",
    "evaluate_random",
    "get_algorithm",
    "get_trainer",
    "make_vec_env",
    "register_trainer",
    "registered_trainers",
]
