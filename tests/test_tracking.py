"""MLflow, TensorBoard and CSV export of stored runs (--mlflow, --tensorboard, perennial export)."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from perennial.cli import app
from perennial.store import RunStore
from perennial.tracking.exporters import metric_key

runner = CliRunner()
FAST = ["-b", "split-digits", "--set", "train.epochs=1", "--eval-every", "25", "-q"]


def invoke(*args: str):
    r = runner.invoke(app, list(args))
    assert "Traceback" not in r.output, r.output
    return r


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One finished run with continual evaluation, logged live to MLflow and TensorBoard."""
    root = tmp_path_factory.mktemp("track")
    uri = f"sqlite:///{root / 'ml.db'}"
    r = invoke(
        "run", *FAST, "-s", "replay", "--store", str(root / "s"), "--run-id", "r1",
        "--mlflow", uri, "--tensorboard", str(root / "tb"),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return root, uri, RunStore(root / "s").get("r1")


@pytest.mark.slow
def test_mlflow_search_runs_returns_the_run_with_its_metrics_and_curves(stored):
    mlflow = pytest.importorskip("mlflow")
    _, uri, rec = stored
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("perennial")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`perennial.run_id` = 'r1'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["metrics.acc"] == pytest.approx(rec.metrics["acc"])
    assert row["params.strategy.name"] == "replay"
    assert row["params.train.epochs"] == "1"
    rid = row["run_id"]
    # per-experience: one point per experience, the last equals the final average accuracy
    hist = client.get_metric_history(rid, "acc/avg_seen")
    assert [m.step for m in hist] == list(range(rec.n_experiences))
    assert hist[-1].value == pytest.approx(rec.metrics["acc"])
    # continual-evaluation curve of the first experience: every logged step, same values as the store
    name = rec.experience_names[0]
    curve = client.get_metric_history(rid, f"eval_acc/{metric_key(name)}")
    stored_curve = [(r.step, r.acc) for r in rec.eval_log if r.exp_eval == 0]
    got = sorted((m.step, m.value) for m in curve)
    assert [st for st, _ in got] == [st for st, _ in sorted(stored_curve)]
    assert [v for _, v in got] == pytest.approx([v for _, v in sorted(stored_curve)])
    arts = {a.path for a in client.list_artifacts(rid)}
    assert {"accuracy_matrix.csv", "loss_matrix.csv", "eval_log.csv", "summary.json", "report"} <= arts
    assert "report/report.html" in {a.path for a in client.list_artifacts(rid, "report")}


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_accuracy_curves(stored):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, rec = stored
    ea = EventAccumulator(str(root / "tb" / "r1"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert "acc/avg_seen" in tags and "final/acc" in tags
    avg = ea.Scalars("acc/avg_seen")
    assert [e.step for e in avg] == list(range(rec.n_experiences))
    assert avg[-1].value == pytest.approx(rec.metrics["acc"], abs=1e-6)
    evals = [t for t in tags if t.startswith("eval_acc/")]
    assert len(evals) == rec.n_experiences
    n0 = len([r for r in rec.eval_log if r.exp_eval == 0])
    assert any(len(ea.Scalars(t)) == n0 for t in evals)


@pytest.mark.slow
def test_export_after_the_fact_to_csv_and_mlflow(stored, tmp_path):
    root, _, rec = stored
    r = invoke("export", "r1", "--to", "csv", "--dest", str(tmp_path / "csv"), "--store", str(root / "s"))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "csv" / "runs.csv").open()))
    assert rows[0]["run_id"] == "r1" and float(rows[0]["acc"]) == pytest.approx(rec.metrics["acc"])
    matrix = list(csv.reader((tmp_path / "csv" / "r1" / "accuracy_matrix.csv").open()))
    assert len(matrix) == 2 + rec.n_experiences  # header, initial model, one row per experience
    assert json.loads((tmp_path / "csv" / "r1" / "summary.json").read_text())["run_id"] == "r1"
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for _ in range(2):  # exporting again replaces the earlier export
        r = invoke("export", "r1", "--to", "mlflow", "--dest", uri, "--store", str(root / "s"))
        assert r.exit_code == 0, r.output
    mlflow.set_tracking_uri(uri)
    assert len(mlflow.search_runs(experiment_names=["perennial"])) == 1


def test_unwritable_tracking_destinations_exit_2_before_training(tmp_path):
    pytest.importorskip("mlflow")
    store = tmp_path / "s"
    bad = [
        ["--mlflow", f"sqlite:///{tmp_path / 'missing' / 'x.db'}"],
        ["--mlflow", "http://127.0.0.1:9"],
        ["--tensorboard", "/proc/no-such-dir"],
    ]
    for args in bad:
        r = invoke("run", *FAST, "--store", str(store), *args)
        assert r.exit_code == 2, r.output
        assert "cannot" in r.output
    assert not RunStore(store).list()  # nothing started, nothing marked finished
    r = invoke("export", "nope", "--to", "csv", "--store", str(store))
    assert r.exit_code == 2
    r = invoke("export", "nope", "--to", "parquet", "--store", str(store))
    assert r.exit_code == 2 and "--to" in r.output
