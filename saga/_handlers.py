"""Calling one handler of a step, and the record that ends the call.

The actor decides which handler runs (`Invocation`); `invoke` calls it with the observers
around it and turns what happened into the record that ends the call: ``step_completed``
or ``step_waiting`` with the saved state, or ``step_failed`` with the retry decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from saga._clock import Clock
from saga._definition import Step, StepContext
from saga._errors import PayloadTooLarge, StepTimeout
from saga._events import Event, Wait
from saga._fold import Handler
from saga._info import ErrorInfo
from saga._observer import ObserverCalls, StepOutcome
from saga._records import Kind, encode_payload

__all__ = ["Invocation", "Outcome", "invoke"]

_NEVER_RETRIED = (StepTimeout, PayloadTooLarge)


@dataclass(slots=True)
class Invocation:
    """The handler to call next, and with what."""

    step: Step
    handler: str
    attempt: int
    compensating: bool
    event: Event | None


@dataclass(slots=True)
class Outcome:
    """The record that ends a call (``kind``, ``data``) and the state it saved, encoded
    (``None`` when the call failed: its state changes are discarded)."""

    kind: str
    data: dict[str, Any]
    state: bytes | None


async def invoke(
    inv: Invocation,
    ctx: StepContext[Any],
    observers: ObserverCalls,
    clock: Clock,
    max_payload_bytes: int,
) -> Outcome:
    """Call ``inv``'s handler with ``ctx``; observers see it before and after."""
    step = inv.step
    if observers:
        await observers.before_step(ctx)
    handler = getattr(step, inv.handler)
    direction = {"compensating": inv.compensating}
    try:
        if inv.handler in (Handler.ON_EVENT, Handler.ON_COMPENSATION_EVENT):
            result = await handler(ctx, inv.event)
        else:
            result = await handler(ctx)
        if result is not None and not isinstance(result, Wait):
            raise TypeError(
                f"{type(step).__name__}.{inv.handler} returned {result!r}; "
                "a handler returns None or saga.wait_for(...)"
            )
        state = encode_payload(ctx.state, "state", max_payload_bytes)
    except Exception as error:
        if observers:
            await observers.after_step(ctx, StepOutcome(kind="failed", error=error))
        policy = step.compensation_retry if inv.compensating else step.retry
        retry = not isinstance(error, _NEVER_RETRIED) and policy.should_retry(inv.attempt, error)
        retry_at = clock.now() + policy.interval(inv.attempt) if retry else None
        info = ErrorInfo.from_exception(error, step.name)
        return Outcome(Kind.STEP_FAILED, {
            **direction, "handler": inv.handler, "attempt": inv.attempt,
            "error": {"type": info.type, "message": info.message},
            "retry_at": retry_at, "final": not retry,
        }, None)  # fmt: skip
    saved = msgspec.Raw(state)  # written as is: the state is encoded once
    if result is None:
        if observers:
            await observers.after_step(ctx, StepOutcome(kind="completed"))
        return Outcome(Kind.STEP_COMPLETED, {**direction, "state": saved}, state)
    if observers:
        await observers.after_step(ctx, StepOutcome(kind="waiting", wait=result))
    deadline = None if result.timeout is None else clock.now() + result.timeout
    return Outcome(Kind.STEP_WAITING, {
        **direction, "event": result.name, "key": result.key,
        "timeout": result.timeout, "deadline": deadline, "state": saved,
    }, state)  # fmt: skip
