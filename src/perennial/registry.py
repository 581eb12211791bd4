"""A tiny name -> object registry with did-you-mean suggestions and plug-ins.

Besides the names registered in code, a registry resolves two kinds of plug-in names, so
that the CLI, config files, compositions and ``perennial list`` treat user code like the
built-ins:

- ``package.module:Name``: imports ``package.module`` (the current directory is searched
  too, as ``python -m`` does) and takes its attribute ``Name``;
- Python entry points of the registry's group (e.g. ``perennial.strategies``): every
  installed package's registrations appear under the entry point's name.

Each registry's ``adapt(name, obj)`` turns the loaded object into an entry (e.g. a model
factory function into a model spec) or raises ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from perennial.errors import ConfigError, UnknownNameError

T = TypeVar("T")

#: names of objects handed to ``perennial.experiment()`` (valid in that process only)
PYTHON_PREFIX = "python:"


def is_plugin_name(name: str) -> bool:
    """``package.module:Name`` (a module path, a colon, an attribute path)."""
    mod, colon, attr = name.partition(":")
    return bool(colon and mod and attr) and all(p.isidentifier() for p in (*mod.split("."), *attr.split(".")))


def load_object(spec: str, *, field: str, kind: str) -> Any:
    """Import ``package.module:Name`` and return ``Name`` (a clear ConfigError when it fails)."""
    mod_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # like ``python -m``: your own modules in the current folder
        sys.path.append(cwd)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(
            [
                (
                    field,
                    f"cannot import module {mod_name!r} for {kind} {spec!r}: {e}; put {mod_name.split('.')[0]}.py "
                    "(or the package) in the current folder or on PYTHONPATH",
                )
            ]
        ) from None
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(
            [(field, f"importing {mod_name!r} for {kind} {spec!r} failed: {type(e).__name__}: {e}")]
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise ConfigError(
                [(field, f"module {mod_name!r} has no {attr!r} for {kind} {spec!r}; it defines {', '.join(public)}")]
            )
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to objects (classes or builder functions).

    >>> r = Registry[int]("number"); r.add("one", 1); r["one"]
    1
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        adapt: Callable[[str, Any], T] | None = None,
    ):
        self.kind = kind
        self.group = group  # entry-point group, e.g. "perennial.strategies"
        self.adapt = adapt
        self._items: dict[str, T] = {}
        #: resolved ``package.module:Name`` and ``python:`` names: usable, not listed
        self._resolved: dict[str, T] = {}
        self._entry_points_loaded = group is None
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def add_prefix(self, prefix: str, factory: Callable[[str], T]) -> None:
        """Names ``PREFIX:REST`` resolve to ``factory(REST)`` (e.g. ``timm:vit_small_patch16_224``)."""
        self._prefixes[prefix] = factory

    def _prefixed(self, name: str) -> Callable[[str], T] | None:
        prefix, colon, rest = name.partition(":")
        return self._prefixes.get(prefix) if colon and rest else None

    def add(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def put(self, name: str, obj: T) -> T:
        """Add or replace an unlisted name (objects handed over from Python, ``python:...``)."""
        self._resolved[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def _adapt(self, name: str, obj: Any, field: str) -> T:
        if self.adapt is None:
            return obj  # type: ignore[no-any-return]
        try:
            return self.adapt(name, obj)
        except ValueError as e:
            raise ConfigError([(field, f"{self.kind} {name!r}: {e}")]) from None

    def load_entry_points(self) -> None:
        """Register every installed package's entry points of this registry's group (once)."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        assert self.group is not None
        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
                if isinstance(obj, type(sys)):  # a module: importing it registered its names
                    continue
                if ep.name not in self._items:
                    self._items[ep.name] = self._adapt(ep.name, obj, self.kind)
            except Exception as e:  # one broken plug-in must not break every command
                warnings.warn(
                    f"entry point {ep.name!r} = {ep.value!r} of group {self.group!r} failed to load: "
                    f"{type(e).__name__}: {e}",
                    stacklevel=2,
                )

    def get(self, name: str, *, field: str | None = None) -> T:
        found = self._items.get(name, self._resolved.get(name))
        if found is not None:
            return found
        self.load_entry_points()
        if name in self._items:
            return self._items[name]
        factory = self._prefixed(name)  # e.g. timm:NAME, hf:PATH (before package.module:Name)
        if factory is not None:
            return factory(name.partition(":")[2])
        if name.startswith(PYTHON_PREFIX):
            raise ConfigError(
                [
                    (
                        field or self.kind,
                        f"{self.kind} {name!r} was a Python object given to perennial.experiment() in another "
                        "process; it cannot be rebuilt from the run's config. Pass the same object again: "
                        "perennial.experiment(..., run_id=RUN_ID, resume=True), or name it as package.module:Name",
                    )
                ]
            )
        if is_plugin_name(name) and self.adapt is not None:
            obj = load_object(name, field=field or self.kind, kind=self.kind)
            if name in self._items:  # importing registered it under this very name
                return self._items[name]
            self._resolved[name] = self._adapt(name, obj, field or self.kind)
            return self._resolved[name]
        known = [*self._items, *(f"{p}:NAME" for p in self._prefixes)]
        raise UnknownNameError(self.kind, name, known, field=field, plugins=self.adapt is not None) from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._items or self._prefixed(name) is not None:
            return True
        try:
            self.get(name)
        except ConfigError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self.load_entry_points()
        return sorted(self._items.items())
