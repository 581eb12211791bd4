"""Strategies: hooks that change the data, the loss, the gradients or the prediction.

Importing this package registers the built-in strategies.
"""

from perennial.strategies import (  # noqa: F401  (registration)
    bic,
    der,
    er_ace,
    ewc,
    gdumb,
    gem,
    icarl,
    joint,
    lwf,
    mas,
    naive,
    replay,
    si,
)
from perennial.strategies.base import Batch, Context, Strategy, frozen_copy
from perennial.strategies.bic import BiC
from perennial.strategies.compose import Compose, compose
from perennial.strategies.der import DER, DERpp
from perennial.strategies.er_ace import ERACE
from perennial.strategies.ewc import EWC, OnlineEWC
from perennial.strategies.gdumb import GDumb
from perennial.strategies.gem import AGEM, GEM
from perennial.strategies.icarl import ICaRL
from perennial.strategies.joint import Cumulative, Joint
from perennial.strategies.lwf import LwF
from perennial.strategies.mas import MAS
from perennial.strategies.naive import Naive
from perennial.strategies.registry import STRATEGIES, make_strategy, register
from perennial.strategies.rehearsal import Rehearsal
from perennial.strategies.replay import Replay
from perennial.strategies.si import SI

__all__ = [
    "AGEM",
    "DER",
    "ERACE",
    "EWC",
    "GEM",
    "MAS",
    "SI",
    "STRATEGIES",
    "Batch",
    "BiC",
    "Compose",
    "Context",
    "Cumulative",
    "DERpp",
    "GDumb",
    "ICaRL",
    "Joint",
    "LwF",
    "Naive",
    "OnlineEWC",
    "Rehearsal",
    "Replay",
    "Strategy",
    "compose",
    "frozen_copy",
    "make_strategy",
    "register",
]
