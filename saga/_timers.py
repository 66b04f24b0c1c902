"""One timer task for all durable deadlines: wait timeouts and retry backoffs.

Deadlines live in the store (``wake_at`` in the saga index, committed with the record that
set them). In memory the service keeps only those due before its horizon, reloading the
next window from the store as time passes, so a million parked sagas cost no memory here.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable

import anyio

from saga._clock import Clock

__all__ = ["TimerService"]


class TimerService:
    """Fires ``wake(saga_id)`` once each armed deadline has passed on ``clock``."""

    def __init__(
        self,
        clock: Clock,
        wake: Callable[[str], None],
        load_due: Callable[[float], Awaitable[list[tuple[str, float]]]],
        horizon: float = 60.0,
    ) -> None:
        self._clock = clock
        self._wake = wake
        self._load_due = load_due
        self._horizon = horizon
        self._horizon_end = -math.inf
        self._heap: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleeping_until = math.inf

    def arm(self, saga_id: str, deadline: float) -> None:
        """Wake ``saga_id`` at ``deadline``. The deadline must already be committed."""
        if deadline > self._horizon_end:
            return  # the next reload finds it in the store
        if self._armed.get(saga_id) == deadline:
            return
        self._armed[saga_id] = deadline
        heapq.heappush(self._heap, (deadline, saga_id))
        if self._sleep_scope is not None and deadline < self._sleeping_until:
            self._sleep_scope.cancel()

    def disarm(self, saga_id: str) -> None:
        """Forget ``saga_id``'s deadline (its heap entry is skipped when it surfaces)."""
        self._armed.pop(saga_id, None)

    async def run(self) -> None:
        """Serve deadlines until cancelled."""
        while True:
            now = self._clock.now()
            if now >= self._horizon_end:
                self._horizon_end = now + self._horizon
                for saga_id, deadline in await self._load_due(self._horizon_end):
                    self.arm(saga_id, deadline)
                now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                deadline, saga_id = heapq.heappop(self._heap)
                if self._armed.get(saga_id) == deadline:
                    del self._armed[saga_id]
                    self._wake(saga_id)
            self._sleeping_until = min(
                self._heap[0][0] if self._heap else math.inf, self._horizon_end
            )
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                await self._clock.sleep_until(self._sleeping_until)
            self._sleep_scope = None
            self._sleeping_until = math.inf
