"""Helpers shared by the behaviour tests of SPEC section 3 (public API only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

import saga

TERMINAL_KINDS = frozenset({"saga_completed", "saga_compensated", "saga_failed"})


class Trip(msgspec.Struct):
    """A saga state: the steps that ran, and a counter."""

    log: list[str] = msgspec.field(default_factory=list)
    n: int = 0


class Boom(Exception):
    """What failing test steps raise."""


class Gate(saga.Step):
    """Waits for a ``go`` event; counts its ``run`` calls."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        self.runs += 1
        return saga.wait_for("go")


def kinds(records: Sequence[saga.Record]) -> list[str]:
    return [r.kind for r in records]


def trail(records: Sequence[saga.Record]) -> list[tuple[str, str | None]]:
    """``(kind, step)`` of each record, ``kind`` suffixed with the handler for step_started."""
    out: list[tuple[str, str | None]] = []
    for r in records:
        kind = f"{r.kind}:{r.data['handler']}" if r.kind == "step_started" else r.kind
        out.append((kind, r.step))
    return out


def of_kind(records: Sequence[saga.Record], kind: str) -> list[saga.Record]:
    return [r for r in records if r.kind == kind]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds (fails the test after ``timeout`` seconds)."""
    with anyio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - polling the store is the point
            await anyio.sleep(0.005)


async def wait_records(
    runtime: saga.Runtime, saga_id: str, kind: str, count: int = 1
) -> list[saga.Record]:
    """Wait until the log holds ``count`` records of ``kind``; return the whole log."""
    records: list[saga.Record] = []

    async def check() -> bool:
        nonlocal records
        records = await runtime.history(saga_id)
        return len(of_kind(records, kind)) >= count

    await eventually(check)
    return records


async def settle() -> None:
    """Give running actors a moment (used before asserting that nothing happened)."""
    for _ in range(20):
        await anyio.sleep(0.005)


def simple_step(
    name: str,
    calls: list[str],
    *,
    fail: bool = False,
    compensate_on_failure: bool = True,
    **attrs: Any,
) -> saga.Step:
    """A step named ``name``: ``run`` logs and appends ``name`` to the state (then raises
    `Boom` if ``fail``); ``compensate`` logs. Each call is appended to ``calls``."""

    async def run(self: saga.Step, ctx: saga.StepContext[Trip]) -> None:
        calls.append(f"{name}.run")
        ctx.state.log.append(name)
        if fail:
            raise Boom(f"{name} broke")

    async def compensate(self: saga.Step, ctx: saga.StepContext[Trip]) -> None:
        calls.append(f"{name}.compensate")

    body = {"name": name, "compensate_on_failure": compensate_on_failure, **attrs}
    cls = type(f"Step_{name}", (saga.Step,), {**body, "run": run, "compensate": compensate})
    step: saga.Step = cls()
    return step
