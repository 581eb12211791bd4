"""Image folders (decoded once into a uint8 cache, in memory or read from disk per batch), the
ResNet models, on-device augmentation and the DataLoader path with workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from perennial import api
from perennial.config import build_config
from perennial.errors import ConfigError, DataError
from perennial.models import build_model
from perennial.models.augment import Augmenter, crop_flip, random_resized_crop
from perennial.store import RunStore
from perennial.strategies import STRATEGIES
from perennial.streams import build_benchmark
from perennial.streams.images import image_folder, load_image_folder, write_image_folder
from perennial.streams.source import DiskImages
from perennial.train import Callback, TrainSettings, fit


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imgs") / "f", n_classes=4, per_class=12, size=8)


def build(folder: Path, tmp: Path, **kw):
    return image_folder(path=str(folder), cache_dir=str(tmp / "cache"), **kw)


def test_folder_builds_a_class_incremental_stream_of_uint8_images(folder, tmp_path):
    s = build(folder, tmp_path, classes_per_exp=2)
    assert s.n_classes == 4 and s.input_shape == (3, 8, 8) and len(s) == 2
    assert s[0].classes == (0, 1) and s[1].classes == (2, 3)
    assert s[0].train.x.dtype == torch.uint8 and isinstance(s[0].train.x, torch.Tensor)
    # seeded stratified split: 20% of 12 -> 2 test images per class, the rest train
    assert [len(e.train) for e in s] == [20, 20] and [len(e.test) for e in s] == [4, 4]
    assert s.meta["classes"] == ["class000", "class001", "class002", "class003"]


def test_second_build_reuses_the_cache_and_a_changed_folder_gets_a_new_one(tmp_path):
    f = write_image_folder(tmp_path / "f", 2, 4, size=8)
    c1 = load_image_folder(f, cache=tmp_path / "c")
    stamp = c1.x_path.stat().st_mtime_ns
    c2 = load_image_folder(f, cache=tmp_path / "c")
    assert c2.root == c1.root and c2.x_path.stat().st_mtime_ns == stamp  # not decoded again
    write_image_folder(tmp_path / "extra", 1, 1, size=8, seed=5)
    (tmp_path / "extra" / "class000" / "00000.png").rename(f / "class001" / "new.png")
    c3 = load_image_folder(f, cache=tmp_path / "c")
    assert c3.root != c1.root and len(c3) == len(c1) + 1


def test_disk_storage_reads_the_same_pixels_as_memory(folder, tmp_path):
    mem = build(folder, tmp_path, classes_per_exp=2, storage="memory")
    disk = build(folder, tmp_path, classes_per_exp=2, storage="disk")
    for a, b in zip(mem, disk, strict=True):
        assert isinstance(b.train.x, DiskImages)
        assert torch.equal(a.train.x, b.train.x.materialize()) and torch.equal(a.train.y, b.train.y)
        idx = torch.tensor([5, 0, 3, 4, 19])  # unsorted, with a run of consecutive rows
        assert torch.equal(a.train.x[idx], b.train.x[idx])
        assert torch.equal(a.test.x[1:3], b.test.x[1:3])


def test_train_and_test_subtrees_and_class_orders(tmp_path):
    f = write_image_folder(tmp_path / "f", 4, 5, size=8, split=True, test_per_class=2)
    s = image_folder(path=str(f), cache_dir=str(tmp_path / "c"), classes_per_exp=1)
    assert [len(e.train) for e in s] == [5] * 4 and [len(e.test) for e in s] == [2] * 4
    order = tmp_path / "order.txt"
    order.write_text("class003\nclass001\nclass000\nclass002\n")
    s2 = image_folder(path=str(f), cache_dir=str(tmp_path / "c"), classes_per_exp=2, class_order=str(order))
    assert [e.classes for e in s2] == [(3, 1), (0, 2)]
    s3 = image_folder(path=str(f), cache_dir=str(tmp_path / "c"), classes_per_exp=1, class_order_seed=1993)
    s4 = image_folder(path=str(f), cache_dir=str(tmp_path / "c"), classes_per_exp=1, class_order_seed=1993)
    assert [e.classes for e in s3] == [e.classes for e in s4] and sorted(c for e in s3 for c in e.classes) == [
        0,
        1,
        2,
        3,
    ]
    order.write_text("class003\nclass001\n")
    with pytest.raises(DataError, match="missing classes"):
        image_folder(path=str(f), cache_dir=str(tmp_path / "c"), class_order=str(order))


def test_bad_folders_give_one_clear_error(tmp_path):
    f = write_image_folder(tmp_path / "f", 2, 3, size=8)
    (f / "class000" / "notes.txt").write_text("hello")
    (f / "class001" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as e:
        load_image_folder(f, cache=tmp_path / "c")
    msg = str(e.value)
    assert "notes.txt: not an image file" in msg and "broken.png: cannot be read as an image" in msg
    (f / "class000" / "notes.txt").unlink()
    (f / "class001" / "broken.png").unlink()
    (f / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no images"):
        load_image_folder(f, cache=tmp_path / "c")
    (f / "empty").rmdir()
    write_image_folder(tmp_path / "big", 1, 1, size=12)
    (tmp_path / "big" / "class000" / "00000.png").rename(f / "class000" / "big.png")
    with pytest.raises(DataError, match=r"different sizes .*benchmark.image_size=N"):
        load_image_folder(f, cache=tmp_path / "c")
    c = load_image_folder(f, cache=tmp_path / "c", image_size=8)  # resized when decoded
    assert c.row_shape == (3, 8, 8) and len(c) == 7
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")


def test_cli_bad_folder_exits_2(tmp_path):
    from typer.testing import CliRunner

    from perennial.cli import app

    f = write_image_folder(tmp_path / "f", 2, 3, size=8)
    (f / "class000" / "x.csv").write_text("1,2")
    r = CliRunner().invoke(
        app,
        ["run", "-b", "image-folder", "--set", f"benchmark.path={f}", "--store", str(tmp_path / "s"), "--dry-run"],
        env={"PERENNIAL_CACHE": str(tmp_path)},
    )
    assert r.exit_code == 2 and "x.csv: not an image file" in r.output


def test_grayscale_folder_has_one_channel(tmp_path):
    f = write_image_folder(tmp_path / "g", 2, 3, size=8, channels=1)
    assert load_image_folder(f, cache=tmp_path / "c").row_shape == (1, 8, 8)


# ---------------------------------------------------------------- models and augmentation


def test_resnets_build_and_take_uint8_images():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for name, params, feats in [("resnet18-reduced", 1_094_000, 160), ("resnet32", 464_000, 64)]:
        m = build_model(name, (3, 32, 32), 10)
        n = sum(p.numel() for p in m.parameters())
        assert abs(n - params) / params < 0.05, (name, n)
        assert m(x).shape == (2, 10) and m.features(x).shape == (2, feats)
    with pytest.raises(ValueError, match=r"needs images of shape \(C, H, W\)"):
        build_model("resnet18-reduced", (8,), 3)
    multi = build_model("resnet18-reduced", (3, 8, 8), 4, task_classes=[[0, 1], [2, 3]], nf=4)
    out = multi(x[:, :, :8, :8], torch.tensor([0, 1]))
    assert (out[0, 2:] < -1e3).all() and (out[1, :2] < -1e3).all()  # multi-head masks on a resnet


def test_crop_flip_is_seeded_keeps_dtype_and_moves_pixels():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 8, 8)
    a = crop_flip(x, torch.Generator().manual_seed(3))
    b = crop_flip(x, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    outs = [crop_flip(x, torch.Generator().manual_seed(s)) for s in range(8)]
    assert sum(not torch.equal(o, x) for o in outs) >= 6
    flipped = crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):  # with no padding each image is itself or its mirror image
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    r = random_resized_crop(x, torch.Generator().manual_seed(0))
    assert r.dtype == torch.float32 and r.shape == x.shape and float(r.min()) >= 0 and float(r.max()) <= 1


def test_augmenter_reseeds_per_step_and_copies_fresh():
    import copy

    aug = Augmenter("cifar")
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    aug.reseed(7)
    a1, a2 = aug(x), aug(x)
    aug.reseed(7)
    assert torch.equal(aug(x), a1) and not torch.equal(a1, a2)
    assert copy.deepcopy(aug).recipe == "cifar"


# ---------------------------------------------------------------- training on folders


def _fit(stream, settings, strategy="naive", seed=0, callbacks=()):
    torch.manual_seed(seed)
    model = build_model("resnet18-reduced", stream.input_shape, stream.n_classes, nf=4)
    strat = STRATEGIES.get(strategy)(**({"buffer_size": 16} if strategy == "replay" else {}))
    return model, fit(model, stream, strat, settings, seed=seed, callbacks=callbacks)


def test_disk_with_workers_trains_exactly_like_memory(folder, tmp_path):
    s = TrainSettings(epochs=2, batch_size=8, lr=0.05, optimizer="sgd", augment="crop-flip")
    m1, r1 = _fit(build(folder, tmp_path, classes_per_exp=2, storage="memory"), s, "replay")
    m2, r2 = _fit(
        build(folder, tmp_path, classes_per_exp=2, storage="disk"), s.model_copy(update={"workers": 2}), "replay"
    )
    assert r1.accuracy_matrix == r2.accuracy_matrix and r1.loss_matrix == r2.loss_matrix
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_augmentation_needs_an_image_model(folder, tmp_path):
    stream = build(folder, tmp_path, classes_per_exp=2)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[8])
    with pytest.raises(ConfigError, match=r"train\.augment: needs an image model"):
        fit(model, stream, STRATEGIES.get("naive")(), TrainSettings(epochs=1, augment="cifar"))


class Killed(BaseException):
    pass


class KillAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, ctx, batch, loss):
        if self.step is not None and ctx.step == self.step:
            raise Killed


def test_on_disk_run_with_workers_resumes_bit_identical(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PERENNIAL_CACHE", str(tmp_path / "cache"))
    sets = [
        f"benchmark.path={folder}",
        "benchmark.classes_per_exp=2",
        "benchmark.storage=disk",
        "model.nf=4",
        "train.epochs=2",
        "train.batch_size=8",
        "train.workers=2",
        "strategy.buffer_size=16",
    ]
    cfg = build_config(benchmark="image-folder", strategy="replay", overrides=sets, checkpoint_every=3)
    store = RunStore(tmp_path / "store")
    whole = api.run(cfg, store=store, run_id="whole").summary()
    with pytest.raises(Killed):
        api.run(cfg, store=store, run_id="killed", callbacks=[KillAt(5)])
    resumed = api.resume(store, "killed", callbacks=[KillAt(None)]).summary()
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["loss_matrix"] == whole["loss_matrix"]


def test_config_sets_image_folder_options(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PERENNIAL_CACHE", str(tmp_path))
    cfg = build_config(benchmark="image-folder", overrides=[f"benchmark.path={folder}", "benchmark.storage=disk"])
    assert cfg.model.name == "resnet18-reduced" and cfg.train.augment == "crop-flip"
    stream = api.build_stream(cfg)
    assert stream.meta["on_disk"] and json.loads((Path(stream.meta["cache"]) / "meta.json").read_text())["files"] == 48
    with pytest.raises(DataError, match="storage must be one of"):
        build_benchmark("image-folder", path=str(folder), storage="ram")
    for name in ("split-cifar10", "imagenet-r"):  # the named protocols check the same options, before any data
        with pytest.raises(DataError, match="storage must be one of"):
            build_benchmark(name, path=str(folder), storage="ram")
        with pytest.raises(DataError, match="test_fraction must be in"):
            build_benchmark(name, path=str(folder), test_fraction=1.5)


def test_fingerprint_of_disk_split_does_not_read_it(folder, tmp_path, monkeypatch):
    from perennial.train.loop import fingerprint

    s = build(folder, tmp_path, classes_per_exp=2, storage="disk")
    monkeypatch.setattr(DiskImages, "read", lambda *a: (_ for _ in ()).throw(AssertionError("read")))
    assert fingerprint(s[0].train) == fingerprint(s[0].train) != fingerprint(s[1].train)
    assert np.isfinite(fingerprint(s[0].train)).all()


SMALL = {n: {"buffer_size": 12} for n in STRATEGIES.names() if "buffer_size" in STRATEGIES.get(n).model_fields}
SMALL["slca"] = {"ca_samples": 8, "ca_epochs": 1}


@pytest.fixture(scope="module")
def disk_stream(folder, tmp_path_factory):
    return build(folder, tmp_path_factory.mktemp("c"), classes_per_exp=2, storage="disk")


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_runs_on_resnet18_reduced_from_disk(name, disk_stream):
    """Conformance on real-shaped data: uint8 images read from disk, augmented, a ResNet."""
    torch.manual_seed(0)
    model = build_model("resnet18-reduced", disk_stream.input_shape, disk_stream.n_classes, nf=4)
    strategy = STRATEGIES.get(name)(**SMALL.get(name, {}))
    if STRATEGIES.get(name).needs_model is not None:  # e.g. in-context needs its own transformer: a clear error
        with pytest.raises(ConfigError, match="needs"):
            fit(model, disk_stream, strategy, TrainSettings(epochs=1, batch_size=8, augment="cifar"))
        return
    r = fit(model, disk_stream, strategy, TrainSettings(epochs=1, batch_size=8, augment="cifar"))
    assert len(r.accuracy_matrix) == 2 and all(np.isfinite(r.loss_matrix[-1]))
    buffer = getattr(strategy, "buffer", None)
    if buffer is not None and len(buffer):
        assert buffer.x.dtype == torch.uint8  # replay keeps images as uint8 (4x less than float32)


# ---------------------------------------------------------------- timm backbones


def _timm_usable() -> bool:
    from perennial.models.timm import import_timm

    try:
        import_timm()
    except ConfigError:
        return False
    return True


def test_timm_names_resolve_through_the_model_registry():
    from perennial.models import MODELS

    assert "timm:vit_small_patch16_224" in MODELS and "timm:" not in MODELS
    assert MODELS.get("timm:resnet50").params().model_dump()["pretrained"] is None
    with pytest.raises(ConfigError, match="timm:NAME"):
        MODELS.get("resnet19", field="model.name")  # the suggestions list the prefix form


@pytest.mark.skipif(_timm_usable(), reason="timm imports here: the error path is not reachable")
def test_timm_without_a_working_install_says_what_to_install():
    with pytest.raises(ConfigError, match=r"timm:NAME needs the package .*install"):
        build_model("timm:vit_tiny_patch16_224", (3, 16, 16), 4)


@pytest.mark.skipif(not _timm_usable(), reason="timm (with a torchvision that imports) is not installed")
def test_timm_vit_runs_through_fit_with_replay_and_simplecil(folder, tmp_path):
    stream = build(folder, tmp_path, classes_per_exp=2)
    with pytest.raises(ValueError, match="timm has no model"):
        build_model("timm:vit_tiny_patch16", stream.input_shape, stream.n_classes)
    for name in ("replay", "simplecil"):
        torch.manual_seed(0)
        model = build_model(
            "timm:vit_tiny_patch16_224", stream.input_shape, stream.n_classes, options={"patch_size": 4, "depth": 1}
        )
        strategy = STRATEGIES.get(name)(**({"buffer_size": 8} if name == "replay" else {}))
        r = fit(model, stream, strategy, TrainSettings(epochs=1, batch_size=8, augment="flip"))
        assert np.isfinite(r.loss_matrix[-1]).all()


# ---------------------------------------------------------------- named protocols


def _fake_cifar10(root: Path, per_batch: int = 20) -> Path:
    import pickle

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for n in names:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        (root / n).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def test_split_cifar10_reads_the_official_python_batches(tmp_path):
    import pickle

    root = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    s = build_benchmark("split-cifar10", path=str(root), cache_dir=str(tmp_path / "c"))
    assert len(s) == 5 and s.input_shape == (3, 32, 32) and s[0].classes == (0, 1)
    assert sum(len(e.train) for e in s) == 100 and sum(len(e.test) for e in s) == 20
    first = pickle.loads((root / "data_batch_1").read_bytes())[b"data"][0]
    assert torch.equal(s[0].train.x[0].flatten(), torch.from_numpy(first))  # row 0 of batch 1 is class 0


def test_split_cifar100_uses_the_pycil_class_order():
    from perennial.streams.protocols import pycil_order

    assert pycil_order()[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]  # iCaRL / PyCIL, seed 1993


def test_protocols_without_data_say_what_to_download(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from perennial.cli import app

    monkeypatch.delenv("PERENNIAL_DATA", raising=False)
    r = CliRunner().invoke(app, ["run", "-b", "split-cifar100", "--store", str(tmp_path), "--dry-run"])
    assert r.exit_code == 2 and "cifar-100-python.tar.gz" in r.output
    with pytest.raises(DataError, match=r"imagenet-r\.tar"):
        build_benchmark("imagenet-r", path=str(tmp_path / "missing"))
    lines = CliRunner().invoke(app, ["list", "benchmarks", "-v"]).output
    assert "split-cifar100" in lines and lines.count("needs local data") >= 6


def test_fp16_with_grad_scaler_and_channels_last_train_on_cpu(folder, tmp_path):
    stream = build(folder, tmp_path, classes_per_exp=2)
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.05, optimizer="sgd", precision="fp16", channels_last=True)
    model, r = _fit(stream, settings, "replay")
    assert np.isfinite(r.loss_matrix[-1]).all() and r.steps == 6
    assert model.body[1].stem[0].weight.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- Hugging Face datasets (local, pyarrow)


def _hf_parquet(path: Path, n: int = 24, size: int = 8) -> Path:
    import io as _io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    images, labels, domains = [], [], []
    for i in range(n):
        buf = _io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
        labels.append(i % 4)
        domains.append(["photo", "sketch"][(i // 4) % 2])
    pq.write_table(pa.table({"img": images, "label": labels, "style": domains}), path)
    return path


def test_hf_benchmark_reads_parquet_by_labels_and_by_domain(tmp_path):
    f = _hf_parquet(tmp_path / "train.parquet")
    s = build_benchmark("hf", dataset=str(f), input_column="img", classes_per_exp=2)
    assert s.scenario == "class" and len(s) == 2 and s.input_shape == (3, 8, 8) and s[0].train.x.dtype == torch.uint8
    d = build_benchmark("hf", dataset=str(f), input_column="img", domain_column="style")
    assert d.scenario == "domain" and [e.name for e in d] == ["exp0[photo]", "exp1[sketch]"]
    with pytest.raises(DataError, match=r"no column 'image_bytes' .*columns are img, label, style"):
        build_benchmark("hf", dataset=str(f), input_column="image_bytes")
    torch.manual_seed(0)
    model = build_model("resnet18-reduced", s.input_shape, s.n_classes, nf=4)
    assert np.isfinite(
        fit(model, s, STRATEGIES.get("naive")(), TrainSettings(epochs=1, batch_size=8)).loss_matrix
    ).all()


def test_hf_benchmark_reads_a_save_to_disk_folder(tmp_path):
    import pyarrow as pa

    root = tmp_path / "ds"
    for split, n in (("train", 16), ("test", 8)):
        (root / split).mkdir(parents=True)
        table = pa.table({"x": [[float(i), float(i % 4)] for i in range(n)], "label": [i % 4 for i in range(n)]})
        with pa.ipc.new_stream(str(root / split / "data-00000-of-00001.arrow"), table.schema) as w:
            w.write_table(table)
        (root / split / "state.json").write_text("{}")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    s = build_benchmark("hf", dataset=str(root), classes_per_exp=2)
    assert s.input_shape == (2,) and [len(e.train) for e in s] == [8, 8] and [len(e.test) for e in s] == [4, 4]
