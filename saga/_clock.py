"""Time, injectable: the runtime reads every timestamp and sleeps every timer through a clock."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the runtime needs of time. ``saga.testing.FakeClock`` is a controllable one."""

    def now(self) -> float:
        """Epoch seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (cancellable)."""
        ...


class SystemClock:
    """Wall-clock time (``time.time``), sleeping with anyio."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.time()))
