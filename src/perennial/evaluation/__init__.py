"""Evaluation: metrics as pure functions over numbers (never models)."""

from perennial.evaluation.lm import (
    adaptation,
    adaptation_per_experience,
    average_loss,
    lm_summary,
    loss_forgetting,
    loss_forgetting_per_experience,
    perplexity,
)
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
    "adaptation",
    "adaptation_per_experience",
    "as_matrix",
    "average_accuracy",
    "average_incremental_accuracy",
    "average_loss",
    "backward_transfer",
    "final_accuracy",
    "forgetting",
    "forgetting_per_experience",
    "forward_transfer",
    "intransigence",
    "learning_accuracy",
    "lm_summary",
    "loss_forgetting",
    "loss_forgetting_per_experience",
    "perplexity",
    "summarize",
]
