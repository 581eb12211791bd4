"""The exporters (see the package docstring for what each logs)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from perennial.errors import TrackingError
from perennial.store import RunRecord, dumps

INSTALL_HINT = "install it with: pip install 'perennial[tracking]'"


# ----------------------------------------------------------------------------- shared views
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}`` (lists and None as JSON)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(name: str) -> str:
    """A metric-name-safe version of an experience name (MLflow allows ``[A-Za-z0-9_-. /]``)."""
    return _UNSAFE.sub("_", name).strip("_") or "_"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _names(rec: RunRecord) -> list[str]:
    n = len(rec.random_init_acc) or (len(rec.accuracy_matrix[0]) if rec.accuracy_matrix else rec.n_experiences)
    names = list(rec.experience_names)[:n]
    return [metric_key(x) for x in names] + [f"exp{j}" for j in range(len(names), n)]


def final_metrics(rec: RunRecord) -> dict[str, float]:
    m = {**(rec.metrics or {}), **rec.continual_metrics()}
    out = {k: float(v) for k, v in m.items() if _finite(v)}
    if rec.seconds is not None:
        out["seconds"] = float(rec.seconds)
    return out


def per_experience(rec: RunRecord) -> list[tuple[str, float, int]]:
    """(key, value, step): row ``i`` of the accuracy/loss matrices at step ``i``."""
    names = _names(rec)
    rows: list[tuple[str, float, int]] = []
    for i, accs in enumerate(rec.accuracy_matrix):
        for j, a in enumerate(accs):
            if _finite(a):
                rows.append((f"acc/{names[j]}", float(a), i))
        seen = [a for a in accs[: i + 1] if _finite(a)]
        if seen:
            rows.append(("acc/avg_seen", sum(seen) / len(seen), i))
    for i, losses in enumerate(rec.loss_matrix):
        for j, lo in enumerate(losses):
            if _finite(lo):
                rows.append((f"loss/{names[j]}", float(lo), i))  # type: ignore[arg-type]
    return rows


def curves(rec: RunRecord) -> list[tuple[str, float, int]]:
    """(key, value, step): the continual-evaluation log at its training step."""
    names = _names(rec)
    rows: list[tuple[str, float, int]] = []
    for r in rec.eval_log:
        name = names[r.exp_eval] if r.exp_eval < len(names) else f"exp{r.exp_eval}"
        rows.append((f"eval_acc/{name}", float(r.acc), int(r.step)))
        if _finite(r.loss):
            rows.append((f"eval_loss/{name}", float(r.loss), int(r.step)))  # type: ignore[arg-type]
    return rows


def write_run_files(rec: RunRecord, out: Path) -> list[Path]:
    """accuracy_matrix.csv, loss_matrix.csv, eval_log.csv (if any) and summary.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    names = _names(rec)
    files = []
    for fname, initial, matrix in (
        ("accuracy_matrix.csv", rec.random_init_acc, rec.accuracy_matrix),
        ("loss_matrix.csv", rec.random_init_loss, rec.loss_matrix),
    ):
        path = out / fname
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trained_on", *names])
            if initial:
                w.writerow(["(initial)", *initial])
            for i, row in enumerate(matrix):
                w.writerow([names[i] if i < len(names) else i, *row])
        files.append(path)
    if rec.eval_log or rec.model_log:
        path = out / "eval_log.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "exp_trained", "exp_eval", "model", "acc", "loss", "grid"])
            for r in [*rec.eval_log, *rec.model_log]:
                w.writerow([r.step, r.exp_trained, r.exp_eval, r.model, r.acc, r.loss, int(r.grid)])
        files.append(path)
    path = out / "summary.json"
    path.write_text(json.dumps(json.loads(dumps(rec.summary())), indent=2) + "\n")
    files.append(path)
    return files


# ------------------------------------------------------------------------------------- CSV
def export_csv(runs: Sequence[RunRecord], out_dir: str | Path) -> Path:
    """``out_dir/runs.csv`` (one row per run: identity and final metrics) and, per run, a folder
    with its matrices, eval log and summary. Returns the path of runs.csv."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        metric_keys = sorted({k for r in runs for k in final_metrics(r)})
        path = out / "runs.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run_id", "status", "benchmark", "scenario", "strategy", "seed", *metric_keys])
            for r in runs:
                m = final_metrics(r)
                w.writerow(
                    [
                        r.run_id,
                        r.status,
                        r.benchmark,
                        r.scenario,
                        r.strategy,
                        r.seed,
                        *[m.get(k, "") for k in metric_keys],
                    ]
                )
        for r in runs:
            write_run_files(r, out / r.run_id)
    except OSError as e:
        raise TrackingError(f"cannot write CSV files to {out}: {e}; choose a writable directory") from None
    return path


# ---------------------------------------------------------------------------------- MLflow
@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """An unreachable tracking server fails in seconds instead of minutes of HTTP retries."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    old = {k: os.environ.get(k) for k in keys}
    for k, v in keys.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a ``sqlite:`` store go next to the database file (not into the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.resolve().parent / "mlartifacts").as_uri()


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"--mlflow needs the mlflow package; {INSTALL_HINT}") from None
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir():
            raise TrackingError(
                f"cannot write to MLflow tracking URI {uri!r}: folder {parent} does not exist; create it or "
                "use another path (e.g. --mlflow sqlite:///mlflow.db)"
            )
    if "://" not in uri or uri.startswith("file:"):  # the file store is offline-friendly; allow it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:
        raise TrackingError(f"cannot use MLflow tracking URI {uri!r}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_mlflow(uri: str, experiment: str = "perennial") -> str:
    """Open the tracking store at ``uri`` and get or create ``experiment``; return its id.
    Raises :class:`TrackingError` (naming the URI) if it cannot be reached or written."""
    client = _client(uri)
    with _fail_fast():
        try:
            exp = client.get_experiment_by_name(experiment)
            if exp is not None:
                return str(exp.experiment_id)
            return str(client.create_experiment(experiment, artifact_location=_artifact_location(uri)))
        except TrackingError:
            raise
        except Exception as e:
            msg = _first_line(e)
            raise TrackingError(
                f"cannot write to MLflow tracking URI {uri!r}: {msg}; give a writable local store "
                "(e.g. --mlflow sqlite:///mlflow.db or --mlflow file:./mlruns) or a reachable server"
            ) from None


def _chunks(xs: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def export_mlflow(
    runs: Sequence[RunRecord], uri: str, experiment: str = "perennial", *, report: bool = True
) -> list[str]:
    """Log each run as one MLflow run of ``experiment`` (replacing an earlier export of the same
    perennial run); returns the MLflow run ids. The MLflow run ends FINISHED only once
    everything is logged (FAILED if logging breaks off)."""
    from mlflow.entities import Metric, Param, RunTag

    exp_id = check_mlflow(uri, experiment)
    client = _client(uri)
    ids = []
    for rec in runs:
        with _fail_fast():
            try:
                old = client.search_runs([exp_id], filter_string=f"tags.`perennial.run_id` = '{rec.run_id}'")
                for r in old:
                    client.delete_run(r.info.run_id)
                tags = {
                    "perennial.run_id": rec.run_id,
                    "perennial.status": rec.status,
                    "benchmark": rec.benchmark,
                    "scenario": rec.scenario,
                    "strategy": rec.strategy,
                    "seed": str(rec.seed),
                    "mlflow.runName": rec.run_id,
                }
                run = client.create_run(exp_id, start_time=int(rec.created * 1000), tags=tags, run_name=rec.run_id)
                rid = run.info.run_id
            except Exception as e:
                raise TrackingError(f"cannot log run {rec.run_id!r} to MLflow at {uri!r}: {e}") from None
            try:
                now = int(time.time() * 1000)
                params = [Param(k, v[:6000]) for k, v in flatten(rec.config).items()]
                metrics = [Metric(k, v, now, 0) for k, v in final_metrics(rec).items()]
                metrics += [Metric(k, v, now, s) for k, v, s in [*per_experience(rec), *curves(rec)]]
                for ps in _chunks(params, 100):
                    client.log_batch(rid, params=ps)
                for ms in _chunks(metrics, 1000):
                    client.log_batch(rid, metrics=ms)
                client.log_batch(rid, tags=[RunTag("perennial.versions", json.dumps(rec.versions)[:5000])])
                with tempfile.TemporaryDirectory() as tmp:
                    write_run_files(rec, Path(tmp))
                    client.log_artifacts(rid, tmp)
                if report:
                    from perennial.report import build_report

                    with tempfile.TemporaryDirectory() as tmp:
                        build_report([rec], tmp, title=rec.run_id)
                        client.log_artifacts(rid, tmp, "report")
                end = int((rec.updated or time.time()) * 1000)
                client.set_terminated(rid, "FINISHED" if rec.status == "finished" else "FAILED", end_time=end)
            except Exception as e:
                with contextlib.suppress(Exception):
                    client.set_terminated(rid, "FAILED")
                raise TrackingError(f"logging run {rec.run_id!r} to MLflow at {uri!r} broke off: {e}") from None
        ids.append(rid)
    return ids


# ----------------------------------------------------------------------------- TensorBoard
def _summary_writer(logdir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrackingError(f"--tensorboard needs the tensorboard package; {INSTALL_HINT}") from None
    return SummaryWriter(log_dir=str(logdir))


def check_tensorboard(logdir: str | Path) -> Path:
    path = Path(logdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".perennial-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TrackingError(f"cannot write TensorBoard files to {path}: {e}; choose a writable directory") from None
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TrackingError(f"--tensorboard needs the tensorboard package; {INSTALL_HINT}") from None
    return path


def export_tensorboard(runs: Sequence[RunRecord], logdir: str | Path) -> list[Path]:
    """One event-file folder per run, ``logdir/<run_id>`` (earlier event files there are
    replaced): per-experience scalars at step ``i``, continual-evaluation curves at their
    training step, final metrics under ``final/``, the config as text."""
    root = check_tensorboard(logdir)
    paths = []
    for rec in runs:
        d = root / rec.run_id
        if d.is_dir():
            for old in d.glob("events.out.tfevents.*"):
                old.unlink()
        w = _summary_writer(d)
        try:
            for k, v, s in per_experience(rec):
                w.add_scalar(k, v, s)
            for k, v, s in curves(rec):
                w.add_scalar(k, v, s)
            last = max(len(rec.accuracy_matrix) - 1, 0)
            for k, v in final_metrics(rec).items():
                w.add_scalar(f"final/{k}", v, last)
            w.add_text("config", "```\n" + json.dumps(rec.config, indent=2, sort_keys=True) + "\n```", 0)
        finally:
            w.close()
        paths.append(d)
    return paths


# ------------------------------------------------------------------------- live trackers
class Tracker:
    """Exports each run to MLflow and/or TensorBoard as it finishes (``--mlflow``/``--tensorboard``).
    Built before any training, so a URI or folder that cannot be written fails first."""

    def __init__(self, mlflow: str | None = None, tensorboard: str | Path | None = None, experiment: str = "perennial"):
        self.mlflow, self.tensorboard, self.experiment = mlflow, tensorboard, experiment
        if mlflow is not None:
            check_mlflow(mlflow, experiment)
        if tensorboard is not None:
            check_tensorboard(tensorboard)

    def __call__(self, rec: RunRecord) -> None:
        if self.mlflow is not None:
            export_mlflow([rec], self.mlflow, self.experiment)
        if self.tensorboard is not None:
            export_tensorboard([rec], self.tensorboard)


def trackers(mlflow: str | None, tensorboard: str | Path | None, experiment: str = "perennial") -> Tracker | None:
    """A :class:`Tracker` when any destination is given (validated now), else None."""
    if mlflow is None and tensorboard is None:
        return None
    return Tracker(mlflow, tensorboard, experiment)
