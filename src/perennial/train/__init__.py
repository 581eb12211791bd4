"""Training: the one loop (``fit``), schedules, settings and evaluation."""

from perennial.train.continual import ContinualEvalSettings, ContinualEvaluator, eval_policy
from perennial.train.evaluate import EvalPolicy, evaluate_row, evaluate_split, evaluate_stream
from perennial.train.loop import Callback, FitResult, fit, make_optimizer, resolve_device, seed_everything
from perennial.train.progress import NoProgress, Progress, RichProgress
from perennial.train.schedules import lr_multiplier
from perennial.train.settings import TrainSettings
from perennial.train.timescales import Timescales, apply_lr_scales, param_groups, with_teachers

__all__ = [
    "Callback",
    "ContinualEvalSettings",
    "ContinualEvaluator",
    "EvalPolicy",
    "FitResult",
    "NoProgress",
    "Progress",
    "RichProgress",
    "Timescales",
    "TrainSettings",
    "apply_lr_scales",
    "eval_policy",
    "evaluate_row",
    "evaluate_split",
    "evaluate_stream",
    "fit",
    "lr_multiplier",
    "make_optimizer",
    "param_groups",
    "resolve_device",
    "seed_everything",
    "with_teachers",
]
