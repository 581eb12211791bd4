"""Tracking: stored runs in MLflow, TensorBoard and CSV (reads the store's records only).

Every exporter takes finished :class:`~perennial.store.RunRecord` objects, so the same code
serves ``--mlflow URI`` / ``--tensorboard DIR`` on ``run`` and ``compare`` (each run is
exported the moment it finishes) and ``perennial export RUN_ID... --to ...`` after the fact.

What is logged, per run:

- parameters: the flattened run config (``train.lr``, ``strategy.buffer_size``, ...), and tags
  ``perennial.run_id``, benchmark, scenario, strategy, seed;
- final metrics (``acc``, ``forgetting``, ``bwt``, ..., continual-evaluation metrics);
- per-experience metrics at step ``i`` (after training on experience ``i``): ``acc/<exp>``
  and ``loss/<exp>`` for every experience, ``acc/avg_seen`` (mean over experiences 0..i);
- the continual-evaluation curves at their training step: ``eval_acc/<exp>``, ``eval_loss/<exp>``;
- artifacts (MLflow): the accuracy and loss matrices and the eval log as CSV, the run summary
  as JSON, and the HTML report (``report/report.html`` with its PNG plots).

MLflow and TensorBoard are optional (``pip install 'perennial[tracking]'``); CSV needs nothing.
"""

from perennial.tracking.exporters import (
    Tracker,
    check_mlflow,
    export_csv,
    export_mlflow,
    export_tensorboard,
    flatten,
    trackers,
)

__all__ = [
    "Tracker",
    "check_mlflow",
    "export_csv",
    "export_mlflow",
    "export_tensorboard",
    "flatten",
    "trackers",
]
