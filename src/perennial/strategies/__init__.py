"""Strategies: hooks that change the data, the loss, the gradients or the prediction.

Importing this package registers the built-in strategies.
"""

from perennial.strategies import (  # noqa: F401  (registration)
    bic,
    cls_er,
    der,
    ema_teacher,
    er_ace,
    ewc,
    first_session,
    gdumb,
    gem,
    icarl,
    in_context,
    joint,
    lwf,
    mas,
    mir,
    naive,
    ocm,
    replay,
    scr,
    si,
    simplecil,
    slca,
)
from perennial.strategies.base import Batch, Context, Strategy, frozen_copy, register_teacher
from perennial.strategies.bic import BiC
from perennial.strategies.cls_er import ClsER
from perennial.strategies.compose import Compose, compose
from perennial.strategies.der import DER, DERpp
from perennial.strategies.ema_teacher import EMATeacher
from perennial.strategies.er_ace import ERACE
from perennial.strategies.ewc import EWC, OnlineEWC
from perennial.strategies.first_session import FirstSession
from perennial.strategies.gdumb import GDumb
from perennial.strategies.gem import AGEM, GEM
from perennial.strategies.icarl import ICaRL
from perennial.strategies.in_context import InContext
from perennial.strategies.joint import Cumulative, Joint
from perennial.strategies.lwf import LwF
from perennial.strategies.mas import MAS
from perennial.strategies.mir import MIR
from perennial.strategies.naive import Naive
from perennial.strategies.ocm import OCM
from perennial.strategies.registry import STRATEGIES, make_strategy, register
from perennial.strategies.rehearsal import Rehearsal
from perennial.strategies.replay import Replay
from perennial.strategies.scr import SCR
from perennial.strategies.si import SI
from perennial.strategies.simplecil import SimpleCIL
from perennial.strategies.slca import SLCA
from perennial.strategies.teachers import Teachers

__all__ = [
    "AGEM",
    "DER",
    "ERACE",
    "EWC",
    "GEM",
    "MAS",
    "MIR",
    "OCM",
    "SCR",
    "SI",
    "SLCA",
    "STRATEGIES",
    "Batch",
    "BiC",
    "ClsER",
    "Compose",
    "Context",
    "Cumulative",
    "DERpp",
    "EMATeacher",
    "FirstSession",
    "GDumb",
    "ICaRL",
    "InContext",
    "Joint",
    "LwF",
    "Naive",
    "OnlineEWC",
    "Rehearsal",
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
