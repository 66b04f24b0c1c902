"""A saga's log read for people: one timeline entry per record, and what it waits for now.

An operator must be able to look at any log, including one this version of saga would
not write: a record whose body does not decode is shown as its kind and its raw data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from saga._bodies import (
    AbortRequested,
    CompensationStarted,
    EventDelivered,
    RecordBody,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaResumed,
    SagaRetried,
    SagaReverted,
    SagaStarted,
    SagaSuspended,
    StepBody,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepWaiting,
    WaitTimedOut,
)
from saga._cli._format import ago, duration, iso, offset, show_json
from saga._errors import CorruptLog
from saga._fold import Progress
from saga._info import ErrorInfo
from saga._records import Record

__all__ = ["Entry", "entries", "error_text", "next_wake", "wait_data", "waiting"]


class Entry(msgspec.Struct, frozen=True):
    """One line of a timeline.

    Attributes:
        seq: the record's seq.
        at: epoch seconds.
        offset: seconds since the saga started.
        kind: the record kind.
        step: the step it is about, if any.
        direction: ``"forward"``, ``"compensating"``, or ``None`` for saga-level records.
        attempt: the attempt, on ``step_started`` and ``step_failed``.
        what: a sentence saying what happened.
    """

    seq: int
    at: float
    offset: float
    kind: str
    step: str | None
    direction: str | None
    attempt: int | None
    what: str


def entries(records: Sequence[Record]) -> list[Entry]:
    """The timeline of a log."""
    if not records:
        return []
    start = records[0].at
    out = []
    for record in records:
        try:
            body: RecordBody | None = record.body
        except CorruptLog:  # shown as stored
            body = None
        what = f"{record.kind} {show_json(record.data)}" if body is None else _what(body, start)
        direction = None
        if isinstance(body, StepBody):
            direction = "compensating" if body.compensating else "forward"
        attempt = None
        if isinstance(body, StepStarted | StepFailed):
            attempt = body.attempt
        out.append(
            Entry(
                seq=record.seq,
                at=record.at,
                offset=record.at - start,
                kind=record.kind,
                step=record.step,
                direction=direction,
                attempt=attempt,
                what=what,
            )
        )
    return out


def error_text(error: ErrorInfo | None) -> str:
    """``Type: message`` of a recorded error."""
    return "-" if error is None else str(error)


def waiting(progress: Progress, now: float) -> str | None:
    """What the saga waits for now, with the deadline, or ``None``."""
    wait = progress.wait
    if progress.terminal or wait is None or progress.handler is not None:
        return None
    text = f"for {wait.name}" + (f" key={wait.key}" if wait.key else "")
    deadline = progress.deadline
    if deadline is None:
        return text + "; no timeout"
    return f"{text}; deadline {iso(deadline)} ({ago(deadline, now)})"


def wait_data(progress: Progress) -> dict[str, Any] | None:
    """The wait as ``--json`` shows it (``name``, ``key``, ``deadline``), or ``None``."""
    wait = progress.wait
    if wait is None:
        return None
    return {"name": wait.name, "key": wait.key, "deadline": progress.deadline}


def next_wake(progress: Progress, now: float) -> str | None:
    """When a durable retry backoff ends, if the saga sleeps in one."""
    if progress.terminal or progress.handler is None or progress.retry_at is None:
        return None
    return (
        f"{progress.handler} of {progress.step} again (attempt {progress.attempt}) at "
        f"{iso(progress.retry_at)} ({ago(progress.retry_at, now)})"
    )


def _deadline(deadline: float | None, start: float) -> str:
    if deadline is None:
        return "-"
    return f"{offset(deadline - start)} ({iso(deadline)})"


def _dead(count: int) -> str:
    return f"; {count} event(s) left as dead letters" if count else ""


def _what(body: RecordBody, start: float) -> str:
    match body:
        case SagaStarted():
            steps = ", ".join(body.steps)
            return f"started {body.name} v{body.version}; steps: {steps}"
        case StepStarted():
            recovery = body.recovery
            again = f" (run again after {recovery} interruption(s))" if recovery else ""
            return f"{body.handler}{again}"
        case StepWaiting():
            text = f"waiting for {body.event}"
            if body.key is not None:
                text += f" key={body.key}"
            if body.timeout is not None:
                deadline = _deadline(body.deadline, start)
                return f"{text}; timeout {duration(body.timeout)}, deadline {deadline}"
            return text + "; no timeout"
        case EventDelivered(event=event):
            key = f" key={event.key}" if event.key is not None else ""
            return f"event {event.name}{key} delivered (id {event.event_id})"
        case WaitTimedOut():
            return "wait timed out"
        case StepCompleted():
            return "completed"
        case StepSkipped():
            return f"skipped: {body.reason}" + (f" (by {body.by})" if body.by else "")
        case StepFailed():
            text = f"failed: {error_text(body.error)}"
            if body.retry_at is not None:
                text += f"; retry at {offset(body.retry_at - start)}"
            elif body.final:
                text += "; no more attempts"
            return text
        case AbortRequested():
            text = f"abort requested by {body.by or 'unknown'}: {body.reason}"
            return text if body.effective else text + " (no effect: too late)"
        case CompensationStarted():
            steps = ", ".join(body.steps) or "nothing"
            failed = body.failed_step or "-"
            return f"compensation started ({failed}: {error_text(body.error)}); to undo: {steps}"
        case SagaCompleted() | SagaCompensated():
            return "saga " + body.kind.removeprefix("saga_") + _dead(body.dead_letters)
        case SagaFailed():
            remaining = ", ".join(body.remaining) or "-"
            failed = f"saga FAILED: {error_text(body.error)}; not undone: {remaining}"
            return failed + _dead(body.dead_letters)
        case SagaResumed():
            return f"resumed by {body.by or 'unknown'}: {body.reason}"
        case SagaSuspended():
            return f"saga SUSPENDED: {error_text(body.error)}; waits for retry, skip or abort"
        case SagaRetried():
            return f"retried by {body.by or 'unknown'}: {body.reason}"
        case SagaReverted():
            return f"revert requested by {body.by or 'unknown'}: {body.reason}"
    return f"{body.kind} {show_json(body.data())}"  # pragma: no cover - a kind added later
