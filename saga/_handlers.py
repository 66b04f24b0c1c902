"""Calling one handler of a step, and the record that ends the call.

The actor decides which handler runs (`Invocation`); `invoke` calls it with the observers
around it and turns what happened into the record that ends the call: ``step_completed``
or ``step_waiting`` with the saved state, or ``step_failed`` with the retry decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from saga._bodies import StepCompleted, StepFailed, StepWaiting
from saga._clock import Clock
from saga._context import StepContext
from saga._definition import Step
from saga._errors import PayloadTooLarge, StepTimeout
from saga._events import Event, Wait
from saga._fold import Handler
from saga._info import ErrorInfo
from saga._observer import ObserverCalls, StepOutcome
from saga._records import encode_payload

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
    """The body of the record that ends a call, and the state it saved, encoded (``None``
    when the call failed: its state changes are discarded)."""

    body: StepCompleted | StepWaiting | StepFailed
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
    compensating = inv.compensating
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
        failed = StepFailed(compensating=compensating, handler=inv.handler, attempt=inv.attempt,
                            error=ErrorInfo.from_exception(error, None), retry_at=retry_at,
                            final=not retry)  # fmt: skip
        return Outcome(failed, None)
    saved = msgspec.Raw(state)  # written as is: the state is encoded once
    if result is None:
        if observers:
            await observers.after_step(ctx, StepOutcome(kind="completed"))
        return Outcome(StepCompleted(compensating=compensating, state=saved), state)
    if observers:
        await observers.after_step(ctx, StepOutcome(kind="waiting", wait=result))
    deadline = None if result.timeout is None else clock.now() + result.timeout
    waiting = StepWaiting(compensating=compensating, event=result.name, key=result.key,
                          timeout=result.timeout, deadline=deadline, state=saved)  # fmt: skip
    return Outcome(waiting, state)
