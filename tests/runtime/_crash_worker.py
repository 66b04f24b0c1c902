"""A process for the crash tests to kill: runs a `Runtime` on a SQLite file, journals every
handler invocation, and prints markers so the parent knows when to send SIGKILL.

Usage: ``python _crash_worker.py DB JOURNAL SCENARIO MODE [--phase P] [--max-recoveries N]``

``MODE`` is ``start`` (start the scenario's sagas, print a marker, wait to be killed) or
``resume`` (open the runtime on the same file, which recovers everything, send what the
scenario still needs, wait until every saga is terminal, print ``SUMMARY {json}``).

Not a test module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import msgspec
from _wait import wait_until

import saga


class Note(msgspec.Struct):
    runs: int = 0


@dataclass
class Config:
    phase: str = "1"
    journal: TextIO | None = None
    block: set[tuple[str, str]] = field(default_factory=set)  # (step, handler) to block in
    kill_at: int | None = None  # block the Nth invocation of this process ("KILL_POINT")
    delay: float = 0.0  # seconds each handler sleeps, so that many are in flight at once
    invocations: int = 0


CONFIG = Config()


def journal(ctx: saga.StepContext[Any], handler: str, event_id: str | None = None) -> None:
    entry = {
        "phase": CONFIG.phase,
        "pid": os.getpid(),
        "saga": ctx.saga_id,
        "step": ctx.step,
        "handler": handler,
        "compensating": ctx.compensating,
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
        "event_id": event_id,
    }
    note(entry)


def note(entry: dict[str, Any]) -> None:
    out = CONFIG.journal
    assert out is not None
    out.write(json.dumps(entry) + "\n")
    out.flush()
    os.fsync(out.fileno())


def marker(text: str) -> None:
    print(text, flush=True)


async def act(ctx: saga.StepContext[Any], handler: str, event_id: str | None = None) -> None:
    journal(ctx, handler, event_id)
    ctx.state.runs += 1
    CONFIG.invocations += 1
    if CONFIG.invocations == CONFIG.kill_at:
        marker(f"KILL_POINT {ctx.saga_id} {ctx.step} {handler}")
        await anyio.sleep_forever()
    if (ctx.step, handler) in CONFIG.block:
        label = "IN_COMPENSATION" if ctx.compensating else "IN_STEP"
        marker(f"{label} {ctx.saga_id} {ctx.step}")
        await anyio.sleep_forever()
    if CONFIG.delay:  # 1x to 5x, by saga, so that the sagas drift apart
        await anyio.sleep(CONFIG.delay * (1 + sum(map(ord, ctx.saga_id)) % 5))


class Plain(saga.Step):
    async def run(self, ctx: saga.StepContext[Any]) -> saga.Wait | None:
        await act(ctx, "run")
        return None

    async def compensate(self, ctx: saga.StepContext[Any]) -> None:
        await act(ctx, "compensate")


class A(Plain):
    pass


class B(Plain):
    pass


class C(Plain):
    pass


class W(Plain):
    async def run(self, ctx: saga.StepContext[Any]) -> saga.Wait:
        await act(ctx, "run")
        return saga.wait_for("go", key=ctx.saga_id)

    async def on_event(self, ctx: saga.StepContext[Any], event: saga.Event) -> None:
        await act(ctx, "on_event", event.event_id)


class Boom(Exception):
    pass


class F(Plain):
    retry = saga.RetryPolicy(max_attempts=2, initial_interval=0.05)

    async def run(self, ctx: saga.StepContext[Any]) -> None:
        await act(ctx, "run")
        raise Boom("always")


class P(Plain):
    async def run(self, ctx: saga.StepContext[Any]) -> None:
        journal(ctx, "run")
        os.kill(os.getpid(), signal.SIGKILL)


LINEAR = saga.Saga("linear", state=Note, steps=[A(), B(), C()])
WAITER = saga.Saga("waiter", state=Note, steps=[A(), W(), C()])
COMP = saga.Saga("comp", state=Note, steps=[A(), B(), F(), C()])
POISON = saga.Saga("poison", state=Note, steps=[A(), P(), C()])
DEFINITIONS = [LINEAR, WAITER, COMP, POISON]


@dataclass
class Plan:
    sagas: list[tuple[str, saga.Saga[Any]]]
    early: list[tuple[str, str]] = field(default_factory=list)  # (saga_id, event_id)
    late: list[tuple[str, str]] = field(default_factory=list)


MIXED = [LINEAR, WAITER, COMP, WAITER]  # i % 4 == 3: its event is sent before the wait


def plan(scenario: str) -> Plan:
    if scenario == "mid-step":
        return Plan([("s1", LINEAR)])
    if scenario in ("waiting", "sent"):
        return Plan([("s1", WAITER)], late=[("s1", "ev-s1")])
    if scenario == "started":
        return Plan([("s1", LINEAR)])
    if scenario == "compensation":
        return Plan([("s1", COMP)])
    if scenario == "poison":
        return Plan([("s1", POISON)])
    if scenario == "mixed":
        sagas = [(f"m{i:03d}", MIXED[i % 4]) for i in range(100)]
        early = [(sid, f"ev-{sid}") for i, (sid, _) in enumerate(sagas) if i % 4 == 3]
        late = [(sid, f"ev-{sid}") for i, (sid, _) in enumerate(sagas) if i % 4 == 1]
        return Plan(sagas, early=early, late=late)
    raise SystemExit(f"unknown scenario {scenario!r}")


async def send(runtime: saga.Runtime, saga_id: str, event_id: str) -> None:
    await runtime.send(saga_id, "go", {"for": saga_id}, key=saga_id, event_id=event_id)
    note({"phase": CONFIG.phase, "pid": os.getpid(), "sent": event_id})


def freeze() -> None:
    """Block the event loop itself, so nothing at all runs until the parent kills us."""
    time.sleep(3600)


async def start(runtime: saga.Runtime, scenario: str, p: Plan) -> None:
    early = dict(p.early)

    async def start_one(saga_id: str, definition: saga.Saga[Any]) -> None:
        await runtime.start(definition, Note(), saga_id=saga_id)
        if scenario == "started":  # frozen before the event loop runs anything else
            marker(f"STARTED {saga_id}")
            freeze()
        if saga_id in early:
            await send(runtime, saga_id, early[saga_id])

    async with anyio.create_task_group() as tg:  # concurrently: all in flight at once
        for saga_id, definition in p.sagas:
            tg.start_soon(start_one, saga_id, definition)
    if scenario == "waiting":
        await wait_until(runtime, "s1", saga.Status.WAITING, timeout=30)
        marker("WAITING s1")
    elif scenario == "sent":
        await wait_until(runtime, "s1", saga.Status.WAITING, timeout=30)
        await send(runtime, "s1", "ev-s1")
        marker("SENT s1")
        freeze()
    elif scenario == "mixed":
        for saga_id, event_id in p.late:
            await anyio.sleep(0.01)
            await send(runtime, saga_id, event_id)
    await anyio.sleep_forever()


async def resume(runtime: saga.Runtime, scenario: str, p: Plan) -> None:
    if scenario == "mixed":  # sagas the kill came before are started now; others are kept
        for saga_id, definition in p.sagas:
            await runtime.start(definition, Note(), saga_id=saga_id)
    if scenario in ("waiting", "mixed"):
        # Everything the scenario sends, again with the same event ids: events that were
        # stored before the kill must not be stored or delivered a second time.
        for saga_id, event_id in p.early + p.late:
            await send(runtime, saga_id, event_id)
    summary = {}
    for saga_id, _ in p.sagas:
        info = await runtime.handle(saga_id).result(timeout=30)
        summary[saga_id] = info.status.value
    marker("SUMMARY " + json.dumps(summary))


async def main(args: argparse.Namespace) -> None:
    p = plan(args.scenario)
    url = f"sqlite:///{args.db}"
    async with saga.Runtime(url, sagas=DEFINITIONS, max_recoveries=args.max_recoveries) as rt:
        if args.mode == "start":
            await start(rt, args.scenario, p)
        else:
            await resume(rt, args.scenario, p)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("journal")
    parser.add_argument("scenario")
    parser.add_argument("mode", choices=["start", "resume"])
    parser.add_argument("--phase", default="1")
    parser.add_argument("--max-recoveries", type=int, default=10)
    parser.add_argument("--block", action="append", default=[], help="STEP:HANDLER")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    CONFIG.phase = arguments.phase
    CONFIG.block = {(s, h) for s, _, h in (b.partition(":") for b in arguments.block)}
    CONFIG.kill_at = arguments.kill_at
    CONFIG.delay = arguments.delay
    with open(arguments.journal, "a", encoding="utf-8") as journal_file:
        CONFIG.journal = journal_file
        anyio.run(main, arguments)
