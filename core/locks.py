"""One ``threading.Lock`` per room, from one registry that does not grow without bound.

Why a ``threading.Lock``: a turn is a blocking subprocess run from worker threads, so an
``asyncio.Lock`` would not serialise it. The lock is acquired blocking, with no acquire timeout;
what bounds the wait is the agent's own timeout, and ``with lock:`` releases it on any error.

Why the registry is safe to prune: a plain ``threading.Lock`` cannot be weakly referenced, so a
``WeakValueDictionary`` is not available. Instead the registry behaves like one: a lock whose
only references are the registry's own is dropped during a sweep. Every caller that could hold
or wait on a lock keeps a reference to it (it got the object from :meth:`LockRegistry.get` and
holds it in a local variable), so a referenced lock is never dropped, and two concurrent callers
always get the same object for one room. Sweeps run when the table doubles, so they cost O(1)
per call amortised and the table stays within twice the number of rooms in use.
"""

from __future__ import annotations

import sys
import threading


def _registry_only_refcount() -> int:
    """What ``sys.getrefcount(table[key])`` reports when the table is the only holder."""
    probe = {"room": threading.Lock()}
    return sys.getrefcount(probe["room"])


_UNSHARED = _registry_only_refcount()


class LockRegistry:
    """Hands out the same ``threading.Lock`` for the same key while anyone still uses it."""

    def __init__(self, *, sweep_floor: int = 64) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._sweep_floor = sweep_floor
        self._sweep_at = sweep_floor

    def get(self, key: str) -> threading.Lock:
        """The lock for ``key``: the same object as any other caller currently holds."""
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
                if len(self._locks) >= self._sweep_at:
                    self._sweep()
            return lock

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)

    def sweep(self) -> int:
        """Drop every lock nobody references; returns how many remain."""
        with self._guard:
            self._sweep()
            return len(self._locks)

    def _sweep(self) -> None:
        # Look each lock up by key (no local variable) so the count is comparable to _UNSHARED.
        for key in list(self._locks):
            if sys.getrefcount(self._locks[key]) <= _UNSHARED and not self._locks[key].locked():
                del self._locks[key]
        self._sweep_at = max(self._sweep_floor, 2 * len(self._locks))
