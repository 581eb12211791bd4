"""Bad input as classes: numbers, memory, files, store damage, signals, threads, listing speed.

Every case ends in a typed error (CLI exit code 2) naming the problem, or a clean
interrupted run (exit code 130), never a traceback, a hang or a silent wrong answer.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from perennial import api
from perennial.cli import app
from perennial.config import SECTIONS, RunConfig, build_config
from perennial.errors import ConfigError, DataError, RunInterrupted, StoreError
from perennial.files import config_text, load_npz, nesting_depth
from perennial.models import MODELS
from perennial.resources import check_fits, machine_memory
from perennial.store import RunStore
from perennial.store.doctor import diagnose, rebuild
from perennial.strategies import STRATEGIES
from perennial.streams.scenarios import as_labels, from_npz_dir
from perennial.train import Callback
from perennial.validation import SEED_LIMIT, SIZE_LIMIT, _leaves, numeric_problems

runner = CliRunner()
SMALL = ["train.epochs=1", "train.batch_size=64"]


# ------------------------------------------------------------------ numbers, as a class
def _numeric_fields(model: type[BaseModel], prefix: str) -> list[tuple[str, str]]:
    """(dotted key, "int" | "float") of every numeric field of a model, nested models included."""
    out = []
    for name, f in model.model_fields.items():
        leaves = _leaves(f.annotation)
        if any(isinstance(x, type) and issubclass(x, BaseModel) for x in leaves):
            continue  # phases: covered by the list-of-models case below
        kinds = {x for x in leaves if x in (int, float)}
        if bool in leaves or not kinds:
            continue
        out.append((f"{prefix}.{name}" if prefix else name, "int" if kinds == {int} else "float"))
    return out


def every_numeric_key() -> list[tuple[str, str, str, str, dict]]:
    """(benchmark, strategy, key, kind, other settings) for every numeric field of every
    section, model and strategy."""
    cases = [("split-digits", "naive", k, kind, {}) for k, kind in _numeric_fields(RunConfig, "")]
    for sec, cls in SECTIONS.items():
        cases += [("split-digits", "naive", k, kind, {}) for k, kind in _numeric_fields(cls, sec)]
    for name, spec in MODELS.items():
        bench = "text-domains" if spec.kind == "lm" else "split-digits"
        cases += [
            (bench, "naive", k, kind, {"model": {"name": name}}) for k, kind in _numeric_fields(spec.params, "model")
        ]
    for name, cls in STRATEGIES.items():
        cases += [("split-digits", name, k, kind, {}) for k, kind in _numeric_fields(cls, "strategy")]
    return cases


NUMERIC = every_numeric_key()


def test_every_numeric_field_is_covered():
    """The class check reaches every numeric field: sections, all models, all strategies."""
    keys = {c[2] for c in NUMERIC}
    assert {"seed", "threads", "train.lr", "train.batch_size", "timescales.head_lr", "eval.budget"} <= keys
    assert {"strategy.buffer_size", "strategy.ewc_lambda", "strategy.temperature"} <= keys
    assert len(NUMERIC) > 60


@pytest.mark.parametrize("bad", ["true", "false", "Infinity", "-Infinity", "NaN", str(2**64), str(-(2**70)), "1e400"])
def test_bad_numbers_refused_for_every_numeric_field(bad):
    """Booleans, non-finite floats and integers too large are refused for *every* numeric field,
    naming the field, the value and the allowed range (one config per field, all checked)."""
    missed = []
    for bench, strat, key, kind, other in NUMERIC:
        if bad in (str(2**64), str(-(2**70))) and kind == "float":
            continue  # a finite float; too big only for integers
        extra = [f"model.name={other['model']['name']}"] if other else []
        try:
            build_config(benchmark=bench, strategy=strat, overrides=[*extra, f"{key}={bad}"])
        except ConfigError as e:
            msg = str(e)
            leaf = key.split(".")[-1]
            if leaf not in msg:
                missed.append(f"{key}={bad}: error does not name the field: {msg}")
            continue
        missed.append(f"{key}={bad}: accepted")
    assert not missed, "\n".join(missed[:20])


def test_messages_give_value_and_range():
    with pytest.raises(ConfigError) as e:
        build_config(benchmark="split-digits", strategy="replay", overrides=["strategy.buffer_size=true"])
    assert "strategy.buffer_size" in str(e.value) and "got true" in str(e.value) and "from 1 to" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_config(overrides=[f"seed={2**64}"])
    assert f"from 0 to {SEED_LIMIT}" in str(e.value) and str(2**64) in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["train.weight_decay=Infinity"])
    assert "train.weight_decay" in str(e.value) and "finite" in str(e.value) and "inf" in str(e.value)


def test_nested_values_are_checked():
    with pytest.raises(ConfigError, match=r"model.hidden.1"):
        build_config(overrides=["model.hidden=[64, true]"])
    with pytest.raises(ConfigError, match=r"train.phases.0.lr"):
        build_config(overrides=['train.phases=[{"lr": 1e999}]'])
    with pytest.raises(ConfigError, match=r"timescales.teachers.slow"):
        build_config(overrides=['timescales.teachers={"slow": Infinity}'])


def test_runs_that_train_nothing_are_refused():
    with pytest.raises(ConfigError, match="every learning-rate multiplier is 0"):
        build_config(overrides=["timescales.backbone_lr=0", "timescales.head_lr=0"])
    build_config(overrides=["timescales.backbone_lr=0"])  # a frozen backbone still trains the head
    with pytest.raises(ConfigError, match=r"train.warmup_steps.*longer than the 20 steps"):
        build_config(overrides=["train.steps=20", "train.warmup_steps=5000"])
    with pytest.raises(ConfigError, match=r"train.phases.1.warmup_steps"):
        build_config(overrides=["train.steps=20", 'train.phases=[{}, {"warmup_steps": 21}]'])
    build_config(overrides=["train.steps=20", "train.warmup_steps=20"])
    # a benchmark's default warm-up (text-domains: 15) with a short smoke run is allowed
    build_config(benchmark="text-domains", overrides=["train.steps=4"])


def test_sizes_the_data_cannot_give():
    with pytest.raises(ConfigError, match=r"benchmark.n_experiences.*10 classes.*got 11"):
        build_config(benchmark="split-mnist", overrides=["benchmark.n_experiences=11"])
    with pytest.raises(ConfigError, match=r"benchmark\.classes_per_exp"):
        build_config(benchmark="split-digits", overrides=["benchmark.classes_per_exp=[4, 4, 4]"])
    with pytest.raises(ConfigError, match=r"benchmark\.first_classes"):
        build_config(benchmark="split-digits", overrides=["benchmark.first_classes=12"])
    build_config(benchmark="split-mnist", overrides=["benchmark.n_experiences=10"])


NUMBERS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, SIZE_LIMIT, SIZE_LIMIT + 1, SEED_LIMIT, SEED_LIMIT + 1, 1e308, -0.0, 5e-324]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(NUMERIC), value=NUMBERS)
def test_fuzzed_numbers_are_valid_or_config_errors(case, value):
    """Any number in any numeric field: a config whose values are sane, or a ConfigError."""
    bench, strat, key, kind, other = case
    try:
        cfg = build_config(benchmark=bench, strategy=strat, overrides={**other, **_nest(key, value)})
    except ConfigError:
        return
    d = cfg.to_dict()
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    if d is None:  # a strategy/model parameter: read it back from the params
        return
    assert not isinstance(d, bool) or isinstance(value, bool)
    if isinstance(d, float):
        assert math.isfinite(d)
    if isinstance(d, int) and not isinstance(d, bool):
        assert abs(d) <= (SEED_LIMIT if kind == "int" else 2**1023)


def _nest(key: str, value: object) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(NUMERIC), value=NUMBERS)
def test_cli_fuzzed_numbers_exit_0_or_2(case, value):
    bench, strat, key, _, other = case
    extra = ["--set", f"model.name={other['model']['name']}"] if other else []
    text = json.dumps(value) if not (isinstance(value, float) and not math.isfinite(value)) else repr(value)
    text = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}.get(text, text)
    r = runner.invoke(app, ["run", "-b", bench, "-s", strat, *extra, "--set", f"{key}={text}", "--dry-run", "-q"])
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output


def test_numeric_problems_is_generic():
    class P(BaseModel):
        n: int = 1
        x: float | None = None
        xs: list[int] = []
        m: dict[str, float] = {}
        ok: bool = False

    assert numeric_problems(P, {"n": 1, "x": 0.5, "xs": [1, 2], "m": {"a": 1.0}, "ok": True}) == []
    found = numeric_problems(P, {"n": True, "x": math.inf, "xs": [1, 2**40], "m": {"a": math.nan}})
    assert [f for f, _ in found] == ["n", "x", "xs.1", "m.a"]


# ------------------------------------------------------------------ memory
def test_absurd_model_refused_with_estimate_and_machine_memory():
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["model.hidden=[1000000000, 1000000000]"])
    msg = str(e.value)
    assert "does not fit in memory" in msg and "PiB" in msg and "this machine has" in msg and "model" in msg


def test_absurd_buffer_and_permuted_stream_refused():
    with pytest.raises(ConfigError, match=r"strategy.buffer_size: a replay buffer of 1,000,000,000"):
        build_config(strategy="replay", overrides=["strategy.buffer_size=1000000000"])
    with pytest.raises(ConfigError, match="the benchmark's data"):
        build_config(benchmark="permuted-mnist", overrides=["benchmark.n_experiences=100000000"])


def test_memory_limit_env(monkeypatch):
    monkeypatch.setenv("PERENNIAL_MEMORY_LIMIT", "1M")
    assert machine_memory() == 2**20
    with pytest.raises(ConfigError, match=r"this machine has 1.0 MiB"):
        build_config(benchmark="split-mnist")  # an MLP of 400x400 needs more than 1 MiB
    monkeypatch.delenv("PERENNIAL_MEMORY_LIMIT")
    check_fits([("x", "x", 10)])


def test_dry_run_of_absurd_model_is_quick():
    import time

    t = time.perf_counter()
    r = runner.invoke(app, ["run", "-b", "split-mnist", "--set", "model.hidden=[100000, 100000, 100000]", "--dry-run"])
    assert r.exit_code == 2 and "does not fit in memory" in r.output
    assert time.perf_counter() - t < 30  # seconds, not minutes (generous for a loaded CI machine)


# ------------------------------------------------------------------ files
def _npz(path: Path, y=None, **over) -> None:
    arrays = {
        "x_train": np.zeros((6, 3), np.float32),
        "y_train": np.array([0, 1, 0, 1, 0, 1]) if y is None else y,
        "x_test": np.zeros((2, 3), np.float32),
        "y_test": np.array([0, 1]),
    }
    np.savez(path, **{**arrays, **over})


def test_special_files_in_data_folders(tmp_path):
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "0.npz")
    with pytest.raises(DataError, match="FIFO"):
        from_npz_dir(fifo)  # never opened: no hang
    loop = tmp_path / "loop"
    loop.mkdir()
    os.symlink("1.npz", loop / "1.npz")
    with pytest.raises(DataError, match="symlink loop"):
        from_npz_dir(loop)
    dev = tmp_path / "dev"
    dev.mkdir()
    os.symlink("/dev/null", dev / "0.npz")
    with pytest.raises(DataError, match=r"character device.*through a symlink"):
        from_npz_dir(dev)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    os.symlink(tmp_path / "nowhere.npz", dangling / "0.npz")
    with pytest.raises(DataError, match="does not exist"):
        from_npz_dir(dangling)


def test_damaged_archives(tmp_path):
    good = tmp_path / "good.npz"
    _npz(good)
    data = good.read_bytes()
    cases = {
        "empty": b"",
        "truncated": data[: len(data) * 2 // 3],
        "text": b"x_train,y_train\n1,2\n",
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(blob)
        with pytest.raises(DataError):
            load_npz(p, 2**30)
    # flip bits in the stored data: a CRC error, never garbage arrays
    flipped = bytearray(data)
    start = data.index(b"\x93NUMPY", 200) + 140  # inside the second array's data
    for i in range(start, start + 8):
        flipped[i] ^= 0x55
    p = tmp_path / "flipped.npz"
    p.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="damaged"):
        load_npz(p, 2**30)


def test_absurd_declared_array_size(tmp_path):
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3), np.float32))
    header = buf.getvalue().decode("latin1").replace("(3, 3)", "(10000000000000, 3)")
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", header.encode("latin1"))
    with pytest.raises(DataError, match=r"declares shape \(10000000000000, 3\)"):
        load_npz(p, 2**40)
    with pytest.raises(DataError, match="more than the limit"):
        load_npz(p, 2**20)


def test_string_huge_and_object_labels(tmp_path):
    with pytest.raises(DataError, match="labels must be integer"):
        as_labels(np.array(["cat", "dog"]), "y")
    with pytest.raises(DataError, match="holds the label 1000000000000"):
        as_labels(np.array([0, 10**12]), "y")
    with pytest.raises(DataError, match="holds the label"):
        as_labels(np.array([0, 2**64 - 1], dtype=np.uint64), "y")
    d = tmp_path / "d"
    d.mkdir()
    _npz(d / "0.npz", y=np.array(["a"] * 6))
    with pytest.raises(DataError, match="experience 0 y_train"):
        from_npz_dir(d)


def test_bad_config_files(tmp_path):
    cases = {
        "bin.toml": b"\x00\x01\x02binary\xff",
        "latin.toml": "seed = 1 # caf\xe9".encode("latin1"),
        "deep.json": b"[" * 50000 + b"]" * 50000,
        "deep.toml": b"a = " + b"[" * 3000 + b"]" * 3000,
        "huge.toml": b"# " + b"x" * (2 << 20),
        "nested.json": json.dumps({"train": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}})
        .encode()
        .replace(b"{}", json.dumps(_deep(30)).encode()),
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        r = runner.invoke(app, ["run", "-c", str(p), "--dry-run"])
        assert r.exit_code == 2, (name, r.output)
        assert "Traceback" not in r.output and "--config" in r.output
    os.mkfifo(tmp_path / "fifo.toml")
    r = runner.invoke(app, ["run", "-c", str(tmp_path / "fifo.toml"), "--dry-run"])
    assert r.exit_code == 2 and "FIFO" in r.output
    r = runner.invoke(app, ["run", "-c", "/dev/zero", "--dry-run"])
    assert r.exit_code == 2 and "character device" in r.output
    with pytest.raises(ConfigError):
        config_text(tmp_path)


def _deep(n: int) -> object:
    v: object = 1
    for _ in range(n):
        v = {"k": v}
    return v


def test_deep_set_values_and_depth():
    assert nesting_depth(_deep(5)) == 5 and nesting_depth([[[]]]) == 2
    r = runner.invoke(app, ["run", "--set", "train.lr=" + "[" * 5000 + "]" * 5000, "--dry-run"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = runner.invoke(app, ["run", "--set", "train.phases=" + json.dumps([_deep(40)]), "--dry-run"])
    assert r.exit_code == 2 and "nested deeper" in r.output


def test_text_folder_with_fifo_and_loops(tmp_path):
    from perennial.streams.text import text_domains

    for dom in ("a", "b"):
        (tmp_path / dom).mkdir()
        (tmp_path / dom / "doc.txt").write_text("hello world " * 600)
    os.symlink(tmp_path / "a", tmp_path / "a" / "self")  # a directory loop: not followed
    text_domains(path=str(tmp_path), context=8, max_bytes=1000, val_bytes=200)
    os.mkfifo(tmp_path / "b" / "pipe.txt")
    with pytest.raises(DataError, match="FIFO"):
        text_domains(path=str(tmp_path), context=8, max_bytes=1000, val_bytes=200)


# ------------------------------------------------------------------ store
def _small_run(store: RunStore, run_id: str, *extra: str, strategy: str = "naive") -> object:
    cfg = build_config(benchmark="split-digits", strategy=strategy, overrides=[*SMALL, *extra])
    return api.run(cfg, store=store, run_id=run_id)


def test_empty_or_truncated_database_next_to_checkpoints_is_damage(tmp_path):
    store = RunStore(tmp_path)
    ref = _small_run(store, "kept", "checkpoint.keep_after_finish=true")
    _small_run(store, "gone")
    db = tmp_path / "runs.sqlite"
    for wal in (tmp_path / "runs.sqlite-wal", tmp_path / "runs.sqlite-shm"):
        wal.unlink(missing_ok=True)
    whole = db.read_bytes()
    for blob in (b"", whole[: len(whole) // 2 + 100], b"garbage" * 50):
        db.write_bytes(blob)
        with pytest.raises(StoreError, match=r"damaged.*perennial doctor --store .* --rebuild"):
            RunStore(tmp_path).list()
        r = runner.invoke(app, ["runs", "--store", str(tmp_path)])
        assert r.exit_code == 2 and "no runs" not in r.output and "--rebuild" in r.output
        assert not diagnose(tmp_path).healthy
    r = runner.invoke(app, ["doctor", "--store", str(tmp_path), "--rebuild"])
    assert r.exit_code == 0, r.output
    assert "rebuilt run kept" in r.output
    rec = RunStore(tmp_path).get("kept")
    assert rec.status == "interrupted" and rec.accuracy_matrix == ref.accuracy_matrix
    assert list(tmp_path.glob("runs.sqlite.damaged-*"))
    done = api.resume(RunStore(tmp_path), "kept")
    assert done.status == "finished" and done.accuracy_matrix == ref.accuracy_matrix
    assert done.metrics["acc"] == ref.metrics["acc"]


def test_empty_database_alone_is_a_new_store(tmp_path):
    (tmp_path / "runs.sqlite").write_bytes(b"")
    assert RunStore(tmp_path).list() == []


def test_one_bad_row_never_takes_down_the_others(tmp_path):
    store = RunStore(tmp_path)
    _small_run(store, "good")
    _small_run(store, "bad")
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        con.execute("UPDATE runs SET config='{oops', created='yesterday' WHERE run_id='bad'")
    recs = {r.run_id: r for r in RunStore(tmp_path).list()}
    assert recs["bad"].status == "damaged" and recs["good"].status == "finished"
    r = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert r.exit_code == 0 and "damaged" in r.output and "good" in r.output
    r = runner.invoke(app, ["show", "good", "--store", str(tmp_path)])
    assert r.exit_code == 0
    r = runner.invoke(app, ["show", "bad", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "other runs are unaffected" in r.output
    r = runner.invoke(app, ["doctor", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "run 'bad': damaged row" in r.output
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        con.execute("UPDATE results SET acc='x' WHERE run_id='bad'")
        con.execute("UPDATE runs SET config='{}', created=1.0 WHERE run_id='bad'")
    with pytest.raises(StoreError, match="malformed result rows"):
        RunStore(tmp_path).get("bad")
    assert RunStore(tmp_path).get("good").status == "finished"


def test_doctor_checks_checksums(tmp_path):
    store = RunStore(tmp_path)
    _small_run(store, "k", "checkpoint.keep_after_finish=true")
    assert diagnose(tmp_path).healthy
    r = runner.invoke(app, ["doctor", "--store", str(tmp_path), "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.output)["healthy"] is True
    ck = sorted((tmp_path / "checkpoints" / "k").glob("*.pt"))[-1]
    blob = bytearray(ck.read_bytes())
    blob[len(blob) // 2] ^= 1
    ck.write_bytes(bytes(blob))
    d = diagnose(tmp_path)
    assert not d.healthy and any("checksum mismatch" in p for p in d.problems)
    assert rebuild(tmp_path) == ([], [])  # a sound database is kept as it is


# ------------------------------------------------------------------ signals
class SignalAt(Callback):
    """Sends SIGTERM to this process when the last experience's evaluation is done."""

    def __init__(self, n: int):
        self.n = n

    def on_experience_end(self, ctx, acc, loss) -> None:
        if ctx.exp_index == self.n - 1:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_signal_during_final_evaluation_is_not_ignored(tmp_path):
    store = RunStore(tmp_path)
    cfg = build_config(benchmark="split-digits", strategy="replay", overrides=SMALL)
    ref = api.run(cfg, store=store, run_id="ref")
    with pytest.raises(RunInterrupted, match="after the final evaluation"):
        api.run(cfg, store=store, run_id="late", callbacks=[SignalAt(5)])
    assert store.get("late").status == "interrupted"
    done = api.resume(store, "late", callbacks=[SignalAt(99)])  # the same callbacks as the run
    assert done.status == "finished" and done.accuracy_matrix == ref.accuracy_matrix
    assert done.metrics["acc"] == ref.metrics["acc"]


def test_resume_hint_only_for_resumable_runs(tmp_path):
    r = runner.invoke(app, ["run", "-b", "split-digits", "--dry-run", "--store", str(tmp_path)])
    assert "perennial resume" not in r.output
    r = runner.invoke(app, ["run", "-b", "npz-dir", "--set", f"benchmark.path={tmp_path}", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "perennial resume" not in r.output


def test_saved_summary_for_messages(tmp_path):
    from perennial.cli import _saved

    assert _saved((tmp_path, "x")) == (None, None)  # no store: nothing saved, nothing to resume
    store = RunStore(tmp_path)
    cfg = build_config(benchmark="split-digits", overrides=SMALL)
    with pytest.raises(RunInterrupted):
        api.run(cfg, store=store, run_id="r", callbacks=[SignalAt(2)])
    what, hint = _saved((tmp_path, "r"))
    assert "2 of 5 experiences measured" in what and "checkpoint" in what
    assert hint == f"perennial resume r --store {tmp_path}"
    api.resume(store, "r", callbacks=[SignalAt(99)])
    assert _saved((tmp_path, "r"))[1] is None  # finished: nothing to resume


# ------------------------------------------------------------------ threads, listing
def test_threads_option_and_key(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        cfg = build_config(benchmark="split-digits", overrides=[*SMALL, "threads=1"])
        assert cfg.threads == 1
        assert cfg.fingerprint() == build_config(benchmark="split-digits", overrides=SMALL).fingerprint()
        api.run(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    r = runner.invoke(app, ["run", "--threads", "0", "--dry-run"])
    assert r.exit_code == 2


def test_list_is_cached_and_equal(tmp_path, monkeypatch):
    monkeypatch.setenv("PERENNIAL_CACHE_DIR", str(tmp_path))
    first = runner.invoke(app, ["list", "strategies", "-v"])
    assert first.exit_code == 0 and list(tmp_path.glob("list-strategies-v-*.json"))
    second = runner.invoke(app, ["list", "strategies", "-v"])
    assert second.output == first.output and "replay" in second.output
    monkeypatch.setenv("PERENNIAL_CACHE_DIR", "off")
    assert runner.invoke(app, ["list", "strategies", "-v"]).output == first.output


def test_list_does_not_import_torch_when_cached(tmp_path):
    import subprocess

    env = dict(os.environ, PERENNIAL_CACHE_DIR=str(tmp_path))
    code = "import sys; from perennial.cli import app; sys.argv=['perennial','list','models']\ntry:\n app()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout


def test_non_numeric_features(tmp_path):
    from perennial.streams.scenarios import as_features

    for bad in (np.array([["a", "b"]] * 3), np.zeros((3, 2), np.complex64), np.array([[None, 1]] * 3, dtype=object)):
        with pytest.raises(DataError, match="features must be real numbers"):
            as_features(bad, "x_train")
    assert as_features(np.ones((3, 2), np.uint16)).dtype.is_floating_point


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=3000), suffix=st.sampled_from([".toml", ".json"]))
def test_random_bytes_as_config_file(tmp_path_factory, blob, suffix):
    p = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    p.write_bytes(blob)
    r = runner.invoke(app, ["run", "-c", str(p), "--dry-run", "-q"])
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_to_npz_is_a_data_error(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("npz")
    _npz(d / "0.npz")
    blob = bytearray((d / "0.npz").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    (d / "0.npz").write_bytes(bytes(blob[:cut]))
    try:
        from_npz_dir(d)  # a flip may land in padding: then the data are intact
    except DataError:
        pass


def test_other_paths_are_never_opened_blindly(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    r = runner.invoke(app, ["run", "--set", f"model.init={tmp_path / 'pipe'}", "--dry-run"])
    assert r.exit_code == 2 and "model.init" in r.output and "FIFO" in r.output
    r = runner.invoke(app, ["report", "--from", str(tmp_path / "pipe"), "--store", str(tmp_path / "s")])
    assert r.exit_code == 2 and "FIFO" in r.output
    os.symlink("runs.sqlite", tmp_path / "runs.sqlite")  # a store whose database is a symlink loop
    r = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "symlink loop" in r.output


def test_internal_error_says_what_was_saved(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ValueError("boom")

    monkeypatch.setattr(api, "_metrics", broken)  # fails after every experience was measured
    args = ["run", "-b", "split-digits", "--set", "train.epochs=1", "--store", str(tmp_path), "--run-id", "x", "-q"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert "internal error: ValueError: boom" in r.output
    assert "saved: run x (failed)" in r.output and "5 of 5 experiences measured" in r.output
    assert f"continue with: perennial resume x --store {tmp_path}" in r.output
    r = runner.invoke(app, ["run", "-b", "split-digits", "--dry-run", "--store", str(tmp_path / "new")])
    assert "continue with" not in r.output and not (tmp_path / "new").exists()
