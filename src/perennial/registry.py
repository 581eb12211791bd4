"""A tiny name -> object registry with did-you-mean suggestions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from perennial.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or builder functions).

    >>> r = Registry[int]("number"); r.add("one", 1); r["one"]
    1
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
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

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def get(self, name: str, *, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            factory = self._prefixed(name)
            if factory is not None:
                return factory(name.partition(":")[2])
            known = [*self._items, *(f"{p}:NAME" for p in self._prefixes)]
            raise UnknownNameError(self.kind, name, known, field=field) from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._items or (isinstance(name, str) and self._prefixed(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
