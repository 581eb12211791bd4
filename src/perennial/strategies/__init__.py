"""Strategies: hooks that change the data, the loss, the gradients or the prediction.

Importing this package registers the built-in strategies.
"""

from perennial.strategies import ewc, joint, lwf, naive, replay  # noqa: F401  (registration)
from perennial.strategies.base import Batch, Context, Strategy, frozen_copy
from perennial.strategies.compose import Compose, compose
from perennial.strategies.ewc import EWC, OnlineEWC
from perennial.strategies.joint import Cumulative, Joint
from perennial.strategies.lwf import LwF
from perennial.strategies.naive import Naive
from perennial.strategies.registry import STRATEGIES, make_strategy, register
from perennial.strategies.replay import Replay

__all__ = [
    "EWC",
    "STRATEGIES",
    "Batch",
    "Compose",
    "Context",
    "Cumulative",
    "Joint",
    "LwF",
    "Naive",
    "OnlineEWC",
    "Replay",
    "Strategy",
    "compose",
    "frozen_copy",
    "make_strategy",
    "register",
]
