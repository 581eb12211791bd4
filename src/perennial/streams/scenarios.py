"""Scenario builders: turn any labelled tensors into a continual-learning stream.

- :func:`split_by_class` cuts a dataset into experiences of disjoint classes and labels the
  stream class-, task- or domain-incremental (van de Ven et al., "Three types of incremental
  learning", 2022):

  * ``class``: one head over all classes, no task identity at test time;
  * ``task``: same splits, task identity given, one head per task (multi-head);
  * ``domain``: labels become the position within their experience (e.g. even/odd digit),
    one small head shared by every experience.

- :func:`domain_incremental` applies one transform per experience (pixel permutations,
  rotations, ...) to the whole dataset.
- :func:`from_experiences` builds a stream from per-experience arrays (e.g. a folder of
  ``.npz`` files, see :func:`from_npz_dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from perennial.errors import DataError
from perennial.streams.core import SCENARIOS, Experience, Scenario, Split, Stream

ArrayLike = Any  # numpy array, torch tensor or nested lists


def as_features(x: ArrayLike, what: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":  # strings, objects, complex, dates: not features
            raise DataError(f"{what} holds {arr.dtype} values; features must be real numbers (int or float)")
        x = arr.astype(np.float32) if arr.dtype.kind == "u" and arr.dtype.itemsize > 1 else arr
    t = torch.as_tensor(x)
    if t.ndim < 2:
        raise DataError(f"{what} must have shape (n_samples, features...), got shape {tuple(t.shape)}")
    return t.to(torch.float32).contiguous()


#: labels are class indices; more classes than this is a mistake (a 10**12 label would size the head)
MAX_CLASSES = 1_000_000


def as_labels(y: ArrayLike, what: str = "y") -> Tensor:
    if not isinstance(y, Tensor):
        arr = np.asarray(y)
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{what} holds {arr.dtype} values; labels must be integer class indices 0, 1, 2, ...")
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
            arr = arr.astype(np.float64)  # torch has no uint64: compare as floats below
        y = arr
    t = torch.as_tensor(y)
    if t.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class indices, got shape {tuple(t.shape)}")
    if torch.is_floating_point(t):
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{what} contains NaN or inf labels; labels must be integer class indices")
        if not bool((t == t.round()).all()):
            raise DataError(f"{what} contains non-integer labels; labels must be integer class indices")
    if t.numel() and float(t.max()) >= MAX_CLASSES:
        raise DataError(
            f"{what} holds the label {float(t.max()):.0f}; labels are class indices from 0 to {MAX_CLASSES - 1} "
            "(renumber your classes 0, 1, 2, ...)"
        )
    return t.to(torch.long)


def _check_pair(x: Tensor, y: Tensor, what: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]}; they must match")


def class_groups(
    classes: Sequence[int],
    classes_per_exp: int | Sequence[int],
    *,
    class_order_seed: int | None = None,
    first_classes: int | None = None,
    class_order: Sequence[int] | None = None,
) -> list[list[int]]:
    """Split ``classes`` into consecutive groups.

    ``classes_per_exp`` is one size for every experience or a list of sizes (e.g. ``[5, 1, 1,
    1, 1, 1]`` for a big first experience). ``first_classes=5`` is the same big first
    experience written as an alias: the first group gets 5 classes, the others
    ``classes_per_exp`` each. With ``class_order_seed`` the class order is shuffled
    deterministically first; ``class_order`` gives the order explicitly (a permutation of
    ``classes``); with neither the natural order is kept.
    """
    order = sorted(int(c) for c in classes)
    if class_order is not None:
        if class_order_seed is not None:
            raise DataError("give either class_order or class_order_seed, not both")
        if isinstance(class_order, str) or not all(isinstance(c, int) for c in class_order):
            raise DataError(
                f"class_order must be a list of class indices here, e.g. [3, 8, 1, ...]; got {class_order!r} "
                "(class names and files are for image benchmarks)"
            )
        given = [int(c) for c in class_order]
        if sorted(given) != order:
            missing = sorted(set(order) - set(given))
            extra = sorted({c for c in given if c not in order} | {c for c in given if given.count(c) > 1})
            raise DataError(
                f"class_order must be a permutation of the classes {order}; got {given}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown or repeated {extra})" if extra else "")
            )
        order = given
    if class_order_seed is not None:
        g = torch.Generator().manual_seed(int(class_order_seed))
        order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    if first_classes is not None:
        if not isinstance(classes_per_exp, int):
            raise DataError(
                "give either a list of experience sizes (classes_per_exp) or first_classes, not both; "
                f"e.g. classes_per_exp={[first_classes] + [1] * max(len(order) - first_classes, 0)}"
            )
        if not 1 <= first_classes < len(order):
            raise DataError(
                f"first_classes must be between 1 and {len(order) - 1} (there are {len(order)} classes), "
                f"got {first_classes}"
            )
        rest = len(order) - first_classes
        if classes_per_exp < 1 or rest % classes_per_exp:
            raise DataError(
                f"the {rest} classes after the first experience cannot be split evenly into experiences of "
                f"{classes_per_exp}; set classes_per_exp to a divisor of {rest} or pass a list of sizes"
            )
        classes_per_exp = [first_classes] + [classes_per_exp] * (rest // classes_per_exp)
    if isinstance(classes_per_exp, int):
        if classes_per_exp < 1:
            raise DataError(f"classes_per_exp must be >= 1, got {classes_per_exp}")
        if len(order) % classes_per_exp:
            raise DataError(
                f"{len(order)} classes cannot be split evenly into experiences of "
                f"{classes_per_exp}; pass a list of sizes that sums to {len(order)}"
            )
        sizes = [classes_per_exp] * (len(order) // classes_per_exp)
    else:
        sizes = [int(s) for s in classes_per_exp]
        if any(s < 1 for s in sizes) or sum(sizes) != len(order):
            raise DataError(f"experience sizes {sizes} must be >= 1 and sum to the number of classes ({len(order)})")
    groups, start = [], 0
    for s in sizes:
        groups.append(order[start : start + s])
        start += s
    return groups


def split_by_class(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    *,
    classes_per_exp: int | Sequence[int] = 2,
    scenario: Scenario = "class",
    class_order_seed: int | None = None,
    first_classes: int | None = None,
    name: str = "split",
    class_names: Sequence[str] | None = None,
    class_order: Sequence[int] | None = None,
) -> Stream:
    """Cut a labelled dataset into experiences of disjoint classes.

    Labels keep their original values in the ``class`` and ``task`` scenarios (the model has
    one output per class); in ``domain`` they become the position of the class inside its
    experience. ``first_classes`` gives the first experience that many classes (a "pre-train,
    then continue" stream); the others get ``classes_per_exp`` each.
    """
    if scenario not in SCENARIOS:
        raise DataError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    xtr, ytr = as_features(x_train, "x_train"), as_labels(y_train, "y_train")
    xte, yte = as_features(x_test, "x_test"), as_labels(y_test, "y_test")
    _check_pair(xtr, ytr, "train")
    _check_pair(xte, yte, "test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"train inputs have shape {tuple(xtr.shape[1:])} but test inputs {tuple(xte.shape[1:])}")
    if len(ytr) == 0:
        raise DataError("the training set is empty")
    if int(ytr.min()) < 0:
        raise DataError(f"labels must be >= 0, found {int(ytr.min())}")
    n_classes = int(max(int(ytr.max()), int(yte.max()) if len(yte) else 0)) + 1
    present = sorted(set(ytr.unique().tolist()))
    groups = class_groups(
        present,
        classes_per_exp,
        class_order_seed=class_order_seed,
        first_classes=first_classes,
        class_order=class_order,
    )
    if scenario == "domain" and len({len(g) for g in groups}) != 1:
        raise DataError("domain-incremental splits need the same number of classes in every experience")

    experiences = []
    for i, group in enumerate(groups):
        gt = torch.tensor(group)
        mtr, mte = torch.isin(ytr, gt), torch.isin(yte, gt)
        tr_y, te_y = ytr[mtr], yte[mte]
        if scenario == "domain":
            remap = torch.full((n_classes,), -1, dtype=torch.long)
            remap[gt] = torch.arange(len(group))
            tr_y, te_y = remap[tr_y], remap[te_y]
        task = i if scenario == "task" else 0
        label = "+".join(class_names[c] if class_names else str(c) for c in group)
        experiences.append(
            Experience(
                index=i,
                name=f"exp{i}[{label}]",
                train=Split.make(xtr[mtr], tr_y, task),
                test=Split.make(xte[mte], te_y, task),
                classes=tuple(range(len(group))) if scenario == "domain" else tuple(group),
                task_id=i if scenario == "task" else None,
            )
        )
    width = len(groups[0]) if scenario == "domain" else n_classes
    return Stream(
        name=name,
        scenario=scenario,
        experiences=tuple(experiences),
        n_classes=width,
        input_shape=tuple(xtr.shape[1:]),
        task_classes=tuple(tuple(g) for g in groups) if scenario == "task" else (),
        meta={"class_order": [c for g in groups for c in g]},
    )


def class_incremental(*args: Any, **kwargs: Any) -> Stream:
    """:func:`split_by_class` with ``scenario="class"``."""
    return split_by_class(*args, scenario="class", **kwargs)


def task_incremental(*args: Any, **kwargs: Any) -> Stream:
    """:func:`split_by_class` with ``scenario="task"`` (task id given, multi-head)."""
    return split_by_class(*args, scenario="task", **kwargs)


def domain_incremental(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    transforms: Sequence[Callable[[Tensor], Tensor]],
    *,
    name: str = "domain",
    names: Sequence[str] | None = None,
) -> Stream:
    """One experience per transform, each applied to the whole dataset (same labels)."""
    xtr, ytr = as_features(x_train, "x_train"), as_labels(y_train, "y_train")
    xte, yte = as_features(x_test, "x_test"), as_labels(y_test, "y_test")
    _check_pair(xtr, ytr, "train")
    _check_pair(xte, yte, "test")
    n_classes = int(max(int(ytr.max()), int(yte.max()))) + 1
    exps = []
    for i, f in enumerate(transforms):
        exps.append(
            Experience(
                index=i,
                name=names[i] if names else f"exp{i}",
                train=Split.make(f(xtr), ytr),
                test=Split.make(f(xte), yte),
                classes=tuple(sorted(set(ytr.tolist()))),
            )
        )
    return Stream(name, "domain", tuple(exps), n_classes, tuple(xtr.shape[1:]))


def permutation(n_features: int, seed: int | None) -> Callable[[Tensor], Tensor]:
    """A fixed random permutation of the flattened features (identity when ``seed`` is None)."""
    if seed is None:
        return lambda x: x
    perm = torch.randperm(n_features, generator=torch.Generator().manual_seed(seed))

    def apply(x: Tensor) -> Tensor:
        return x.flatten(1)[:, perm].reshape(x.shape)

    return apply


def rotation(degrees: float) -> Callable[[Tensor], Tensor]:
    """Rotate (N, C, H, W) images by ``degrees`` (bilinear, zero padding)."""
    import math

    def apply(x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise DataError(f"rotation needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        grid = torch.nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)

    return apply


def from_experiences(
    experiences: Sequence[dict[str, ArrayLike]],
    *,
    scenario: Scenario | None = None,
    name: str = "custom",
    names: Sequence[str] | None = None,
) -> Stream:
    """Build a stream from per-experience arrays.

    Each item is a mapping with ``x_train``, ``y_train``, ``x_test``, ``y_test``. The scenario
    defaults to ``class`` when the experiences' label sets are disjoint, else ``domain``.
    With ``task`` each experience is one task.
    """
    if not experiences:
        raise DataError("no experiences given")
    required = ("x_train", "y_train", "x_test", "y_test")
    parts = []
    for i, d in enumerate(experiences):
        missing = [k for k in required if k not in d]
        if missing:
            raise DataError(f"experience {i}: missing arrays {missing}; each needs {list(required)}")
        xtr, ytr = (
            as_features(d["x_train"], f"experience {i} x_train"),
            as_labels(d["y_train"], f"experience {i} y_train"),
        )
        xte, yte = as_features(d["x_test"], f"experience {i} x_test"), as_labels(d["y_test"], f"experience {i} y_test")
        _check_pair(xtr, ytr, f"experience {i} train")
        _check_pair(xte, yte, f"experience {i} test")
        parts.append((xtr, ytr, xte, yte))
    label_sets = [set(p[1].tolist()) | set(p[3].tolist()) for p in parts]
    if scenario is None:
        disjoint = all(not (a & b) for i, a in enumerate(label_sets) for b in label_sets[i + 1 :])
        scenario = "class" if disjoint else "domain"
    if scenario not in SCENARIOS:
        raise DataError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    n_classes = max((max(s) for s in label_sets if s), default=-1) + 1
    exps = []
    for i, (xtr, ytr, xte, yte) in enumerate(parts):
        task = i if scenario == "task" else 0
        exps.append(
            Experience(
                index=i,
                name=names[i] if names else f"exp{i}",
                train=Split.make(xtr, ytr, task),
                test=Split.make(xte, yte, task),
                classes=tuple(sorted(label_sets[i])),
                task_id=i if scenario == "task" else None,
            )
        )
    return Stream(
        name=name,
        scenario=scenario,
        experiences=tuple(exps),
        n_classes=n_classes,
        input_shape=tuple(parts[0][0].shape[1:]),
        task_classes=tuple(tuple(sorted(s)) for s in label_sets) if scenario == "task" else (),
    ).validate()


def from_npz_dir(path: str | Path, *, scenario: Scenario | None = None) -> Stream:
    """A folder of ``.npz`` files, one experience each, in file-name order.

    Each file holds ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass a folder of .npz files (one per experience)")
    from perennial.files import file_kind_problem, load_npz
    from perennial.resources import SHARE, human, machine_memory

    files = sorted(root.glob("*.npz"))  # names only: nothing is opened yet
    if not files:
        raise DataError(f"{root} holds no .npz files; put one file per experience there")
    bad = [p for p in (file_kind_problem(f) for f in files) if p]  # FIFOs, devices, symlink loops
    if bad:
        raise DataError(f"{root}: " + "; ".join(bad))
    budget = int(machine_memory() * SHARE)
    exps, total = [], 0
    for f in files:
        exps.append(load_npz(f, max_array_bytes=budget))  # shapes checked before numpy reads an array
        total += sum(a.nbytes for a in exps[-1].values())
        if total > budget:
            raise DataError(
                f"{root}: the .npz files hold more than {human(budget)} of arrays, more than fits in memory"
            )
    return from_experiences(exps, scenario=scenario, name=root.name, names=[f.stem for f in files])
