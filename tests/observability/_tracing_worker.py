"""A traced process for the tracing crash test to kill: a `Runtime` with a `TracingObserver`
whose spans go, as each ends, to a JSON-lines file (fsynced, so a SIGKILL loses none).

Usage: ``python _tracing_worker.py DB SPANS JOURNAL MODE`` where ``MODE`` is

* ``start``: start saga ``w`` (it waits for an event) and saga ``x`` (its event is sent at
  once, so it runs on into step B, which blocks), print ``READY`` and wait to be killed;
* ``resume``: open the runtime on the same file (recovery re-runs x's step B), send w its
  event, wait until both sagas are terminal and print ``SUMMARY {json}``.

Every handler invocation is journaled (fsynced) with its phase. Not a test module.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _wait import wait_until
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import saga
from observers import TracingObserver

PHASE = "start"
JOURNAL: Path | None = None


class FileSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                assert span.context is not None
                out.write(json.dumps({
                    "pid": os.getpid(),
                    "name": span.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "links": [f"{link.context.span_id:016x}" for link in span.links],
                }) + "\n")  # fmt: skip
            out.flush()
            os.fsync(out.fileno())
        return SpanExportResult.SUCCESS


def journal(ctx: saga.StepContext[Any], handler: str) -> None:
    assert JOURNAL is not None
    entry = {"phase": PHASE, "saga": ctx.saga_id, "step": ctx.step, "handler": handler}
    with JOURNAL.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
        out.flush()
        os.fsync(out.fileno())


class Note(msgspec.Struct):
    runs: int = 0


class Plain(saga.Step):
    async def run(self, ctx: saga.StepContext[Note]) -> saga.Wait | None:
        journal(ctx, "run")
        ctx.state.runs += 1
        return None


class A(Plain):
    pass


class W(saga.Step):
    async def run(self, ctx: saga.StepContext[Note]) -> saga.Wait:
        journal(ctx, "run")
        return saga.wait_for("go", key=ctx.saga_id)

    async def on_event(self, ctx: saga.StepContext[Note], event: saga.Event) -> None:
        journal(ctx, "on_event")


class B(saga.Step):
    async def run(self, ctx: saga.StepContext[Note]) -> None:
        journal(ctx, "run")
        if PHASE == "start":
            print(f"BLOCKED {ctx.saga_id}", flush=True)
            await anyio.sleep_forever()


class C(Plain):
    pass


CRASH = saga.Saga("crash", state=Note, steps=[A(), W(), B(), C()])


async def main(db: str, spans: Path, mode: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(spans)))
    tracer = provider.get_tracer("worker")
    observer = TracingObserver(tracer_provider=provider)
    async with saga.Runtime(f"sqlite:///{db}", sagas=[CRASH], observers=[observer]) as rt:
        if mode == "start":
            for saga_id in ("w", "x"):
                with tracer.start_as_current_span("request", attributes={"saga.id": saga_id}):
                    await rt.start(CRASH, Note(), saga_id=saga_id)
            await wait_until(rt, "w", saga.Status.WAITING, timeout=30)
            await wait_until(rt, "x", saga.Status.WAITING, timeout=30)
            with tracer.start_as_current_span("send", attributes={"saga.id": "x"}):
                await rt.send("x", "go", key="x")
            # x now runs into B and blocks there; the parent kills us once it says so.
            await anyio.sleep_forever()
        else:
            with tracer.start_as_current_span("send", attributes={"saga.id": "w"}):
                await rt.send("w", "go", key="w")
            summary = {}
            for saga_id in ("w", "x"):
                summary[saga_id] = (await rt.handle(saga_id).result(timeout=30)).status.value
            print("SUMMARY " + json.dumps(summary), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    db_path, spans_path, journal_path, run_mode = sys.argv[1:5]
    PHASE = run_mode
    JOURNAL = Path(journal_path)
    anyio.run(main, db_path, Path(spans_path), run_mode)
