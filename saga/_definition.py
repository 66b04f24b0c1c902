"""How users describe a saga: its steps, their retry policies, and the definition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from saga._context import StepContext
from saga._errors import StepTimeout
from saga._events import Event, Wait
from saga._observer import Observer
from saga._retry import RetryPolicy
from saga._validate import MAX_VERSION, check_name

__all__ = ["Saga", "Step"]

S = TypeVar("S", bound=msgspec.Struct)


ON_EXHAUSTED = ("compensate", "suspend")


class Step:
    """Base class of a saga step. Override ``run``; every other handler is optional.

    Class attributes:
        name: the step's name in the log (default: the class name).
        retry: `RetryPolicy` for forward handlers (default: one attempt).
        compensation_retry: `RetryPolicy` for compensation handlers (default: 5 attempts,
            backoff from 1 s up to 30 s).
        compensate_on_failure: whether ``compensate`` runs for this step when it is the step
            that failed (it always runs once the step has completed).
        on_exhausted: what the saga does when a forward handler of this step fails for
            good (its attempts used up, or a non-retryable error): ``"compensate"``
            (default) compensates; ``"suspend"`` records ``saga_suspended`` and the saga
            waits, ``SUSPENDED``, for an operator's ``retry``, ``skip`` or ``abort``.

    Each handler returns ``None`` (done) or a `Wait` from `wait_for` (continue).
    """

    name: ClassVar[str] = "Step"
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    compensation_retry: ClassVar[RetryPolicy] = RetryPolicy(
        max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=30.0
    )
    compensate_on_failure: ClassVar[bool] = True
    on_exhausted: ClassVar[str] = "compensate"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def should_run(self, state: Any) -> bool:
        """Whether the step runs for this saga; asked once, when its turn comes.

        Override it to make a step conditional. It is called with the state as committed
        when the step's turn comes (before its ``step_started``), must be quick, pure and
        synchronous, and must answer the same for the same state: after a crash it may be
        asked again. ``False`` records ``step_skipped`` and goes on with the next step; a
        skipped step is never compensated. An exception fails the step for good (no
        retry) and the saga compensates the steps before it.
        """
        return True

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

    Attributes:
        steps: the steps, in order; ``step_names`` their names.
        conditional: the names of the steps that override ``should_run``.

    Raises:
        ValueError: duplicate step names, no steps, a bad saga or step name (empty, too
            long, control characters, a lone surrogate), a version that is not an int from
            1 to 2**31 - 1, an ``on_exhausted`` other than ``"compensate"`` or
            ``"suspend"``, or a step's retry policy out of range (more than 1,000,000
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
            if step.on_exhausted not in ON_EXHAUSTED:
                raise ValueError(
                    f"step {step.name!r} on_exhausted must be 'compensate' or 'suspend', "
                    f"got {step.on_exhausted!r}"
                )
            seen.add(step.name)
        self.name = name
        self.version = version
        self.state = state
        self.steps: tuple[Step, ...] = steps
        self.step_names: tuple[str, ...] = tuple(s.name for s in steps)
        # The steps that override should_run: only their turn needs the state decoded.
        self.conditional: frozenset[str] = frozenset(
            s.name for s in steps if type(s).should_run is not Step.should_run
        )
        self.observers: tuple[Observer, ...] = tuple(observers)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, version={self.version}, steps={list(self.step_names)!r})"
