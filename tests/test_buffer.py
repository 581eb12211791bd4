from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perennial.memory import Buffer, balanced_quota


def feed(buf: Buffer, labels: list[int], batch: int, dim: int = 3) -> torch.Tensor:
    """Offer samples whose features encode their sequence number; returns all labels offered."""
    y = torch.tensor(labels, dtype=torch.long)
    ids = torch.arange(len(y), dtype=torch.float32)
    x = ids[:, None].repeat(1, dim)
    for s in range(0, len(y), batch):
        buf.add(x[s : s + batch], y[s : s + batch])
    return y


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(1, 40),
    labels=st.lists(st.integers(0, 4), min_size=0, max_size=200),
    batch=st.integers(1, 33),
    policy=st.sampled_from(["reservoir", "class_balanced"]),
    seed=st.integers(0, 2**31),
)
def test_invariants(cap, labels, batch, policy, seed):
    buf = Buffer(cap, policy, seed=seed)
    y = feed(buf, labels, batch)
    assert len(buf) == min(cap, len(labels))
    assert buf.seen == len(labels)
    if len(buf):
        ids = buf.x[:, 0].long()
        assert len(set(ids.tolist())) == len(ids), "a sample is stored twice"
        assert torch.equal(y[ids], buf.y), "labels travel with their inputs"
        assert bool((buf.x == buf.x[:, :1]).all())
    if policy == "class_balanced" and len(labels) > cap:
        counts = torch.bincount(buf.y, minlength=5)
        offered = torch.bincount(y, minlength=5)
        want = balanced_quota(offered[offered > 0], cap)
        assert sorted(counts[offered > 0].tolist()) == sorted(want.tolist())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(0, 300))
def test_balanced_quota(counts, cap):
    c = torch.tensor(counts)
    q = balanced_quota(c, cap)
    assert int(q.sum()) == min(cap, int(c.sum()))
    assert bool((q <= c).all()) and bool((q >= 0).all())
    # balanced: a class below the maximum quota only when it has no more samples
    top = int(q.max()) if len(q) else 0
    for qi, ci in zip(q.tolist(), counts, strict=True):
        assert qi >= min(ci, top - 1)


def test_deterministic_and_state_round_trip(tmp_path):
    a, b = Buffer(50, "class_balanced", seed=7), Buffer(50, "class_balanced", seed=7)
    labels = [i % 5 for i in range(300)]
    feed(a, labels, 16)
    feed(b, labels, 16)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)

    path = tmp_path / "buf.pt"
    torch.save(a.state_dict(), path)
    c = Buffer(50, "class_balanced", seed=0)
    c.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(c.x, a.x)
    # the restored generator continues exactly where the original left off
    assert torch.equal(c.sample(8)["x"], a.sample(8)["x"])
    more = torch.arange(300, 340, dtype=torch.float32)[:, None].repeat(1, 3)
    a.add(more, torch.zeros(40, dtype=torch.long))
    c.add(more, torch.zeros(40, dtype=torch.long))
    assert torch.equal(a.x, c.x)


def test_reservoir_is_uniform_over_the_stream():
    # 1000 samples into 100 slots, repeated: each sample should be kept with probability 0.1
    hits = torch.zeros(1000)
    for seed in range(200):
        buf = Buffer(100, "reservoir", seed=seed)
        feed(buf, [0] * 1000, batch=37, dim=1)
        hits[buf.x[:, 0].long()] += 1
    p = hits / 200
    first, last = p[:500].mean(), p[500:].mean()
    assert abs(float(first) - 0.1) < 0.01 and abs(float(last) - 0.1) < 0.01
    assert float(p.std()) < 0.035  # binomial(200, 0.1) std of a proportion is ~0.021


def test_class_balanced_keeps_old_classes():
    buf = Buffer(60, "class_balanced", seed=0)
    feed(buf, [0] * 500 + [1] * 500 + [2] * 500, batch=50)
    assert torch.bincount(buf.y, minlength=3).tolist() == [20, 20, 20]
    res = Buffer(60, "reservoir", seed=0)
    feed(res, [0] * 100 + [1] * 100 + [2] * 1000, batch=50)
    assert torch.bincount(res.y, minlength=3)[2] > 40  # reservoir follows the stream's proportions


def test_sampling_and_extras():
    buf = Buffer(10, seed=1)
    assert buf.sample(4) == {}
    buf.add(torch.randn(6, 2), torch.arange(6), logits=torch.randn(6, 3))
    s = buf.sample(32)
    assert s["x"].shape == (32, 2) and s["logits"].shape == (32, 3)
    with pytest.raises(ValueError, match="same fields"):
        buf.add(torch.randn(2, 2), torch.arange(2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        Buffer(0)
    with pytest.raises(ValueError, match="policy"):
        Buffer(5, "lifo")  # type: ignore[arg-type]
