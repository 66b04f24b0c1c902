"""What a step waits for and what it receives: `Wait` (from `wait_for`) and `Event`.

Plain values, below the definitions and the log: a ``step_waiting`` record holds a wait,
an ``event_delivered`` record an event.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from saga._validate import check_name, check_seconds

__all__ = ["Event", "Wait", "wait_for"]


class Wait(msgspec.Struct, frozen=True):
    """A step's request to continue later: on an event ``name`` (and ``key``) or a timeout.

    Build it with `wait_for`. ``timeout`` is in seconds, ``None`` waits forever.
    """

    name: str
    key: str | None = None
    timeout: float | None = None

    def matches(self, name: str, key: str | None) -> bool:
        """Whether an event with this ``name`` and ``key`` satisfies the wait."""
        return name == self.name and (self.key is None or key == self.key)


def wait_for(
    name: str, *, key: str | None = None, timeout: float | timedelta | None = None
) -> Wait:
    """Return this from a handler to wait, durably, for an event or a timeout.

    Args:
        name: the event name to wait for.
        key: if given, only an event sent with this key matches.
        timeout: seconds (or a ``timedelta``) until ``on_timeout`` runs instead, more than
            0 and at most 100 years; ``None`` waits forever. The deadline survives restarts.

    Returns:
        A `Wait`, to be returned by ``run``, ``on_event``, ``on_timeout``, ``compensate``
        or ``on_compensation_event``.

    Raises:
        ValueError: a bad name or key (empty, too long, control characters, a lone
            surrogate: what ``send`` refuses could never match), or a timeout that is NaN,
            infinite, not positive or over 100 years.
        TypeError: a name or key that is not a string, a timeout that is not a number.
    """
    check_name(name, "event name")
    if key is not None:
        check_name(key, "event key")
    seconds: float | None = None
    if isinstance(timeout, timedelta):
        seconds = check_seconds(timeout.total_seconds(), "timeout", positive=True)
    elif timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            kind = type(timeout).__name__
            raise TypeError(f"timeout must be seconds or a timedelta, got {kind}")
        seconds = check_seconds(timeout, "timeout", positive=True)
    return Wait(name=name, key=key, timeout=seconds)


class Event(msgspec.Struct, frozen=True):
    """An event delivered to a waiting step. ``payload`` is decoded to plain values.

    ``headers`` holds the trace context that was current when the event was sent (W3C
    ``traceparent``/``tracestate``, through OpenTelemetry's global propagator), if any.
    """

    name: str
    payload: Any
    key: str | None
    event_id: str
    headers: dict[str, str] = {}
