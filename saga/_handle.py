"""`SagaHandle`: a reference to one saga, to await its end."""

from __future__ import annotations

import math

import anyio

from saga._engine import Engine
from saga._info import SagaInfo
from saga._validate import check_seconds

__all__ = ["SagaHandle"]

_POLL_INTERVAL = 1.0  # also catches sagas finished by another process on the same store


class SagaHandle:
    """A saga of a `Runtime`. Cheap to create; holds nothing but the id (and its runtime)."""

    __slots__ = ("_engine", "saga_id")

    def __init__(self, engine: Engine, saga_id: str) -> None:
        self._engine = engine
        self.saga_id = saga_id

    async def result(self, timeout: float | None = None) -> SagaInfo:
        """Wait until the saga is terminal and return its `SagaInfo`.

        Args:
            timeout: seconds to wait at most (wall-clock), ``None`` (or ``math.inf``) for
                no limit.

        Raises:
            TypeError: a ``timeout`` that is not a number (a bool is not).
            ValueError: a ``timeout`` that is negative or NaN.
            TimeoutError: the saga is not terminal after ``timeout`` seconds.
            UnknownSaga: no saga has this id.
            DefinitionMismatch: the saga's definition is not registered; it is parked.
            CorruptLog: the saga's log cannot be read; it is parked.
        """
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout", high=math.inf)
        engine = self._engine
        with anyio.fail_after(timeout):
            finished = engine.finished_waiter(self.saga_id)
            # An actor of this runtime that runs the saga reports its end, with the final
            # SagaInfo, or its stop (a wait, a shutdown): no read and no poll meanwhile.
            ask = not engine.is_active(self.saga_id)
            while True:
                if ask:
                    info = await engine.get(self.saga_id)
                    engine.raise_if_parked(info)
                    if info.status.terminal:
                        return info
                if engine.is_active(self.saga_id):
                    await finished.event.wait()
                else:  # it may be woken here, or end in another process
                    with anyio.move_on_after(_POLL_INTERVAL):
                        await finished.event.wait()
                if finished.info is not None:
                    return finished.info
                finished = engine.finished_waiter(self.saga_id)
                ask = True

    def __repr__(self) -> str:
        return f"SagaHandle({self.saga_id!r})"
