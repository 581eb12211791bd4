"""Progress reporting for long work (a rich progress bar, or nothing)."""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def begin(self, label: str, total: int) -> None: ...
    def update(self, completed: int, total: int, info: str = "") -> None: ...
    def end(self) -> None: ...


class NoProgress:
    def begin(self, label: str, total: int) -> None:
        pass

    def update(self, completed: int, total: int, info: str = "") -> None:
        pass

    def end(self) -> None:
        pass


class RichProgress:
    """One bar per ``begin``/``end`` pair, on stderr, refreshed by rich's own thread."""

    def __init__(self, *, transient: bool = True, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _P

        self._p = _P(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=transient,
        )
        self._task: Any = None
        self._started = False

    def begin(self, label: str, total: int) -> None:
        if not self._started:
            self._p.start()
            self._started = True
        if self._task is not None:
            self._p.remove_task(self._task)
        self._task = self._p.add_task(label, total=total, info="")

    def update(self, completed: int, total: int, info: str = "") -> None:
        if self._task is not None:
            self._p.update(self._task, completed=completed, total=total, info=info)

    def end(self) -> None:
        if self._task is not None:
            self._p.remove_task(self._task)
            self._task = None

    def close(self) -> None:
        if self._started:
            self._p.stop()
            self._started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
