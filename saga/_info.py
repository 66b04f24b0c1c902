"""What a saga looks like from outside: its status, its error and its summary."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import msgspec

from saga._errors import CorruptLog
from saga._records import decode_stored, decode_strings
from saga._store._base import DeadLetterRow, SagaRow

if TYPE_CHECKING:
    from saga._fold import Progress

__all__ = [
    "ACTIVE_STATUSES",
    "DeadLetter",
    "ErrorInfo",
    "SagaInfo",
    "Status",
    "index_row",
    "info_from_row",
]


class Status(enum.StrEnum):
    """Where a saga stands. ``COMPLETED``, ``COMPENSATED`` and ``FAILED`` are terminal."""

    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

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

    @classmethod
    def from_row(cls, row: DeadLetterRow) -> DeadLetter:
        """Decode a stored dead letter."""
        return cls(
            saga_id=row.saga_id,
            event_id=row.event_id,
            name=row.name,
            key=row.key,
            payload=decode_stored(
                row.payload, f"dead letter {row.event_id!r} of saga {row.saga_id!r}: its payload"
            ),
            sent_at=row.sent_at,
            reason=row.reason,
        )


_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
_encoder = msgspec.msgpack.Encoder()


def info_from_row(row: SagaRow, *, state: Any = None, error: ErrorInfo | None = None) -> SagaInfo:
    """The `SagaInfo` of a saga index row.

    ``state`` replaces the row's state decoded to plain values (e.g. a typed copy);
    ``error``, if given, is why the saga is parked (as this runtime knows it); else the
    row says whether a runtime parked it, and why.

    Raises:
        CorruptLog: a column of the row cannot be decoded (the log itself may be intact).
    """
    try:
        parked = error is not None or row.parked is not None
        if error is None and row.parked is not None:
            error = _error_decoder.decode(row.parked)
        if error is None and row.error is not None:
            error = _error_decoder.decode(row.error)
        return SagaInfo(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            status=Status(row.status),
            step=row.step,
            state=decode_stored(row.state, "its state") if state is None else state,
            error=error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            seq=row.seq,
            annotations={}
            if row.annotations is None
            else decode_strings(row.annotations, "its annotations"),
            parked=parked and Status(row.status) not in _TERMINAL,
        )
    except (CorruptLog, msgspec.DecodeError, ValueError, TypeError, RecursionError) as problem:
        raise CorruptLog(
            f"saga {row.saga_id!r}: its index row cannot be read ({problem}); "
            "its log is kept apart and can still be read with history()"
        ) from None


def index_row(progress: Progress, state: bytes) -> SagaRow:
    """The saga index row for ``progress`` (``state`` is its state, encoded)."""
    error = progress.error
    return SagaRow(
        saga_id=progress.saga_id,
        name=progress.name,
        version=progress.version,
        status=progress.status.value,
        step=progress.shown_step,
        created_at=progress.created_at,
        updated_at=progress.updated_at,
        seq=progress.seq,
        wake_at=progress.wake_at,
        state=state,
        error=None if error is None else _encoder.encode(error),
        annotations=_encoder.encode(progress.annotations) if progress.annotations else None,
    )
