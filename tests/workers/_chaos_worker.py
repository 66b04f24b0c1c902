"""A worker process for the adversarial many-workers test: a `Runtime` on a PostgreSQL
schema that keeps starting sagas until told to stop, while the test kills and pauses it.

Usage: ``python _chaos_worker.py URL PREFIX INTERVAL``

Starts ``<PREFIX>-<n>`` for n = 0, 1, ... every ``INTERVAL`` seconds, printing
``STARTED <id>`` once each `start` returned (durable) and ``START-ERROR <id> <type>`` if it
raised. SIGUSR1 stops the starts (``QUIET``); SIGTERM closes the runtime cleanly
(``STOPPED``). The expected end of every saga follows from its id alone (`expected`), so
the test can judge sagas whose start was cut short by a kill too.

The saga: ``Reserve`` -> ``Pay`` (waits for ``paid``; ``{"ok": false}`` fails it) ->
``Ship`` (fails its first attempt for some ids, then is retried after a durable backoff;
fails for good for others). Compensations run in reverse; ``Pay``'s compensation fails its
first attempt for some ids and is retried. Not a test module.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import sys

import anyio
import msgspec

import saga


def digest(saga_id: str) -> int:
    return int.from_bytes(hashlib.sha1(saga_id.encode()).digest()[:4], "big")


def declined(saga_id: str) -> bool:
    return digest(saga_id) % 7 == 0


def expected(saga_id: str) -> str:
    """The terminal status of the saga ``saga_id``, once it got its ``paid`` event."""
    h = digest(saga_id)
    return "COMPENSATED" if declined(saga_id) or h % 5 == 0 else "COMPLETED"


class Order(msgspec.Struct):
    trail: list[str] = msgspec.field(default_factory=list)


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        await anyio.sleep(0.002)
        ctx.state.trail.append("reserved")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.trail.append("released")


class Pay(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=4, initial_interval=0.05)

    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id, timeout=600)

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        if not event.payload["ok"]:
            raise RuntimeError("card declined")
        ctx.state.trail.append("paid")

    async def compensate(self, ctx: saga.StepContext[Order]) -> None:
        if digest(ctx.saga_id) % 4 == 0 and ctx.attempt == 1:
            raise RuntimeError("refund service busy")
        ctx.state.trail.append("refunded")


class Ship(saga.Step):
    retry = saga.RetryPolicy(max_attempts=3, initial_interval=0.05)

    async def run(self, ctx: saga.StepContext[Order]) -> None:
        await anyio.sleep(0.002)
        h = digest(ctx.saga_id)
        if h % 5 == 0:
            raise RuntimeError("no truck, ever")
        if h % 3 == 0 and ctx.attempt == 1:
            raise RuntimeError("no truck yet")
        ctx.state.trail.append("shipped")


ORDER = saga.Saga("chaos-order", state=Order, steps=[Reserve(), Pay(), Ship()])


async def main(url: str, prefix: str, interval: float) -> None:
    async with saga.Runtime(url, sagas=[ORDER]) as runtime:
        print("READY", flush=True)
        quiet = anyio.Event()

        async def starts() -> None:
            n = 0
            while not quiet.is_set():
                saga_id = f"{prefix}-{n}"
                try:
                    await runtime.start(ORDER, Order(), saga_id=saga_id)
                except Exception as error:
                    print(f"START-ERROR {saga_id} {type(error).__name__}: {error}", flush=True)
                else:
                    print(f"STARTED {saga_id}", flush=True)
                n += 1
                await anyio.sleep(interval)

        with anyio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(starts)
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        quiet.set()
                        print("QUIET", flush=True)
                    else:
                        quiet.set()
                        break
    print("STOPPED", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
