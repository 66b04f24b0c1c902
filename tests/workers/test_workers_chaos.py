"""Three PostgreSQL workers under a seeded schedule of SIGKILLs and SIGSTOP pauses longer
than the lease, every worker starting sagas throughout (a paused worker too, as soon as it
runs again), with waits, retries and compensations. Every saga must reach the end its id
prescribes, no completed step may run again, every event is delivered exactly once, and no
saga may be left to nobody.

CI runs a few seeds for a few seconds each; ``SAGA_SOAK_SECONDS`` (chaos time per seed)
and ``SAGA_SOAK_SEEDS`` (how many seeds) make it a soak.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from _chaos_worker import declined, digest, expected
from _pg import PG_URL, query, url_for
from _processes import Process

from saga._records import decode_record
from saga._store import SendResult
from saga._store._postgres import PostgresStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WORKER = Path(__file__).with_name("_chaos_worker.py")
LEASE = 1.0
CHAOS_SECONDS = float(os.environ.get("SAGA_SOAK_SECONDS", "8"))
SEEDS = list(range(int(os.environ.get("SAGA_SOAK_SEEDS", "3"))))
OPEN = "status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')"


class Payer:
    """Sends every saga in the store its ``paid`` event, from a process-external client
    store (a thread with its own event loop), some of them twice with the same event id."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.sent: dict[str, str] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: anyio.run(self._run))

    def __enter__(self) -> Payer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def pay_all_now(self) -> None:
        anyio.run(self._pay_round, None)

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                await self._pay_round(None)
                await anyio.sleep(0.1)
        except BaseException as error:  # the test reports it
            self.errors.append(error)

    async def _pay_round(self, _: object) -> None:
        client = PostgresStore(PG_URL, schema=self.schema, access="client")
        await client.open()
        try:
            rows = await client.sagas(status=None, name=None, limit=100_000)
            for row in rows:
                if row.saga_id in self.sent:
                    continue
                event_id = "pay-" + row.saga_id
                ok = b"\xc2" if declined(row.saga_id) else b"\xc3"
                for _ in range(2 if digest(row.saga_id) % 3 == 1 else 1):  # a retried send
                    result = await client.send(
                        row.saga_id, event_id, kind="event", name="paid", key=row.saga_id,
                        payload=b"\x81\xa2ok" + ok, sent_at=time.time(),
                    )  # fmt: skip
                    assert result in (SendResult.FORWARDED, SendResult.DUPLICATE), result
                self.sent[row.saga_id] = event_id
        finally:
            await client.close()


class Fleet:
    """Three worker slots; a killed worker is replaced by a new process (new id prefix)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.generation = 0
        self.slots: list[Process] = []
        self.retired: list[Process] = []
        self.paused_then_resumed: list[tuple[Process, int]] = []

    def spawn(self, slot: int | None = None) -> Process:
        self.generation += 1
        prefix = f"w{self.generation}"
        process = Process([str(WORKER), self.url, prefix, "0.03"])
        process.wait_for("READY")
        if slot is None:
            self.slots.append(process)
        else:
            self.retired.append(self.slots[slot])
            self.slots[slot] = process
        return process

    def everyone(self) -> list[Process]:
        return self.retired + self.slots

    def started(self) -> set[str]:
        return {
            line.split()[1]
            for process in self.everyone()
            for line in list(process.lines)
            if line.startswith("STARTED ")
        }


def run_chaos(fleet: Fleet, rng: random.Random) -> list[str]:
    """Kill and pause workers at random for `CHAOS_SECONDS`; the moves made."""
    moves = []
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.3, 1.2))
        slot = rng.randrange(len(fleet.slots))
        victim = fleet.slots[slot]
        if rng.random() < 0.5:
            victim.signal(signal.SIGKILL)
            victim.proc.wait(timeout=30)
            fleet.spawn(slot)
            moves.append(f"kill {slot}")
        else:
            pause = rng.uniform(LEASE * 1.5, LEASE * 3)
            victim.signal(signal.SIGSTOP)
            time.sleep(pause)
            before = sum(line.startswith("STARTED ") for line in list(victim.lines))
            victim.signal(signal.SIGCONT)
            fleet.paused_then_resumed.append((victim, before))
            moves.append(f"pause {slot} {pause:.1f}s")
    return moves


async def read_logs(schema: str) -> tuple[dict[str, str], dict[str, list]]:
    statuses = {r[0]: r[1] for r in await query(schema, "SELECT saga_id, status FROM sagas")}
    logs: dict[str, list] = collections.defaultdict(list)
    rows = await query(schema, "SELECT saga_id, seq, body, fence FROM saga_log ORDER BY 1, 2")
    for saga_id, _, body, fence in rows:
        logs[saga_id].append((decode_record(body), fence))
    return statuses, logs


async def open_sagas(schema: str) -> list[tuple]:
    return [tuple(r) for r in await query(
        schema, f"SELECT saga_id, status, step, owner, parked IS NOT NULL FROM sagas WHERE {OPEN}"
    )]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_workers_killed_and_paused_at_random_lose_nothing(schema: str, seed: int) -> None:
    rng = random.Random(seed)
    fleet = Fleet(url_for(schema, lease_seconds=LEASE))
    try:
        for _ in range(3):
            fleet.spawn()
        with Payer(schema) as payer:
            moves = run_chaos(fleet, rng)
            time.sleep(1.0)  # the last one paused starts again before the starts stop
            for process in fleet.slots:
                process.signal(signal.SIGUSR1)  # no more starts
            for process in fleet.slots:
                process.wait_for("QUIET")
            payer.pay_all_now()
            deadline = time.monotonic() + 90
            while remaining := anyio.run(open_sagas, schema):
                if time.monotonic() > deadline:
                    errors = "\n".join(
                        f"{p.proc.pid}: " + "\n".join(p.errors[-15:]) for p in fleet.slots
                    )
                    raise AssertionError(f"seed {seed}, moves {moves}: still open "
                                         f"{remaining[:20]}\n{errors}")  # fmt: skip
                time.sleep(0.25)
        assert not payer.errors, payer.errors
        for process in fleet.slots:
            process.signal(signal.SIGTERM)
            process.wait_for("STOPPED")
    finally:
        for process in fleet.everyone():
            if process.proc.poll() is None:
                process.signal(signal.SIGCONT)
            process.finish()

    statuses, logs = anyio.run(read_logs, schema)
    started = fleet.started()
    assert started <= set(statuses), "a start returned but its saga is not in the store"
    assert len(started) >= 50, len(started)
    for saga_id, status in statuses.items():
        records = [record for record, _ in logs[saga_id]]
        assert status == expected(saga_id), (saga_id, status, [r.kind for r in records])
        completed = collections.Counter(
            (r.step, r.data["compensating"]) for r in records if r.kind == "step_completed"
        )
        assert max(completed.values()) == 1, (saga_id, completed)  # never again
        delivered = [r.data["event"]["event_id"] for r in records if r.kind == "event_delivered"]
        assert delivered == ["pay-" + saga_id], (saga_id, delivered)  # exactly once
        assert records[-1].kind in ("saga_completed", "saga_compensated")
        written_by = [fence for _, fence in logs[saga_id]]
        runs = [f for i, f in enumerate(written_by) if i == 0 or written_by[i - 1] != f]
        assert len(runs) == len(set(runs)), (saga_id, written_by)  # no old owner came back

    # The chaos was real: workers were killed or paused, and a paused worker went on
    # starting sagas once it ran again (under a new lease).
    assert fleet.retired or fleet.paused_then_resumed
    for victim, before in fleet.paused_then_resumed:
        if victim in fleet.slots:
            after = sum(line.startswith("STARTED ") for line in victim.lines)
            assert after > before, "a worker started nothing after its pause"
            assert any("lost its lease" in line for line in victim.errors)
    refused = [line for p in fleet.everyone() for line in p.lines if line.startswith("START-ERROR")]
    assert not refused, refused[:5]
