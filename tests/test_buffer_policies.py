"""Buffer policies (issue 17): fifo, experience_balanced, gathering into a batch, and the
``buffer_policy`` choice (stream vs past experiences only) of the rehearsal strategies."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_stream
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.memory import Buffer
from perennial.models import build_model
from perennial.strategies import DER, ERACE, Batch, Replay
from perennial.strategies.rehearsal import append_stored
from perennial.train import Callback, TrainSettings, fit


def ids(n: int, start: int = 0, dim: int = 2) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, dim)


def test_fifo_keeps_the_newest_samples_in_a_ring():
    buf = Buffer(5, "fifo")
    for s in range(0, 13, 4):  # batches 0-3, 4-7, 8-11, 12
        n = min(4, 13 - s)
        buf.add(ids(n, s), torch.zeros(n, dtype=torch.long))
    assert len(buf) == 5 and buf.seen == 13
    assert sorted(buf.x[:, 0].long().tolist()) == [8, 9, 10, 11, 12]
    big = Buffer(3, "fifo")
    big.add(ids(10), torch.zeros(10, dtype=torch.long))  # a batch larger than the ring
    assert sorted(big.x[:, 0].long().tolist()) == [7, 8, 9]
    before = torch.Generator().manual_seed(0).get_state()
    assert torch.equal(Buffer(3, "fifo", seed=0).generator.get_state(), before)  # draws nothing


def test_experience_balanced_gives_every_experience_an_equal_random_share():
    buf = Buffer(30, "experience_balanced", seed=0)
    for e in range(3):
        for s in range(0, 120, 40):  # every experience has the same single class: balance by group
            buf.add(ids(40, 1000 * e + s), torch.zeros(40, dtype=torch.long), group=e)
    groups = (buf.x[:, 0] // 1000).long()
    assert torch.bincount(groups, minlength=3).tolist() == [10, 10, 10]
    within = buf.x[groups == 0, 0]
    assert float(within.max()) > 60  # a random subset of the experience, not its first samples
    with pytest.raises(ValueError, match="group"):
        buf.add(ids(2), torch.zeros(2, dtype=torch.long))


def test_state_round_trip_keeps_groups():
    a = Buffer(10, "experience_balanced", seed=3)
    for e in range(4):
        a.add(ids(8, 100 * e), torch.zeros(8, dtype=torch.long), group=e)
    b = Buffer(10, "experience_balanced", seed=99)
    b.load_state_dict(a.state_dict())
    a.add(ids(8, 900), torch.zeros(8, dtype=torch.long), group=9)
    b.add(ids(8, 900), torch.zeros(8, dtype=torch.long), group=9)
    assert torch.equal(a.x, b.x)


def test_storage_keeps_the_input_dtype_and_append_converts_to_the_batch():
    buf = Buffer(8, seed=0)
    x = torch.randint(0, 255, (6, 3), dtype=torch.uint8)
    buf.add(x, torch.arange(6))
    assert buf.data["x"].dtype == torch.uint8
    batch = Batch(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 2)
    out = append_stored(batch, buf, torch.tensor([5, 0, 5]))
    assert out.x.dtype == torch.float32 and out.n_new == 2 and len(out) == 5
    assert torch.equal(out.x[2:], x[[5, 0, 5]].float()) and out.y[2:].tolist() == [5, 0, 5]


class BufferSpy(Callback):
    """Records, at every step, the experiences the buffer's samples come from."""

    def __init__(self, strategy, stream):
        self.strategy, self.stream, self.seen = strategy, stream, []

    def on_step_end(self, ctx, batch, loss):
        b = self.strategy.buffer
        exp_of = {c: e.index for e in self.stream for c in e.classes}
        self.seen.append((ctx.exp_index, {exp_of[int(c)] for c in b.y.tolist()}))


@pytest.mark.parametrize("cls", [Replay, DER, ERACE])
def test_past_buffer_holds_only_earlier_experiences(cls):
    stream = tiny_stream(n_classes=6, per_exp=2)
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[16])
    strat = cls(buffer_size=30, buffer_policy="past", policy="experience_balanced")
    spy = BufferSpy(strat, stream)
    fit(model, stream, strat, TrainSettings(epochs=1, batch_size=16), callbacks=[spy])
    assert all(exps <= set(range(e)) for e, exps in spy.seen)  # never the current one
    assert {e for e, exps in spy.seen if exps == set(range(e))} == {0, 1, 2}  # all earlier ones
    assert torch.bincount(strat.buffer.get("y") // 2, minlength=3).tolist() == [10, 10, 10]
    stream_strat = cls(buffer_size=30)
    spy = BufferSpy(stream_strat, stream)
    fit(model, stream, stream_strat, TrainSettings(epochs=1, batch_size=16), callbacks=[spy])
    assert any(e in exps for e, exps in spy.seen)  # the default stream buffer includes the current one


def test_buffer_policy_is_validated():
    cfg = build_config({"strategy": {"name": "replay", "buffer_policy": "past", "policy": "fifo"}})
    assert cfg.strategy.params()["buffer_policy"] == "past"
    with pytest.raises(ConfigError, match="buffer_policy"):
        build_config({"strategy": {"name": "replay", "buffer_policy": "later"}})
    with pytest.raises(ConfigError, match="buffer_policy"):
        build_config({"strategy": {"name": "icarl", "buffer_policy": "stream"}})


def test_fifo_replay_holds_the_most_recent_steps():
    stream = tiny_stream(n_classes=6, per_exp=2)
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[16])
    strat = Replay(buffer_size=20, policy="fifo")
    fit(model, stream, strat, TrainSettings(epochs=2, batch_size=16), seed=0)
    assert len(strat.buffer) == 20
    assert set(strat.buffer.y.tolist()) <= set(stream.experiences[-1].classes)
