"""A saga's log read for people: one timeline entry per record, and what it waits for now.

Everything here reads record data defensively (``.get`` with defaults): an operator must
be able to look at any log, including one this version of saga would not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from saga._cli._format import ago, duration, iso, offset, show_json
from saga._fold import Progress
from saga._records import Kind, Record

__all__ = ["Entry", "entries", "error_text", "next_wake", "waiting"]


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
        data = record.data
        direction = None
        if "compensating" in data:
            direction = "compensating" if data["compensating"] else "forward"
        attempt = None
        if record.kind in (Kind.STEP_STARTED, Kind.STEP_FAILED):
            attempt = data.get("attempt")
        out.append(
            Entry(
                seq=record.seq,
                at=record.at,
                offset=record.at - start,
                kind=record.kind,
                step=record.step,
                direction=direction,
                attempt=attempt if isinstance(attempt, int) else None,
                what=_what(record, start),
            )
        )
    return out


def error_text(error: Any) -> str:
    """``Type: message`` of a recorded error (a dict in record data, or an `ErrorInfo`)."""
    if error is None:
        return "-"
    if isinstance(error, dict):
        return f"{error.get('type', '?')}: {error.get('message', '')}"
    return str(error)


def waiting(progress: Progress, now: float) -> str | None:
    """What the saga waits for now, with the deadline, or ``None``."""
    wait = progress.wait
    if progress.terminal or wait is None or progress.handler is not None:
        return None
    text = f"for {wait['name']}" + (f" key={wait['key']}" if wait.get("key") else "")
    deadline = wait.get("deadline")
    if deadline is None:
        return text + "; no timeout"
    return f"{text}; deadline {iso(deadline)} ({ago(deadline, now)})"


def next_wake(progress: Progress, now: float) -> str | None:
    """When a durable retry backoff ends, if the saga sleeps in one."""
    if progress.terminal or progress.handler is None or progress.retry_at is None:
        return None
    return (
        f"{progress.handler} of {progress.step} again (attempt {progress.attempt}) at "
        f"{iso(progress.retry_at)} ({ago(progress.retry_at, now)})"
    )


def _deadline(deadline: Any, start: float) -> str:
    if not isinstance(deadline, int | float):
        return "-"
    return f"{offset(deadline - start)} ({iso(deadline)})"


def _dead(data: dict[str, Any]) -> str:
    count = data.get("dead_letters")
    return f"; {count} event(s) left as dead letters" if count else ""


def _what(record: Record, start: float) -> str:
    data: dict[str, Any] = record.data
    kind = record.kind
    if kind == Kind.SAGA_STARTED:
        steps = ", ".join(str(s) for s in data.get("steps", []))
        return f"started {data.get('name')} v{data.get('version')}; steps: {steps}"
    if kind == Kind.STEP_STARTED:
        recovery = data.get("recovery") or 0
        again = f" (run again after {recovery} interruption(s))" if recovery else ""
        return f"{data.get('handler', '?')}{again}"
    if kind == Kind.STEP_WAITING:
        text = f"waiting for {data.get('event')}"
        if data.get("key") is not None:
            text += f" key={data['key']}"
        timeout = data.get("timeout")
        if isinstance(timeout, int | float):
            deadline = _deadline(data.get("deadline"), start)
            return f"{text}; timeout {duration(timeout)}, deadline {deadline}"
        return text + "; no timeout"
    if kind == Kind.EVENT_DELIVERED:
        event = data.get("event") or {}
        key = f" key={event['key']}" if event.get("key") is not None else ""
        return f"event {event.get('name')}{key} delivered (id {event.get('event_id')})"
    if kind == Kind.WAIT_TIMED_OUT:
        return "wait timed out"
    if kind == Kind.STEP_COMPLETED:
        return "completed"
    if kind == Kind.STEP_FAILED:
        text = f"failed: {error_text(data.get('error'))}"
        if data.get("retry_at") is not None:
            text += f"; retry at {offset(data['retry_at'] - start)}"
        elif data.get("final"):
            text += "; no more attempts"
        return text
    if kind == Kind.ABORT_REQUESTED:
        text = f"abort requested by {data.get('by') or 'unknown'}: {data.get('reason')}"
        return text if data.get("effective") else text + " (no effect: too late)"
    if kind == Kind.COMPENSATION_STARTED:
        steps = ", ".join(str(s) for s in data.get("steps", [])) or "nothing"
        failed = data.get("failed_step") or "-"
        cause = error_text(data.get("error"))
        return f"compensation started ({failed}: {cause}); to undo: {steps}"
    if kind in (Kind.SAGA_COMPLETED, Kind.SAGA_COMPENSATED):
        return "saga " + kind.removeprefix("saga_") + _dead(data)
    if kind == Kind.SAGA_FAILED:
        remaining = ", ".join(str(s) for s in data.get("remaining", [])) or "-"
        failed = f"saga FAILED: {error_text(data.get('error'))}; not undone: {remaining}"
        return failed + _dead(data)
    if kind == Kind.SAGA_RESUMED:
        return f"resumed by {data.get('by') or 'unknown'}: {data.get('reason')}"
    return f"{kind} {show_json(data)}"
