"""What a report shows, computed from stored runs: groups of seeds, their mean curves and tables.

Everything here is numbers; :mod:`perennial.report.plots` draws them and
:mod:`perennial.report.html` lays them out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perennial.api import mean_sem
from perennial.evaluation import CONTINUAL_METRICS, ONLINE_METRICS
from perennial.store import RunRecord

#: metrics of the accuracy matrix shown in tables (fractions; shown in %)
MATRIX_METRICS = ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc")
#: metrics compared across strategies in the comparison chart (when present)
CHART_METRICS = ("acc", "forgetting", "learning_acc", "min_acc", "wc_acc", "stability_gap")
#: panels of the timescales plot: mean accuracy on these experiences, as the model trains
MODEL_PANELS = ("earlier", "current", "seen")


@dataclass
class Curve:
    """Mean accuracy (and s.e.m. across seeds, nan with one seed) on one experience over steps."""

    exp: int
    steps: np.ndarray
    mean: np.ndarray
    sem: np.ndarray


@dataclass
class Group:
    """Runs of one strategy on one benchmark and scenario (typically several seeds)."""

    strategy: str
    benchmark: str
    scenario: str
    runs: list[RunRecord]
    experience_names: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.strategy

    @property
    def long_label(self) -> str:
        return f"{self.strategy} on {self.benchmark} ({self.scenario}-incremental)"

    @property
    def slug(self) -> str:
        raw = f"{self.strategy}-{self.benchmark}-{self.scenario}"
        return "".join(c if c.isalnum() or c in "-_" else "-" for c in raw.replace("+", "-plus-"))

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def metrics(self, run: RunRecord) -> dict[str, Any]:
        return {**(run.metrics or {}), **run.continual_metrics()}

    def metric(self, name: str) -> tuple[float | None, float | None]:
        """Mean and standard error of ``name`` across the group's runs (None when absent)."""
        return mean_sem([_num(self.metrics(r).get(name)) for r in self.runs])

    def mean_matrix(self) -> np.ndarray | None:
        """Mean accuracy matrix over the runs (rows a run did not reach and cells it did not
        measure are left out of its mean; nan where no run measured a cell)."""
        mats = [np.array(r.accuracy_matrix, dtype=float) for r in self.runs if r.accuracy_matrix]
        if not mats:
            return None
        rows = max(m.shape[0] for m in mats)
        cols = max(m.shape[1] for m in mats)
        stack = np.full((len(mats), rows, cols), np.nan)
        for i, m in enumerate(mats):
            stack[i, : m.shape[0], : m.shape[1]] = m
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # cells no run measured stay nan
            out = np.nanmean(stack, axis=0) if np.isfinite(stack).any() else None
        return out

    def has_online(self) -> bool:
        """Whether the runs trained online (``train.mode=online``: a per-batch online-accuracy curve)."""
        return any((r.metrics or {}).get("online_curve") for r in self.runs)

    def has_log(self) -> bool:
        return any(r.eval_log for r in self.runs)

    def boundaries(self) -> list[int]:
        """Step at which each experience's training started (from the first run with a log)."""
        for r in self.runs:
            if r.eval_log:
                starts: dict[int, int] = {}
                for rec in r.eval_log:
                    starts[rec.exp_trained] = min(starts.get(rec.exp_trained, rec.step), rec.step)
                return [starts[k] for k in sorted(starts)]
        return []

    def last_step(self) -> int:
        return max((rec.step for r in self.runs for rec in r.eval_log), default=0)

    def curves(self) -> list[Curve]:
        """Per evaluated experience: accuracy over steps, averaged over the runs that measured it."""
        by_exp: dict[int, dict[tuple[int, int], list[float]]] = {}
        for r in self.runs:
            for rec in r.eval_log:
                by_exp.setdefault(rec.exp_eval, {}).setdefault((rec.step, rec.exp_trained), []).append(rec.acc)
        out = []
        for e in sorted(by_exp):
            keys = sorted(by_exp[e])
            vals = [by_exp[e][k] for k in keys]
            mean = np.array([np.mean(v) for v in vals])
            sem = np.array([np.std(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else np.nan for v in vals])
            out.append(Curve(e, np.array([k[0] for k in keys]), mean, sem))
        return out

    def has_models(self) -> bool:
        return any(r.model_log for r in self.runs)

    def model_curves(self) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Timescales: for the working model (``"model"``) and each slow copy, the mean accuracy
        over steps on the earlier experiences (stability), on the current one (plasticity) and on
        all seen so far; ``{network: {panel: (steps, mean over runs)}}``, panels as in
        :data:`MODEL_PANELS`. Points are ordered by (step, experience trained), so the end of an
        experience and the start of the next (same step) both appear."""
        acc: dict[str, dict[str, dict[tuple[int, int], list[float]]]] = {}
        for r in self.runs:
            rows: dict[tuple[str, int, int], list[tuple[int, float]]] = {}
            for rec in r.model_log:
                rows.setdefault((rec.model, rec.step, rec.exp_trained), []).append((rec.exp_eval, rec.acc))
            for (net, step, cur), evals in rows.items():
                complete = {e for e, _ in evals} >= set(range(cur + 1))  # not a start-of-experience point
                parts = (
                    [a for e, a in evals if e < cur],
                    [a for e, a in evals if e == cur],
                    [a for e, a in evals if e <= cur] if complete else [],
                )
                for panel, vals in zip(MODEL_PANELS, parts, strict=True):
                    if vals:
                        acc.setdefault(net, {}).setdefault(panel, {}).setdefault((step, cur), []).append(
                            float(np.mean(vals))
                        )
        out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for net in sorted(acc, key=lambda n: (n != "model", n)):
            out[net] = {}
            for panel, points in acc[net].items():
                keys = sorted(points)
                out[net][panel] = (np.array([k[0] for k in keys]), np.array([np.mean(points[k]) for k in keys]))
        return out

    def gap_rows(self) -> list[dict[str, Any]]:
        """Per experience: the stability gap at the switch after it, mean over runs."""
        per: dict[int, list[dict[str, Any]]] = {}
        for r in self.runs:
            for g in self.metrics(r).get("stability_gaps") or []:
                per.setdefault(int(g["experience"]), []).append(g)
        rows = []
        for e in sorted(per):
            gs = per[e]
            rec = [g["recover_steps"] for g in gs if g.get("recover_steps") is not None]
            rows.append(
                {
                    "experience": e,
                    "acc_before": mean_sem([g["acc_before"] for g in gs]),
                    "acc_min": mean_sem([g["acc_min"] for g in gs]),
                    "gap": mean_sem([g["gap"] for g in gs]),
                    "min_after_steps": float(np.mean([g["min_after_steps"] for g in gs])),
                    "acc_end": mean_sem([g["acc_end"] for g in gs]),
                    "recover_steps": float(np.mean(rec)) if rec else None,
                    "recovered": f"{len(rec)}/{len(gs)}",
                }
            )
        return rows


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by (strategy, benchmark, scenario), keeping the order of first appearance."""
    groups: dict[tuple[str, str, str], Group] = {}
    for r in runs:
        key = (r.strategy, r.benchmark, r.scenario)
        if key not in groups:
            groups[key] = Group(r.strategy, r.benchmark, r.scenario, [])
        groups[key].runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.seed)
        n = max((len(r.accuracy_matrix[0]) if r.accuracy_matrix else r.n_experiences) for r in g.runs)
        names = next((r.experience_names for r in g.runs if r.experience_names), [])
        g.experience_names = list(names) if len(names) == n else [f"exp{j}" for j in range(n)]
    return list(groups.values())


def metric_names(groups: Sequence[Group]) -> list[str]:
    """Metrics to tabulate: the matrix ones, plus the continual ones when any run has a log."""
    names = list(MATRIX_METRICS)
    if any(g.has_log() for g in groups):
        names += list(CONTINUAL_METRICS)
    if any(g.has_online() for g in groups):
        names += [m for m in ONLINE_METRICS if m != "anytime_acc" or any(g.has_log() for g in groups)]
    return names
