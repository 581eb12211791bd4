"""Evaluation: metrics as pure functions over numbers (never models)."""

from perennial.evaluation.metrics import (
    as_matrix,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    final_accuracy,
    forgetting,
    forgetting_per_experience,
    forward_transfer,
    intransigence,
    learning_accuracy,
    summarize,
)

__all__ = [
    "as_matrix",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "final_accuracy",
    "forgetting",
    "forgetting_per_experience",
    "forward_transfer",
    "intransigence",
    "learning_accuracy",
    "summarize",
]
