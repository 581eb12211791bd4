"""Strategies: hooks that change the data, the loss, the gradients or the prediction.

Importing this package registers the built-in strategies.
"""

from perennial.strategies import cls_er, ema_teacher, ewc, first_session, joint, lwf, naive, replay, simplecil, slca  # noqa: F401  (registration)
from perennial.strategies.base import Batch, Context, Strategy, frozen_copy, register_teacher
from perennial.strategies.cls_er import ClsER
from perennial.strategies.compose import Compose, compose
from perennial.strategies.ema_teacher import EMATeacher
from perennial.strategies.ewc import EWC, OnlineEWC
from perennial.strategies.first_session import FirstSession
from perennial.strategies.joint import Cumulative, Joint
from perennial.strategies.lwf import LwF
from perennial.strategies.naive import Naive
from perennial.strategies.registry import STRATEGIES, make_strategy, register
from perennial.strategies.replay import Replay
from perennial.strategies.simplecil import SimpleCIL
from perennial.strategies.slca import SLCA
from perennial.strategies.teachers import Teachers

__all__ = [
    "EWC",
    "SLCA",
    "STRATEGIES",
    "Batch",
    "ClsER",
    "Compose",
    "Context",
    "Cumulative",
    "EMATeacher",
    "FirstSession",
    "Joint",
    "LwF",
    "Naive",
    "OnlineEWC",
    "Replay",
    "SimpleCIL",
    "Strategy",
    "Teachers",
    "compose",
    "frozen_copy",
    "make_strategy",
    "register",
    "register_teacher",
]
