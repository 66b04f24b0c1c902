"""Observer annotations recorded at start, and the sender's trace context on events."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider

import saga

pytestmark = pytest.mark.anyio


class State(msgspec.Struct):
    n: int = 0


class Annotating(saga.Observer):
    def __init__(self, key: str) -> None:
        self.key = key
        self.seen: list[tuple[str, Mapping[str, str], saga.Event | None]] = []

    async def on_start(self, saga_id: str, saga_name: str, version: int) -> Mapping[str, str]:
        return {self.key: f"{saga_name}/{version}/{saga_id}"}

    async def before_step(self, ctx: saga.StepContext[Any]) -> None:
        self.seen.append((ctx.step, dict(ctx.annotations), ctx.event))


class Broken(saga.Observer):
    async def on_start(self, saga_id: str, saga_name: str, version: int) -> Mapping[str, str]:
        raise RuntimeError("observer bug")


class Waits(saga.Step):
    async def run(self, ctx: saga.StepContext[State]) -> saga.Wait:
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[State], event: saga.Event) -> None:
        ctx.state.n = event.payload


async def test_annotations_are_recorded_at_start_and_seen_everywhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runtime_level, saga_level = Annotating("rt"), Annotating("def")
    definition = saga.Saga("ann", state=State, steps=[Waits()], observers=[saga_level])
    async with saga.Runtime(url, sagas=[definition], observers=[runtime_level, Broken()]) as rt:
        await rt.start(definition, State(), saga_id="s1")
        first = (await rt.history("s1"))[0]
        assert (await rt.get("s1")).annotations == {"rt": "ann/1/s1", "def": "ann/1/s1"}
        assert rt.observer_errors == 1  # the broken observer is counted, the saga starts
    assert first.data["annotations"] == {"rt": "ann/1/s1", "def": "ann/1/s1"}

    # After a restart the annotations come back from the log, for ctx and for replay.
    after = Annotating("late")
    async with saga.Runtime(url, sagas=[definition], observers=[after]) as rt:
        await rt.send("s1", "go", 7)
        info = await rt.handle("s1").result(timeout=5)
        records = await rt.history("s1")
    assert info.state == State(n=7)
    assert [(step, ann) for step, ann, _ in after.seen] == [
        ("Waits", {"rt": "ann/1/s1", "def": "ann/1/s1"})
    ]
    *_, (_, last) = saga.replay(records, definition)
    assert last.annotations == {"rt": "ann/1/s1", "def": "ann/1/s1"}


async def test_send_records_the_senders_trace_context_on_the_event() -> None:
    tracer = TracerProvider().get_tracer("test")  # a local provider; the global one is untouched
    observer = Annotating("x")
    definition = saga.Saga("ctx", state=State, steps=[Waits()])
    async with saga.Runtime("sqlite:///:memory:", sagas=[definition], observers=[observer]) as rt:
        handle = await rt.start(definition, State(), saga_id="s")
        with tracer.start_as_current_span("http request") as span:
            await rt.send("s", "go", 1)
            sender = span.get_span_context()
        await handle.result(timeout=5)
        await rt.start(definition, State(), saga_id="plain")
        await rt.send("plain", "go", 2)  # no current span: no headers
        await rt.handle("plain").result(timeout=5)
        delivered = [r for r in await rt.history("s") if r.kind == "event_delivered"]
        plain = [r for r in await rt.history("plain") if r.kind == "event_delivered"]

    expected = f"00-{sender.trace_id:032x}-{sender.span_id:016x}-{sender.trace_flags:02x}"
    assert delivered[0].data["event"]["headers"] == {"traceparent": expected}
    assert "headers" not in plain[0].data["event"]
    events = [event for _, _, event in observer.seen if event is not None]
    assert [e.headers for e in events] == [{"traceparent": expected}, {}]
