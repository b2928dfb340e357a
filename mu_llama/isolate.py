"""Batch failure isolation: one input that makes the model fail must not take its batch-mates down with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def isolate_failures(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R | Exception]:
    """fn(items) -> one result per item. If the call fails (or returns the wrong number of results), bisect until
    every item has its own outcome: its result, or the exception it raised alone. Costs O(k log n) extra calls for
    k failing items in a batch of n; a batch that succeeds costs one call. KeyboardInterrupt is never caught."""
    items = list(items)
    if not items:
        return []
    try:
        out = fn(items)
        if not isinstance(out, (list, tuple)) or len(out) != len(items):
            raise TypeError(f"batch function returned {type(out).__name__} of length "
                            f"{len(out) if hasattr(out, '__len__') else '?'} for {len(items)} inputs")
        return list(out)
    except Exception as e:  # noqa: BLE001 - isolated per item, never fatal
        if len(items) == 1:
            return [e]
        mid = len(items) // 2
        return isolate_failures(fn, items[:mid]) + isolate_failures(fn, items[mid:])


def describe_failure(e: BaseException) -> str:
    """One line (at most 500 characters): the exception type and its text."""
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:500]
