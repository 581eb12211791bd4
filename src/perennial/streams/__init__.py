"""Streams: experiences, scenario builders and the built-in benchmarks."""

from perennial.streams.benchmarks import BENCHMARKS, Benchmark, build_benchmark
from perennial.streams.core import SCENARIOS, Experience, Scenario, Split, Stream
from perennial.streams.scenarios import (
    class_incremental,
    domain_incremental,
    from_experiences,
    from_npz_dir,
    permutation,
    rotation,
    split_by_class,
    task_incremental,
)

__all__ = [
    "BENCHMARKS",
    "SCENARIOS",
    "Benchmark",
    "Experience",
    "Scenario",
    "Split",
    "Stream",
    "build_benchmark",
    "class_incremental",
    "domain_incremental",
    "from_experiences",
    "from_npz_dir",
    "permutation",
    "rotation",
    "split_by_class",
    "task_incremental",
]
