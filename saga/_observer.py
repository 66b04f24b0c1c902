"""Observers: hooks around every handler invocation and every committed transition."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from saga._context import StepContext
from saga._events import Wait
from saga._info import SagaInfo
from saga._records import Record

__all__ = ["Observer", "ObserverCalls", "StepOutcome"]

logger = logging.getLogger("saga.observers")


class StepOutcome(msgspec.Struct, frozen=True):
    """How a handler invocation ended, as `Observer.after_step` sees it.

    Attributes:
        kind: ``"completed"``, ``"waiting"`` or ``"failed"``.
        error: the exception, when ``kind == "failed"``.
        wait: the `Wait`, when ``kind == "waiting"``.
    """

    kind: Literal["completed", "waiting", "failed"]
    error: BaseException | None = None
    wait: Wait | None = None


class Observer:
    """Base class: override any of these async no-ops.

    Observers see live transitions only, never records folded during recovery or replay.
    An observer that raises is logged and counted, and never changes the saga's course.
    """

    async def on_start(
        self, saga_id: str, saga_name: str, version: int
    ) -> Mapping[str, str] | None:
        """Called by ``runtime.start`` in the caller's task, before ``saga_started`` is written.

        Return string pairs to record in the saga's log (``SagaStarted.annotations``);
        they come back as ``ctx.annotations`` and ``info.annotations`` in every process, after
        any restart. A tracer records its saga span's context here.
        """
        return None

    async def before_step(self, ctx: StepContext[Any]) -> None:
        """Called right before a handler runs (after its ``step_started`` is committed)."""

    async def after_step(self, ctx: StepContext[Any], outcome: StepOutcome) -> None:
        """Called right after a handler returns or raises, before its outcome is committed."""

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        """Called once per committed record, with the saga's summary right after it.

        ``record.body`` holds the record's details, typed by its kind (`StepFailed`, ...).
        """


class ObserverCalls:
    """Calls a set of observers, isolating the saga from their failures."""

    __slots__ = ("errors", "observers")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)
        self.errors = 0

    def __bool__(self) -> bool:
        return bool(self.observers)

    def _failed(self, observer: Observer, hook: str, error: Exception) -> None:
        self.errors += 1
        logger.exception(
            "observer %s.%s raised %s; the saga carries on",
            type(observer).__name__,
            hook,
            type(error).__name__,
            exc_info=error,
        )

    async def on_start(self, saga_id: str, saga_name: str, version: int) -> dict[str, str]:
        annotations: dict[str, str] = {}
        for observer in self.observers:
            try:
                extra = await observer.on_start(saga_id, saga_name, version)
                if extra:
                    annotations.update({str(k): str(v) for k, v in extra.items()})
            except Exception as error:
                self._failed(observer, "on_start", error)
        return annotations

    async def before_step(self, ctx: StepContext[Any]) -> None:
        for observer in self.observers:
            try:
                await observer.before_step(ctx)
            except Exception as error:
                self._failed(observer, "before_step", error)

    async def after_step(self, ctx: StepContext[Any], outcome: StepOutcome) -> None:
        for observer in self.observers:
            try:
                await observer.after_step(ctx, outcome)
            except Exception as error:
                self._failed(observer, "after_step", error)

    async def on_transition(self, record: Record, info: SagaInfo) -> None:
        for observer in self.observers:
            try:
                await observer.on_transition(record, info)
            except Exception as error:
                self._failed(observer, "on_transition", error)
