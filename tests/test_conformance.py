"""The shared conformance suite: every registered strategy must pass every check here.

Parametrised over the registry, so a newly registered strategy is tested automatically.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from helpers import tiny_stream, tiny_text_stream
from perennial.models import build_model
from perennial.strategies import STRATEGIES, Batch, Context, Replay, Strategy, compose
from perennial.streams import Stream
from perennial.train import Callback, TrainSettings, fit

NAMES = STRATEGIES.names()
SETTINGS = TrainSettings(epochs=2, batch_size=16)
#: small hyperparameters so every method runs in a fraction of a second
SMALL: dict[str, dict[str, Any]] = {
    **{name: {"buffer_size": 24} for name in NAMES if "buffer_size" in STRATEGIES.get(name).model_fields},
    "slca": {"ca_samples": 16, "ca_epochs": 2},
}


def make(name: str) -> Strategy:
    return STRATEGIES.get(name)(**SMALL.get(name, {}))


def model_for(stream: Stream, seed: int = 0, strategy: Strategy | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    needs = {p.needs_model for p in strategy.parts()} - {None} if strategy is not None else set()
    if needs == {"icl"}:  # the in-context strategy needs its transformer
        return build_model(
            "icl", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, context=4, d_model=16
        )
    return build_model(
        "mlp", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, hidden=[16]
    )


def run(
    name_or_strategy: str | Strategy, stream: Stream, settings: TrainSettings = SETTINGS, seed: int = 0, callbacks=()
):
    strategy = make(name_or_strategy) if isinstance(name_or_strategy, str) else name_or_strategy
    model = model_for(stream, seed, strategy)
    result = fit(model, stream, strategy, settings, seed=seed, callbacks=callbacks)
    return model, strategy, result


def tensors_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    s = tiny_stream()
    m1, _, r1 = run(name, s)
    m2, _, r2 = run(name, s)
    assert r1.accuracy_matrix == r2.accuracy_matrix
    assert tensors_equal(m1.state_dict(), m2.state_dict())
    _, _, r3 = run(name, s, seed=1)
    assert r3.accuracy_matrix != r1.accuracy_matrix or r3.loss_matrix != r1.loss_matrix


@pytest.mark.parametrize("name", NAMES)
def test_zero_learning_rate_changes_nothing(name):
    s = tiny_stream()
    init = {k: v.clone() for k, v in model_for(s, strategy=make(name)).state_dict().items()}
    model, _, _ = run(name, s, TrainSettings(epochs=1, batch_size=16, lr=0.0))
    assert tensors_equal(init, model.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_learns_something(name):
    s = tiny_stream()
    _, _, r = run(name, s, TrainSettings(epochs=5, batch_size=16, lr=0.01))
    # every method must learn the experience it is trained on (joint: all of them at once)
    assert max(v for v in r.accuracy_matrix[0] if v is not None) > 0.8


class GrabState(Callback):
    """Saves the strategy state at the end of experience ``at`` through torch.save/load."""

    def __init__(self, strategy: Strategy, at: int):
        self.strategy, self.at, self.saved = strategy, at, None

    def on_experience_end(self, ctx: Context, acc: list[float], loss: list[float]) -> None:
        if ctx.exp_index == self.at:
            buf = io.BytesIO()
            torch.save(self.strategy.state_dict(), buf)
            buf.seek(0)
            self.saved = torch.load(buf, weights_only=True)  # no pickled code allowed


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip(name):
    s = tiny_stream()
    strategy = make(name)
    grab = GrabState(strategy, at=len(s) - 1)
    model, strategy, _ = run(strategy, s, callbacks=[grab])
    assert grab.saved is not None

    fresh = make(name)
    ctx = Context(model=model, stream=s, device=torch.device("cpu"), seed=123, batch_size=16)
    fresh.setup(ctx)
    fresh.load_state_dict(grab.saved)
    assert tensors_equal(fresh.state_dict(), strategy.state_dict())

    # the restored strategy behaves exactly like the original one
    ctx.experience = s[-1]
    x, y, t = s[-1].train.x[:8], s[-1].train.y[:8], s[-1].train.t[:8]
    b1 = strategy.prepare_batch(ctx, Batch(x, y, t, 8))
    b2 = fresh.prepare_batch(ctx, Batch(x, y, t, 8))
    assert torch.equal(b1.x, b2.x) and torch.equal(b1.y, b2.y)
    logits = model(b1.x, b1.t)
    base = torch.nn.functional.cross_entropy(logits, b1.y)
    assert torch.equal(strategy.loss(ctx, b1, logits, base), fresh.loss(ctx, b2, logits, base))
    p1, p2 = strategy.predict(ctx, x, t), fresh.predict(ctx, x, t)
    assert (p1 is None and p2 is None) or torch.equal(p1, p2)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "replay"])
def test_composes_with_replay(name):
    s = tiny_stream()
    combo = compose(make(name), Replay(buffer_size=24))
    _, _, r1 = run(combo, s)
    _, _, r2 = run(compose(make(name), Replay(buffer_size=24)), s)
    assert r1.accuracy_matrix == r2.accuracy_matrix
    assert all(0.0 <= a <= 1.0 for row in r1.accuracy_matrix for a in row if a is not None)


@pytest.mark.parametrize("name", NAMES)
def test_supported_scenarios_run(name):
    cls = STRATEGIES.get(name)
    for scenario in sorted(cls.scenarios):
        _, _, r = run(name, tiny_stream(scenario), TrainSettings(epochs=1, batch_size=32))
        assert len(r.accuracy_matrix) == 3


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unknown_hyperparameters(name):
    with pytest.raises(ValidationError):
        STRATEGIES.get(name)(definitely_not_a_parameter=1)


@pytest.mark.parametrize("name", NAMES)
def test_is_documented(name):
    cls = STRATEGIES.get(name)
    assert cls.summary, f"{name} needs a one-line summary"
    assert cls.__doc__ and len(cls.__doc__.strip()) > 40, f"{name} needs a docstring citing its method"


LM_NAMES = [n for n in NAMES if "lm" in STRATEGIES.get(n).kinds]


@pytest.mark.parametrize("name", LM_NAMES)
def test_language_model_streams(name):
    """Strategies declaring the "lm" kind run on token windows: deterministic, and they learn."""
    s = tiny_text_stream(n_domains=2)
    settings = TrainSettings(steps=8, batch_size=16, lr=1e-2, optimizer="adamw")
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("gpt", s.input_shape, s.n_classes, n_layer=1, d_model=16, n_head=2)
        results.append(fit(model, s, make(name), settings, seed=0))
    r = results[0]
    assert r.loss_matrix == results[1].loss_matrix
    assert r.loss_matrix[0][0] < r.random_init_loss[0] - 1.0  # far below ln 256


def test_lm_kind_declarations_are_known():
    for name in NAMES:
        assert STRATEGIES.get(name).kinds <= {"classification", "lm"}, name


ONLINE = TrainSettings(mode="online", boundaries="hidden", batch_size=8, iters_per_batch=2, label_delay=1, lr=0.01)


@pytest.mark.parametrize("name", [n for n in NAMES if STRATEGIES.get(n).online])
def test_online_with_hidden_boundaries(name):
    """Every online-capable strategy either runs a short hidden-boundary stream (deterministic,
    every incoming batch scored before training) or is refused with a message naming the
    boundary-free alternatives."""
    from perennial.errors import ConfigError

    s = tiny_stream()
    strategy = make(name)
    if strategy.needs_boundaries():
        with pytest.raises(ConfigError, match=r"boundary-free method .*replay"):
            run(strategy, s, ONLINE)
        return
    model1, _, r1 = run(name, s, ONLINE)
    model2, _, r2 = run(name, s, ONLINE)
    n_batches = sum(-(-len(e.train) // 8) for e in s)
    assert len(r1.online_log) == n_batches and r1.steps == (n_batches - 1) * 2
    assert r1.online_log == r2.online_log and tensors_equal(model1.state_dict(), model2.state_dict())
    assert all(0 <= row[1] <= row[2] and row[3] == row[3] for row in r1.online_log)
