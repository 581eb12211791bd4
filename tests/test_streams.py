from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import make_blobs
from perennial.errors import DataError, ScenarioError, UnknownNameError
from perennial.streams import (
    BENCHMARKS,
    Split,
    build_benchmark,
    class_incremental,
    domain_incremental,
    from_experiences,
    from_npz_dir,
    permutation,
    rotation,
    split_by_class,
    task_incremental,
)
from perennial.streams.scenarios import class_groups


def data(n_classes=6):
    xtr, ytr = make_blobs(20, n_classes)
    xte, yte = make_blobs(5, n_classes, sample_seed=1)
    return xtr, ytr, xte, yte


def test_class_incremental_split():
    s = class_incremental(*data(), classes_per_exp=2)
    assert len(s) == 3 and s.scenario == "class" and s.n_classes == 6
    assert [e.classes for e in s] == [(0, 1), (2, 3), (4, 5)]
    for e in s:
        assert set(e.train.y.tolist()) == set(e.classes) and set(e.test.y.tolist()) == set(e.classes)
        assert len(e.train) == 40 and len(e.test) == 10
        assert e.task_id is None and bool((e.train.t == 0).all())


def test_task_incremental_has_task_ids_and_heads():
    s = task_incremental(*data(), classes_per_exp=3)
    assert s.task_classes == ((0, 1, 2), (3, 4, 5))
    assert [e.task_id for e in s] == [0, 1]
    assert bool((s[1].train.t == 1).all())


def test_domain_split_relabels_within_experience():
    s = split_by_class(*data(), classes_per_exp=2, scenario="domain")
    assert s.n_classes == 2
    for e in s:
        assert set(e.train.y.tolist()) == {0, 1}


def test_class_order_seed_is_deterministic_and_covers_all_classes():
    a = class_incremental(*data(), classes_per_exp=2, class_order_seed=3)
    b = class_incremental(*data(), classes_per_exp=2, class_order_seed=3)
    assert [e.classes for e in a] == [e.classes for e in b]
    assert sorted(c for e in a for c in e.classes) == list(range(6))


def test_uneven_sizes():
    s = class_incremental(*data(), classes_per_exp=[3, 1, 1, 1])
    assert [len(e.classes) for e in s] == [3, 1, 1, 1]
    with pytest.raises(DataError, match="sum to the number of classes"):
        class_incremental(*data(), classes_per_exp=[3, 1])
    with pytest.raises(DataError, match="evenly"):
        class_incremental(*data(), classes_per_exp=4)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.data())
def test_class_groups_partition(n, d):
    sizes = d.draw(st.lists(st.integers(1, 4), min_size=1, max_size=n).filter(lambda s: sum(s) == n) | st.just([n]))
    seed = d.draw(st.none() | st.integers(0, 100))
    groups = class_groups(range(n), sizes, class_order_seed=seed)
    assert [len(g) for g in groups] == sizes
    assert sorted(c for g in groups for c in g) == list(range(n))


def test_permuted_domain_stream():
    xtr, ytr, xte, yte = data()
    fs = [permutation(8, None), permutation(8, 1)]
    s = domain_incremental(xtr, ytr, xte, yte, fs)
    assert torch.equal(s[0].train.x, xtr)
    assert not torch.equal(s[1].train.x, xtr)
    assert torch.equal(s[1].train.x.sort(1).values, xtr.sort(1).values)  # a permutation of features
    assert torch.equal(s[1].train.y, ytr)


def test_rotation_keeps_shape():
    x = torch.rand(4, 1, 8, 8)
    assert rotation(90)(x).shape == x.shape
    with pytest.raises(DataError):
        rotation(10)(torch.rand(4, 64))


def test_validation_reports_every_problem():
    xtr, ytr, xte, yte = data()
    s = class_incremental(xtr, ytr, xte, yte, classes_per_exp=2)
    bad_x = s[0].train.x.clone()
    bad_x[0, 0] = float("nan")
    bad_y = s[1].train.y.clone()
    bad_y[0] = 99
    from dataclasses import replace

    exps = list(s.experiences)
    exps[0] = replace(exps[0], train=Split(bad_x, exps[0].train.y, exps[0].train.t))
    exps[1] = replace(exps[1], train=Split(exps[1].train.x, bad_y, exps[1].train.t))
    exps[2] = replace(exps[2], test=exps[2].test.subset(torch.zeros(0, dtype=torch.long)))
    broken = replace(s, experiences=tuple(exps))
    with pytest.raises(DataError) as e:
        broken.validate()
    msg = str(e.value)
    assert "3 problems" in msg and "NaN" in msg and ", 99]" in msg and "empty" in msg


def test_input_errors():
    xtr, ytr, xte, yte = data()
    with pytest.raises(DataError, match="must match"):
        class_incremental(xtr[:-1], ytr, xte, yte)
    with pytest.raises(DataError, match="NaN"):
        class_incremental(xtr, ytr.float().masked_fill(ytr == 0, float("nan")), xte, yte)
    with pytest.raises(DataError, match="shape"):
        class_incremental(xtr, ytr, xte[:, :4], yte)


def test_from_npz_dir(tmp_path):
    xtr, ytr, xte, yte = data()
    for i, cs in enumerate([(0, 1), (2, 3)]):
        m, mt = np.isin(ytr, cs), np.isin(yte, cs)
        np.savez(
            tmp_path / f"{i:02d}.npz",
            x_train=xtr[m].numpy(),
            y_train=ytr[m].numpy(),
            x_test=xte[mt].numpy(),
            y_test=yte[mt].numpy(),
        )
    s = from_npz_dir(tmp_path)
    assert s.scenario == "class" and len(s) == 2 and s[1].classes == (2, 3) and s.n_classes == 4
    assert s[0].name == "00"
    t = from_npz_dir(tmp_path, scenario="task")
    assert t.task_classes == ((0, 1), (2, 3))
    (tmp_path / "02.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"02\.npz is not an \.npz archive"):
        from_npz_dir(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        from_npz_dir(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.npz"):
        from_npz_dir(tmp_path / "empty")


def test_from_experiences_infers_domain_for_shared_labels():
    xtr, ytr, xte, yte = data(2)
    s = from_experiences([dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)] * 2)
    assert s.scenario == "domain"
    with pytest.raises(DataError, match="missing"):
        from_experiences([dict(x_train=xtr, y_train=ytr)])


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in BENCHMARKS.names()
        if not BENCHMARKS.get(n).needs_data and n not in ("mnist-c", "digits-c") and BENCHMARKS.get(n).kind != "lm"
    ],
)
def test_builtin_benchmarks_build_deterministically(name):
    a, b = build_benchmark(name), build_benchmark(name)
    assert len(a) == (10 if name == "rotating-digits" else 5)
    for ea, eb in zip(a, b, strict=True):
        assert torch.equal(ea.train.x, eb.train.x) and torch.equal(ea.test.y, eb.test.y)
    total_train = sum(len(e.train) for e in a)
    expected = {"split-mnist": 4000, "permuted-mnist": 5 * 4000, "split-digits": 1438, "split-mnist1d": 4000}
    expected["rotating-digits"] = 120 * 50  # 120 drifting segments of 50 images
    assert total_train == expected[name]


@pytest.mark.parametrize("name,n_train", [("mnist-c", 4000), ("digits-c", 1438)])
def test_tta_source_benchmarks_are_one_clean_experience(name, n_train):
    s = build_benchmark(name)
    assert len(s) == 1 and len(s[0].train) == n_train and s[0].classes == tuple(range(10))


def test_split_mnist_facts():
    s = build_benchmark("split-mnist")
    assert s.input_shape == (1, 28, 28)
    assert [e.classes for e in s] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(len(e.train) == 800 and len(e.test) == 200 for e in s)
    x = s[0].train.x
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # train and test images are disjoint
    tr = {tuple(r) for r in s[0].train.x.flatten(1)[:, 200:260].tolist()}
    te = {tuple(r) for r in s[0].test.x.flatten(1)[:, 200:260].tolist()}
    assert len(tr & te) <= 2


def test_npz_dir_benchmark(tmp_path):
    xtr, ytr, xte, yte = data()
    for i, cs in enumerate([(0, 1, 2), (3, 4, 5)]):
        m, mt = np.isin(ytr, cs), np.isin(yte, cs)
        np.savez(
            tmp_path / f"{i}.npz",
            x_train=xtr[m].numpy(),
            y_train=ytr[m].numpy(),
            x_test=xte[mt].numpy(),
            y_test=yte[mt].numpy(),
        )
    s = build_benchmark("npz-dir", path=str(tmp_path))
    assert s.scenario == "class" and [e.classes for e in s] == [(0, 1, 2), (3, 4, 5)]
    assert build_benchmark("npz-dir", "task", path=str(tmp_path)).scenario == "task"
    with pytest.raises(DataError, match=r"needs benchmark\.path"):
        build_benchmark("npz-dir")
    with pytest.raises(DataError, match="does not take path"):
        build_benchmark("split-digits", path=str(tmp_path))


def test_benchmark_errors():
    with pytest.raises(UnknownNameError, match="split-mnist"):
        build_benchmark("split-mnst")
    with pytest.raises(ScenarioError, match="supports"):
        build_benchmark("permuted-mnist", "class")
