"""Random and malformed configs never end in a traceback: the CLI answers with a clear error
(exit code 2) or, for a config that happens to be valid, a successful dry run (exit code 0)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from perennial.cli import app

runner = CliRunner()

KEYS = [
    "seed",
    "benchmark",
    "benchmark.name",
    "benchmark.scenario",
    "benchmark.classes_per_exp",
    "benchmark.class_order_seed",
    "benchmark.n_experiences",
    "benchmark.path",
    "model",
    "model.name",
    "model.hidden",
    "model.dropout",
    "model.channels",
    "strategy",
    "strategy.name",
    "strategy.buffer_size",
    "strategy.policy",
    "strategy.ewc_lambda",
    "strategy.alpha",
    "strategy.temperature",
    "train",
    "train.epochs",
    "train.steps",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "train.schedule",
    "train.grad_clip",
    "train.device",
    "train.precision",
    "checkpoint.every",
    "checkpoint.keep",
    "nonsense",
    "train.nonsense",
    "strategy.replay.buffer_size",
    "a.b.c.d",
]
VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "true",
            "null",
            "[]",
            "[0]",
            "[5,1,1,1,1,1]",
            "[400, 400]",
            "{}",
            '{"a": 1}',
            "nan",
            "inf",
            "-1",
            "0",
            "1e309",
            "split-mnist",
            "replay+ewc",
            "replay+",
            "+",
            "class",
            "task",
            "domain",
            "cnn",
            "mlp",
            "adam",
            "sgd",
            "cuda:0",
            "cuda:x",
            "bf16",
            "",
            "=",
            "''",
            "[[1]]",
            "ewc+ewc",
        ]
    ),
    st.text(max_size=12),
)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDE, max_size=5), st.sampled_from([None, "naive", "replay", "replay+ewc", "lwf", "bogus"]))
def test_random_overrides_never_crash(tmp_path_factory, overrides, strategy):
    args = ["run", "--dry-run", "--store", str(tmp_path_factory.mktemp("s")), "-b", "split-digits"]
    if strategy:
        args += ["-s", strategy]
    for o in overrides:
        args += ["--set", o]
    r = runner.invoke(app, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert r.exit_code in (0, 2), (r.exit_code, r.output)
    if r.exit_code == 2:
        assert r.output.strip(), "an error must say what is wrong"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200).map(str.encode),
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from([*KEYS, "train", "strategy"]), VALUES, max_size=4).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_random_config_files_never_crash(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("c")
    for name in ("c.toml", "c.json"):
        path = d / name
        path.write_bytes(data)
        r = runner.invoke(app, ["run", "--dry-run", "--config", str(path), "--store", str(d), "-b", "split-digits"])
        assert "Traceback" not in r.output
        assert r.exit_code in (0, 2), (r.exit_code, r.output, repr(r.exception))
