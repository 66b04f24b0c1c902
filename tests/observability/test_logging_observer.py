"""LoggingObserver lines, and observers that raise: logged, counted, and never in the way."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from _otel import named, tracing
from _wait import wait_until

import saga
from observers import LoggingObserver, MetricsObserver, StateChangeRecorder, TracingObserver

pytestmark = pytest.mark.anyio

MEMORY = "sqlite:///:memory:"


class State(msgspec.Struct):
    n: int = 0


class Declined(Exception):
    pass


class Count(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> None:
        ctx.state.n += 1


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> saga.Wait:
        return saga.wait_for("paid")

    async def on_event(self, ctx: saga.StepContext[State], event: saga.Event) -> None:
        if not event.payload:
            raise Declined("card refused")


class Undo(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=1)

    async def run(self, ctx: saga.StepContext[State]) -> None:
        pass

    async def compensate(self, ctx: saga.StepContext[State]) -> None:
        raise Declined("cannot undo")


TRIP = saga.Saga("trip", state=State, steps=[Count(), Pay()])
STUCK = saga.Saga("stuck", state=State, steps=[Undo(), Pay()])


async def test_one_line_per_transition_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.sagas")
    with caplog.at_level(logging.INFO, logger="test.sagas"):
        async with saga.Runtime(MEMORY, sagas=[TRIP], observers=[LoggingObserver(logger)]) as rt:
            handle = await rt.start(TRIP, State(), saga_id="t1")
            await wait_until(rt, "t1", saga.Status.WAITING, timeout=10)
            await rt.send("t1", "paid", True)
            await handle.result(timeout=5)
            history = await rt.history("t1")
    records = [r for r in caplog.records if r.name == "test.sagas"]
    assert len(records) == len(history)  # one line per transition
    assert [r.saga_kind for r in records] == [h.kind for h in history]  # type: ignore[attr-defined]
    assert [r.saga_seq for r in records] == [h.seq for h in history]  # type: ignore[attr-defined]
    assert {r.levelno for r in records} == {logging.INFO}
    assert records[2].getMessage() == "saga t1 seq=3 step_completed step=Count status=RUNNING"
    last = records[-1]
    assert last.getMessage() == "saga t1 seq=9 saga_completed step=None status=COMPLETED"
    fields = {k: getattr(last, k) for k in ("saga_id", "saga_name", "saga_version",
                                            "saga_status", "saga_step", "saga_error")}  # fmt: skip
    assert fields == {
        "saga_id": "t1", "saga_name": "trip", "saga_version": 1,
        "saga_status": "COMPLETED", "saga_step": None, "saga_error": None,
    }  # fmt: skip


async def test_failures_are_warnings_and_a_failed_saga_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="saga.transitions"):
        async with saga.Runtime(MEMORY, sagas=[STUCK], observers=[LoggingObserver()]) as rt:
            handle = await rt.start(STUCK, State(), saga_id="s")
            await wait_until(rt, "s", saga.Status.WAITING, timeout=10)
            await rt.send("s", "paid", False)
            assert (await handle.result(timeout=5)).status is saga.Status.FAILED
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "saga.transitions"]
    assert ("WARNING", "saga s seq=8 step_failed step=Pay status=RUNNING "
            "error='Declined: card refused'") in lines  # fmt: skip
    assert ("WARNING", "saga s seq=9 compensation_started step=None status=COMPENSATING "
            "error='Declined: card refused'") in lines  # fmt: skip
    assert lines[-1] == ("ERROR", "saga s seq=14 saga_failed step=Undo status=FAILED "
                         "error='Declined: cannot undo'")  # fmt: skip


class Raising(saga.Observer):
    """Raises in every hook."""

    async def on_start(self, saga_id: str, saga_name: str, version: int) -> Mapping[str, str]:
        raise RuntimeError("on_start bug")

    async def before_step(self, ctx: saga.StepContext[Any]) -> None:
        raise RuntimeError("before_step bug")

    async def after_step(self, ctx: saga.StepContext[Any], outcome: saga.StepOutcome) -> None:
        raise RuntimeError("after_step bug")

    async def on_transition(self, record: saga.Record, info: saga.SagaInfo) -> None:
        raise RuntimeError("on_transition bug")


async def test_an_observer_that_raises_changes_nothing_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run(extra: list[saga.Observer]) -> tuple[saga.SagaInfo, list[Any], list[str], int]:
        provider, exporter = tracing()
        observers = [*extra, TracingObserver(provider), MetricsObserver(),
                     StateChangeRecorder(lambda change: None), LoggingObserver()]  # fmt: skip
        async with saga.Runtime(MEMORY, sagas=[TRIP], observers=observers) as rt:
            handle = await rt.start(TRIP, State(), saga_id="t")
            await wait_until(rt, "t", saga.Status.WAITING, timeout=10)
            await rt.send("t", "paid", False)
            info = await handle.result(timeout=5)
            history = await rt.history("t")
            spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
            log = [(r.kind, r.step, r.data) for r in history]
            return info, log, [s.name for s in spans], rt.observer_errors

    clean_info, clean_log, clean_spans, clean_errors = await run([])
    with caplog.at_level(logging.ERROR, logger="saga.observers"):
        info, log, spans, errors = await run([Raising()])
    assert clean_errors == 0
    # The same course: the same records, the same outcome (times aside).
    assert [(k, s) for k, s, _ in log] == [(k, s) for k, s, _ in clean_log]
    assert info.status is clean_info.status is saga.Status.COMPENSATED
    assert info.state == clean_info.state
    assert info.annotations.keys() == clean_info.annotations.keys() == {"otel.saga_span"}
    assert spans == clean_spans  # the other observers saw everything
    # Every failure counted and logged with its hook: 1 start, 5 handlers, 14 records.
    assert errors == 1 + 5 * 2 + len(log) == 25
    hooks = [r.getMessage() for r in caplog.records if r.name == "saga.observers"]
    assert hooks.count("observer Raising.on_start raised RuntimeError; the saga carries on") == 1
    assert hooks.count("observer Raising.before_step raised RuntimeError; the saga carries on") == 5
    assert hooks.count("observer Raising.after_step raised RuntimeError; the saga carries on") == 5
    assert len(hooks) == errors
    assert all(r.exc_info is not None for r in caplog.records if r.name == "saga.observers")


async def test_spans_are_unaffected_by_a_raising_observer() -> None:
    provider, exporter = tracing()
    observers = [Raising(), TracingObserver(provider), Raising()]
    async with saga.Runtime(MEMORY, sagas=[TRIP], observers=observers) as rt:
        handle = await rt.start(TRIP, State(), saga_id="t")
        await wait_until(rt, "t", saga.Status.WAITING, timeout=10)
        await rt.send("t", "paid", True)
        await handle.result(timeout=5)
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == [
        "saga trip", "saga trip completed", "step Count", "step Pay", "step Pay",
    ]  # fmt: skip
    (anchor,) = named(spans, "saga trip")
    assert anchor.context is not None
    assert {s.parent.span_id for s in spans if s.parent} == {anchor.context.span_id}
