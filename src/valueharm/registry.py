"""A named registry (a dict and a decorator) for benchmarks, scorers, backends and prompt methods."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from valueharm.errors import UnknownNameError

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """`unknown profile 'Pwo'; did you mean: Pow, close_Pow_1?` — or the full list when nothing is close."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if close:
        return f"unknown {kind} {name!r}; did you mean: {', '.join(close)}?"
    shown = ", ".join(sorted(known)[:30]) + (", …" if len(known) > 30 else "")
    return f"unknown {kind} {name!r}; known: {shown}"


class Registry(Generic[T]):
    """Maps names to objects; `get` of an unknown name raises an error listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, list(self._items))) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
