"""The saga index row of a fold, and the values of the store's rows.

The store keeps rows (`SagaRow`, `DeadLetterRow`); users see values (`SagaInfo`,
`DeadLetter`). Converting one into the other lives here, beside the rows, so the values
in `saga._info` know neither the store nor the fold.
"""

from __future__ import annotations

from typing import Any

import msgspec

from saga._errors import CorruptLog
from saga._fold import Progress
from saga._info import DeadLetter, ErrorInfo, SagaInfo, Status
from saga._records import decode_stored, decode_strings
from saga._store._base import DeadLetterRow, SagaRow

__all__ = ["dead_letter", "index_row", "info_from_row"]

_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
_encoder = msgspec.msgpack.Encoder()


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
        status = Status(row.status)
        return SagaInfo(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            status=status,
            step=row.step,
            state=decode_stored(row.state, "its state") if state is None else state,
            error=error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            seq=row.seq,
            annotations={}
            if row.annotations is None
            else decode_strings(row.annotations, "its annotations"),
            parked=parked and not status.terminal,
        )
    except (CorruptLog, msgspec.DecodeError, ValueError, TypeError, RecursionError) as problem:
        raise CorruptLog(
            f"saga {row.saga_id!r}: its index row cannot be read ({problem}); "
            "its log is kept apart and can still be read with history()"
        ) from None


def dead_letter(row: DeadLetterRow) -> DeadLetter:
    """The `DeadLetter` of a stored dead letter (its payload decoded to plain values)."""
    return DeadLetter(
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
