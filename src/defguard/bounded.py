"""A bounded map of one-use entries, for what a process remembers between two requests.

A Core remembers the MFA attempts it opened until their `finish`, and an Edge
remembers which Core opened them. Both are hints that save work, never the
authority: an entry may be missing (evicted, another process, a restart), so
memory stays bounded by dropping the oldest entry when full.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class OneUseMap(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[K, V] = {}

    def put(self, key: K, value: V) -> None:
        if key not in self._items and len(self._items) >= self.size:
            del self._items[next(iter(self._items))]  # insertion order: the oldest
        self._items[key] = value

    def take(self, key: K) -> V | None:
        """The entry, removed: each is used once."""
        return self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
