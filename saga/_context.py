"""What a step's handlers are given and give back: `StepContext`, `Event`, `Wait`.

These are plain values with no tie to definitions, observers or the runtime, so every
layer (the handlers, the observers' hooks, the log's records) can use them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

import msgspec

from saga._validate import check_name, check_seconds

__all__ = ["Event", "StepContext", "Wait", "idempotency_key", "wait_for"]

S = TypeVar("S", bound=msgspec.Struct)


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


def idempotency_key(saga_id: str, step: str, compensating: bool) -> str:
    """Stable key for one saga + step + direction: the same on every attempt and after crashes."""
    direction = "compensate" if compensating else "forward"
    name = f"{len(saga_id)}:{saga_id}/{len(step)}:{step}/{direction}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "saga:" + name))


class StepContext(Generic[S]):
    """What a handler sees. Mutate ``state``; it is saved when the handler returns.

    Attributes:
        saga_id: the saga instance's id.
        saga_name: its definition's name.
        state: a private copy of the saga state; changes are discarded if the handler raises.
        step: the step's name.
        attempt: 1-based attempt number of this handler.
        compensating: ``True`` in ``compensate`` and ``on_compensation_event``, and in
            ``on_timeout`` after a compensation's wait.
        idempotency_key: stable for this saga + step + direction, across attempts and crashes.
        event: the `Event` being handled (``on_event``, ``on_compensation_event``), else None.
        annotations: what observers recorded when the saga started (e.g. its trace context).
    """

    __slots__ = (
        "_idempotency_key",
        "annotations",
        "attempt",
        "compensating",
        "event",
        "saga_id",
        "saga_name",
        "state",
        "step",
    )

    def __init__(
        self,
        *,
        saga_id: str,
        saga_name: str,
        state: S,
        step: str,
        attempt: int,
        compensating: bool,
        idempotency_key: str | None = None,
        event: Event | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self.state = state
        self.step = step
        self.attempt = attempt
        self.compensating = compensating
        self._idempotency_key = idempotency_key  # computed when first asked for, if None
        self.event = event
        self.annotations: Mapping[str, str] = annotations or {}

    @property
    def idempotency_key(self) -> str:
        key = self._idempotency_key
        if key is None:
            key = self._idempotency_key = idempotency_key(
                self.saga_id, self.step, self.compensating
            )
        return key

    def __repr__(self) -> str:
        return (
            f"StepContext(saga_id={self.saga_id!r}, step={self.step!r}, "
            f"attempt={self.attempt}, compensating={self.compensating})"
        )
