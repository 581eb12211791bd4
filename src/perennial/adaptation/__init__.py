"""Test-time adaptation methods (Tent, EATA, SAR, CoTTA, RMT, LAME, RDumb, ...).

Methods are strategies with two more hooks (:mod:`perennial.adaptation.base`); the loop that
runs them is :func:`perennial.train.adapt.adapt`.
"""

from perennial.adaptation.base import AdaptContext, Adapter, GradientAdapter
from perennial.adaptation.methods import ADAPTERS, make_adapter

__all__ = ["ADAPTERS", "AdaptContext", "Adapter", "GradientAdapter", "make_adapter"]
