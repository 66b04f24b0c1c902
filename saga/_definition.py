"""How users describe a saga: steps, waits, events, the handler context and the definition."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from saga._errors import StepTimeout
from saga._retry import RetryPolicy
from saga._validate import (
    MAX_VERSION,
    check_name,
    check_seconds,
)

if TYPE_CHECKING:
    from saga._observer import Observer

__all__ = ["Event", "Saga", "Step", "StepContext", "Wait", "idempotency_key", "wait_for"]

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


class Step:
    """Base class of a saga step. Override ``run``; every other handler is optional.

    Class attributes:
        name: the step's name in the log (default: the class name).
        retry: `RetryPolicy` for forward handlers (default: one attempt).
        compensation_retry: `RetryPolicy` for compensation handlers (default: 5 attempts,
            backoff from 1 s up to 30 s).
        compensate_on_failure: whether ``compensate`` runs for this step when it is the step
            that failed (it always runs once the step has completed).

    Each handler returns ``None`` (done) or a `Wait` from `wait_for` (continue).
    """

    name: ClassVar[str] = "Step"
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    compensation_retry: ClassVar[RetryPolicy] = RetryPolicy(
        max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=30.0
    )
    compensate_on_failure: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    async def run(self, ctx: StepContext[Any]) -> Wait | None:
        """The forward action."""
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    async def on_event(self, ctx: StepContext[Any], event: Event) -> Wait | None:
        """Called when the event a forward wait asked for arrives."""
        return None

    async def on_timeout(self, ctx: StepContext[Any]) -> Wait | None:
        """Called when a wait's timeout passes first. By default the step fails."""
        raise StepTimeout(f"step {ctx.step!r} timed out waiting")

    async def compensate(self, ctx: StepContext[Any]) -> Wait | None:
        """Undo the step. Must tolerate partial effects of a failed ``run``."""
        return None

    async def on_compensation_event(self, ctx: StepContext[Any], event: Event) -> Wait | None:
        """Called when the event a compensation's wait asked for arrives."""
        return None

    def __repr__(self) -> str:
        return f"<Step {self.name!r}>"


class Saga(Generic[S]):
    """A saga definition: a name, a version, a state type and ordered steps.

    Args:
        name: recorded in the log with ``version``; ``start`` by name picks the highest version.
        state: the state type, a ``msgspec.Struct`` subclass.
        steps: the steps, run in order; their names must be unique.
        version: bump it when the steps change; sagas started on the old version keep it.
        observers: `Observer` instances called for this definition's sagas only.

    Raises:
        ValueError: duplicate step names, no steps, a bad saga or step name (empty, too
            long, control characters, a lone surrogate), a version that is not an int from
            1 to 2**31 - 1, or a step's retry policy out of range (more than 1,000,000
            attempts, an interval over 100 years, a backoff that overflows a float).
        TypeError: a state that is not a ``msgspec.Struct`` type, a step that is not a
            `Step`, or a retry that is not a `RetryPolicy`.
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        steps: Sequence[Step],
        version: int = 1,
        observers: Sequence[Observer] = (),
    ) -> None:
        check_name(name, "saga name")
        if not (isinstance(state, type) and issubclass(state, msgspec.Struct)):
            raise TypeError(f"state must be a msgspec.Struct subclass, got {state!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version must be an int >= 1, got {version!r}")
        if version > MAX_VERSION:  # the stores keep it as a 32-bit integer
            raise ValueError(f"version must be at most {MAX_VERSION:,}, got {version}")
        steps = tuple(steps)
        if not steps:
            raise ValueError(f"saga {name!r} needs at least one step")
        seen: set[str] = set()
        for step in steps:
            if not isinstance(step, Step):
                raise TypeError(f"steps must be Step instances, got {step!r}")
            check_name(step.name, "step name")
            if step.name in seen:
                raise ValueError(f"saga {name!r} has two steps named {step.name!r}")
            for field in ("retry", "compensation_retry"):
                policy = getattr(step, field)
                what = f"step {step.name!r} {field}"
                if not isinstance(policy, RetryPolicy):
                    raise TypeError(f"{what} must be a saga.RetryPolicy, got {policy!r}")
            seen.add(step.name)
        self.name = name
        self.version = version
        self.state = state
        self.steps: tuple[Step, ...] = steps
        self.step_names: tuple[str, ...] = tuple(s.name for s in steps)
        self.observers: tuple[Observer, ...] = tuple(observers)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, version={self.version}, steps={list(self.step_names)!r})"
