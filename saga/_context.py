"""What a step's handler is given: `StepContext` (the waits and events it gives back and
receives are in `saga._events`).

A plain value with no tie to definitions, observers or the runtime, so every layer (the
handlers, the observers' hooks) can use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Generic, TypeVar

import msgspec

from saga._events import Event

__all__ = ["StepContext", "idempotency_key"]

S = TypeVar("S", bound=msgspec.Struct)


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
