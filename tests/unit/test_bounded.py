"""The one-use map behind remembered MFA attempts (Core) and their Cores (Edge)."""

from __future__ import annotations

from defguard.bounded import OneUseMap


def test_an_entry_is_taken_once() -> None:
    kept: OneUseMap[str, int] = OneUseMap(3)
    kept.put("a", 1)
    assert kept.take("a") == 1
    assert kept.take("a") is None
    assert "a" not in kept


def test_when_full_the_oldest_entry_goes_and_a_replaced_key_takes_no_room() -> None:
    kept: OneUseMap[str, int] = OneUseMap(2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("b", 3)  # same key: nothing evicted
    assert len(kept) == 2 and kept.take("a") == 1
    kept.put("a", 1)
    kept.put("c", 4)  # full: "b" is now the oldest
    assert "b" not in kept
    assert (kept.take("a"), kept.take("c")) == (1, 4)
