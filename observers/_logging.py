"""`LoggingObserver`: one structured log line per committed transition."""

from __future__ import annotations

import logging
from typing import Any

from saga import (
    CompensationStarted,
    Observer,
    Record,
    RecordKind,
    SagaFailed,
    SagaInfo,
    StepFailed,
    StepStarted,
)

__all__ = ["LoggingObserver"]

_LEVELS: dict[str, int] = {
    RecordKind.STEP_FAILED: logging.WARNING,
    RecordKind.COMPENSATION_STARTED: logging.WARNING,
    RecordKind.SAGA_FAILED: logging.ERROR,
    RecordKind.SAGA_SUSPENDED: logging.WARNING,
}


class LoggingObserver(Observer):
    """Logs every transition as one line, with its fields also on the log record.

    The message reads ``saga <id> seq=<n> <kind> step=<step> status=<status>`` (plus the
    error, when there is one). The same values are set on the `logging.LogRecord` as
    ``saga_id``, ``saga_name``, ``saga_version``, ``saga_seq``, ``saga_kind``,
    ``saga_step``, ``saga_status``, ``saga_attempt`` and ``saga_error``, for structured
    (e.g. JSON) formatters. Levels: ``step_failed`` and ``compensation_started`` are
    WARNING, ``saga_failed`` is ERROR, everything else INFO.

    Args:
        logger: where to log; ``logging.getLogger("saga.transitions")`` when ``None``.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("saga.transitions")

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        """Log ``record``."""
        level = _LEVELS.get(record.kind, logging.INFO)
        if not self.logger.isEnabledFor(level):
            return
        body = record.body
        error = _error(record, info)
        fields: dict[str, Any] = {
            "saga_id": info.saga_id,
            "saga_name": info.name,
            "saga_version": info.version,
            "saga_seq": record.seq,
            "saga_kind": record.kind,
            "saga_step": record.step,
            "saga_status": info.status.value,
            "saga_attempt": body.attempt if isinstance(body, StepStarted | StepFailed) else None,
            "saga_error": error,
        }
        message = "saga %s seq=%d %s step=%s status=%s"
        args: list[Any] = [info.saga_id, record.seq, record.kind, record.step, info.status.value]
        if error is not None:
            message += " error=%r"
            args.append(error)
        self.logger.log(level, message, *args, extra=fields)


def _error(record: Record, info: SagaInfo) -> str | None:
    """The error a record reports: its own, else (compensation, failure) the saga's."""
    body = record.body
    if not isinstance(body, StepFailed | CompensationStarted | SagaFailed):
        return None
    error = body.error or info.error
    return None if error is None else str(error)
