"""``benchmark.name=hf``: Hugging Face datasets (local, offline) as class- or domain-incremental streams.

``benchmark.dataset`` is one of:

- a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``: ``state.json`` + Arrow
  files; or a ``DatasetDict``: ``dataset_dict.json`` + one such folder per split),
- a Parquet file, or a folder of Parquet files (``train*.parquet`` / ``test*.parquet``, or
  ``train/`` and ``test/`` sub-folders of them),
- a hub id, when the ``datasets`` package is installed and the machine is online.

They are read with ``pyarrow`` (no ``datasets`` needed for local data). ``input_column``
holds images (Hugging Face's ``{"bytes", "path"}`` image structs, decoded with Pillow into
uint8 (C, H, W)) or numeric feature vectors; ``label_column`` integer labels. Experiences
split the label set (``classes_per_exp``, class orders as for image folders), or, with
``domain_column``, one experience per value of that column in sorted order (domain-incremental:
every experience has the same classes). Without a test split, a seeded stratified split
(``test_fraction``) is made.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.errors import DataError
from perennial.streams.core import Experience, Scenario, Split, Stream
from perennial.streams.datasets import stratified_split
from perennial.streams.images import stream_from_splits
from perennial.streams.scenarios import class_groups


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise DataError(
            "benchmark hf needs the package 'pyarrow' to read local datasets: pip install pyarrow"
        ) from None
    return pa


def _arrow_folder(d: Path) -> Any:
    pa = _pa()
    files = sorted(d.glob("*.arrow"))
    if not files:
        raise DataError(f"{d} has no .arrow files; is it a folder written by save_to_disk?")
    tables = []
    for f in files:
        with pa.memory_map(str(f)) as src:
            try:
                tables.append(pa.ipc.open_stream(src).read_all())
            except pa.ArrowInvalid:
                tables.append(pa.ipc.open_file(src).read_all())
    return pa.concat_tables(tables)


def _parquet(paths: Sequence[Path]) -> Any:
    pa = _pa()
    return pa.concat_tables([pa.parquet.read_table(str(p)) for p in paths])


def read_splits(dataset: str) -> dict[str, Any]:
    """``{"train": table, "test": table (optional)}`` of a local dataset, or from the hub."""
    p = Path(dataset).expanduser()
    if not p.exists():
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"benchmark.dataset {dataset!r} is not a local path; give a save_to_disk folder or Parquet files, "
                "or install 'datasets' (and be online) to load it from the hub"
            ) from None
        try:
            dd = datasets.load_dataset(dataset)
        except Exception as e:
            raise DataError(f"cannot load {dataset!r} from the hub: {str(e).splitlines()[0]}") from None
        return {k: v.data.table for k, v in dd.items()}
    if p.is_file() and p.suffix == ".parquet":
        return {"train": _parquet([p])}
    if (p / "dataset_dict.json").is_file():
        names = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
        return {n: _arrow_folder(p / n) for n in names}
    if (p / "state.json").is_file():
        return {"train": _arrow_folder(p)}
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        files = sorted(p.glob(f"{split}*.parquet")) or sorted((p / split).glob("*.parquet"))
        if files:
            out[split] = _parquet(files)
    if not out:
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise DataError(
                f"{p} holds no dataset: expected a save_to_disk folder (state.json or dataset_dict.json) or .parquet files"
            )
        out["train"] = _parquet(files)
    return out


def _column(table: Any, name: str, what: str) -> Any:
    if name not in table.column_names:
        raise DataError(
            f"the dataset has no column {name!r} ({what}); its columns are {', '.join(table.column_names)}; "
            f"set benchmark.{what}=NAME"
        )
    return table.column(name)


def _inputs(col: Any, image_size: int | None) -> torch.Tensor:
    values = col.to_pylist()
    first = values[0] if values else None
    if isinstance(first, dict) and "bytes" in first:
        from PIL import Image

        arrays = []
        for i, v in enumerate(values):
            try:
                with Image.open(io.BytesIO(v["bytes"])) as im:
                    im = im.convert("RGB")
                    if image_size is not None and im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except OSError as e:
                raise DataError(f"row {i} of the input column is not a readable image ({e})") from None
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"images have different sizes {sorted(shapes)[:4]}; set benchmark.image_size=N to resize")
        return torch.from_numpy(np.stack(arrays))
    try:
        return torch.as_tensor(np.asarray(values, dtype=np.float32))
    except (TypeError, ValueError):
        raise DataError("the input column must hold images or numeric vectors of one length") from None


def hf_dataset(
    scenario: Scenario | None = None,
    dataset: str | None = None,
    input_column: str | None = None,
    label_column: str | None = None,
    domain_column: str | None = None,
    classes_per_exp: int | Sequence[int] | None = None,
    class_order_seed: int | None = None,
    n_experiences: int | None = None,
    first_classes: int | None = None,
    test_fraction: float | None = None,
    image_size: int | None = None,
) -> Stream:
    if not dataset:
        raise DataError("benchmark hf needs benchmark.dataset: a save_to_disk folder, Parquet files or a hub id")
    tables = read_splits(dataset)
    train_t = tables["train"]
    test_t = tables.get("test") or tables.get("validation")
    in_col = input_column or next((c for c in ("image", "img", "x", "features") if c in train_t.column_names), "image")
    lab_col = label_column or "label"

    def split_of(t: Any) -> tuple[torch.Tensor, torch.Tensor, list[Any] | None]:
        x = _inputs(_column(t, in_col, "input_column"), image_size)
        y = torch.as_tensor(np.asarray(_column(t, lab_col, "label_column").to_pylist(), dtype=np.int64))
        d = _column(t, domain_column, "domain_column").to_pylist() if domain_column else None
        return x, y, d

    xtr, ytr, dtr = split_of(train_t)
    if test_t is not None:
        xte, yte, dte = split_of(test_t)
    else:
        tr, te = stratified_split(ytr.numpy(), 0.2 if test_fraction is None else test_fraction, seed=0)
        xte, yte, dte = xtr[te], ytr[te], [dtr[i] for i in te] if dtr is not None else None
        xtr, ytr, dtr = xtr[tr], ytr[tr], [dtr[i] for i in tr] if dtr is not None else None
    n_classes = int(max(int(ytr.max()), int(yte.max()))) + 1
    zeros = torch.zeros
    if domain_column:
        if scenario not in (None, "domain"):
            raise DataError(f"benchmark.domain_column makes a domain-incremental stream; drop scenario {scenario!r}")
        assert dtr is not None and dte is not None
        domains = sorted(set(dtr), key=str)
        exps = []
        for i, dom in enumerate(domains):
            mtr = torch.tensor([v == dom for v in dtr])
            mte = torch.tensor([v == dom for v in dte])
            if not bool(mte.any()):
                raise DataError(f"domain {dom!r} has no test rows; give a test split with every domain")
            exps.append(
                Experience(
                    index=i,
                    name=f"exp{i}[{dom}]",
                    train=Split(xtr[mtr], ytr[mtr], zeros(int(mtr.sum()), dtype=torch.long)),
                    test=Split(xte[mte], yte[mte], zeros(int(mte.sum()), dtype=torch.long)),
                    classes=tuple(range(n_classes)),
                )
            )
        return Stream(
            name="hf",
            scenario="domain",
            experiences=tuple(exps),
            n_classes=n_classes,
            input_shape=tuple(xtr.shape[1:]),
            meta={"domains": [str(d) for d in domains], "dataset": dataset},
        )
    if classes_per_exp is None:
        classes_per_exp = max(1, n_classes // n_experiences) if n_experiences else (1 if first_classes else 2)
    groups = class_groups(
        sorted(set(ytr.tolist())), classes_per_exp, class_order_seed=class_order_seed, first_classes=first_classes
    )
    train = Split(xtr, ytr, zeros(len(ytr), dtype=torch.long))
    test = Split(xte, yte, zeros(len(yte), dtype=torch.long))
    return stream_from_splits(
        train, test, groups, n_classes, scenario=scenario or "class", name="hf", meta={"dataset": dataset}
    )
