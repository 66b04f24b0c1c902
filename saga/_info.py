"""What a saga looks like from outside: its status, its error and its summary."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "ACTIVE_STATUSES",
    "DeadLetter",
    "ErrorInfo",
    "SagaInfo",
    "Status",
]


class Status(enum.StrEnum):
    """Where a saga stands. ``COMPLETED``, ``COMPENSATED`` and ``FAILED`` are terminal.

    ``SUSPENDED`` (a step whose ``on_exhausted`` is ``"suspend"`` used up its attempts) is
    not terminal, yet nothing runs: the saga waits for an operator's retry, skip or abort.
    """

    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    SUSPENDED = "SUSPENDED"

    @property
    def terminal(self) -> bool:
        """Whether the saga has ended (``FAILED`` can still be resumed by an operator)."""
        return self in _TERMINAL


_TERMINAL = frozenset({Status.COMPLETED, Status.COMPENSATED, Status.FAILED})
ACTIVE_STATUSES = (Status.RUNNING, Status.WAITING, Status.COMPENSATING)


class ErrorInfo(msgspec.Struct, frozen=True):
    """An error as recorded in the log: exception type name, message and the step."""

    type: str
    message: str
    step: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"

    @classmethod
    def from_exception(cls, error: BaseException, step: str | None) -> ErrorInfo:
        """Describe ``error``, raised in ``step``."""
        return cls(type=type(error).__name__, message=str(error), step=step)


class SagaInfo(msgspec.Struct, frozen=True):
    """A saga's summary at one point of its log.

    Attributes:
        saga_id: the instance id.
        name: the definition's name.
        version: the definition's version.
        status: a `Status`.
        step: the step running, waiting or compensating; for ``FAILED`` the step whose
            compensation failed; ``None`` once completed or compensated.
        state: the saga state as last saved (an instance of the definition's state type, or
            plain values if the definition is not registered).
        error: why the saga is compensating, failed or parked, else ``None``.
        created_at: epoch seconds of ``saga_started``.
        updated_at: epoch seconds of the last record.
        seq: the ``seq`` of the last record.
        annotations: what observers recorded when the saga started (e.g. its trace context).
        parked: a runtime could not run the saga (``error`` says why: its definition is
            missing or differs, or its log is corrupt); it stays as it is, untouched,
            until a runtime that can run it takes it. Not terminal.
    """

    saga_id: str
    name: str
    version: int
    status: Status
    step: str | None
    state: Any
    error: ErrorInfo | None
    created_at: float
    updated_at: float
    seq: int = 0
    annotations: dict[str, str] = {}
    parked: bool = False


class DeadLetter(msgspec.Struct, frozen=True):
    """An event that no step consumed before its saga ended."""

    saga_id: str
    event_id: str
    name: str
    key: str | None
    payload: Any
    sent_at: float
    reason: str
