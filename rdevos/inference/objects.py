"""Mapping between the user's object ids and the engine's channel indices."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ObjectManager"]


class ObjectManager:
    """Keeps user object ids (any positive ints, e.g. palette labels {3, 7}) in entry order.

    Channel ``i`` (0-based) of the engine's object probabilities belongs to ``ids[i]``; output channel 0 is the
    background, so output channel ``i + 1`` belongs to ``ids[i]``.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._ids

    def add(self, ids: Iterable[int]) -> list[int]:
        """Register ids; returns the ones that were new, in the given order."""
        new = []
        for i in ids:
            i = int(i)
            if i <= 0:
                raise ValueError(f"object ids must be positive integers (0 is background), got {i}")
            if i not in self._ids:
                self._ids.append(i)
                new.append(i)
        return new

    def index(self, obj_id: int) -> int:
        """0-based object channel of ``obj_id``."""
        try:
            return self._ids.index(int(obj_id))
        except ValueError:
            raise KeyError(f"unknown object id {obj_id}; known ids: {self._ids}") from None

    def remove(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._ids.remove(int(i))

    def clear(self) -> None:
        self._ids.clear()
