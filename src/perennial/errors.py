"""Typed errors. Every error raised for bad input says what is wrong and how to fix it.

The CLI turns any :class:`PerennialError` into a short message and a non-zero exit code;
library users can catch the specific subclass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class PerennialError(Exception):
    """Base class of every error perennial raises on purpose."""

    exit_code: int = 2


class ConfigError(PerennialError):
    """A configuration (file, overrides or arguments) is invalid.

    ``problems`` lists every problem found, each as ``(field, message)``, so that a user
    fixes them all in one go instead of one per run.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], *, header: str = "invalid configuration"):
        self.problems = list(problems)
        self.header = header
        lines = [f"{header} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {field}: {msg}" if field else f"  - {msg}" for field, msg in self.problems]
        super().__init__("\n".join(lines))


class UnknownNameError(ConfigError):
    """A name (strategy, benchmark, model, ...) is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], *, field: str | None = None, plugins: bool = False):
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        msg = f"unknown {kind} {name!r}; {hint}known: {', '.join(known)}"
        if plugins:
            msg += " (or your own: package.module:Name, see docs/plugins.md)"
        super().__init__([(field or kind, msg)], header=f"unknown {kind}")


class DataError(PerennialError):
    """Input data is malformed (shapes, NaN/inf, labels, empty experiences)."""


class ScenarioError(PerennialError):
    """A strategy, model or benchmark does not support the requested scenario."""


class DivergenceError(PerennialError):
    """Training produced a non-finite loss."""

    exit_code = 3


class StoreError(PerennialError):
    """The run store cannot be read or written (or a run id is unknown)."""


class CheckpointError(PerennialError):
    """A checkpoint is missing, corrupted or belongs to another run/config."""


class TrackingError(PerennialError):
    """An experiment tracker (MLflow, TensorBoard, CSV export) cannot be reached or written."""


class DistributedError(PerennialError):
    """Scale-out (Ray workers, torchrun ranks) cannot start or continue as asked."""


class RunInterrupted(PerennialError):
    """A run stopped on request (SIGINT/SIGTERM) after saving a checkpoint; resume it later."""

    exit_code = 130
