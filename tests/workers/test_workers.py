"""Many workers on one PostgreSQL database: three real processes share 1,000 sagas while one
is SIGKILLed and another is SIGSTOPped past its lease. Everything must still end exactly
once: every saga terminal, no step completed twice, every event delivered once, and the
log proves that no saga was ever written by an old owner after a new one took it over."""

from __future__ import annotations

import collections
import signal
import sys
import time
from pathlib import Path

import anyio
import asyncpg
import pytest
from _pg import PG_URL, url_for
from _processes import Process

from saga._records import decode_record
from saga._store._postgres import PostgresStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WORKER = Path(__file__).with_name("_pg_worker.py")
LEASE = 2.0
PER_WORKER = 334  # 1,002 sagas in all
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


async def send_payments(url_schema: str, numbers: range) -> dict[str, str]:
    """Send each order its ``paid`` event (declined for every 4th) from a client store."""
    client = PostgresStore(PG_URL, schema=url_schema, access="client")
    await client.open()
    sent = {}
    try:
        for n in numbers:
            event_id = f"pay-{n}"
            await client.send(
                f"order-{n}", event_id, kind="event", name="paid", key=None,
                payload=b"\x81\xa2ok" + (b"\xc2" if n % 4 == 0 else b"\xc3"),
                sent_at=time.time(),
            )  # fmt: skip
            sent[f"order-{n}"] = event_id
    finally:
        await client.close()
    return sent


async def read_store(schema: str) -> tuple[dict[str, str], dict[str, list], dict[int, str]]:
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    try:
        statuses = dict(await conn.fetch("SELECT saga_id, status FROM sagas"))
        logs: dict[str, list] = collections.defaultdict(list)
        rows = await conn.fetch("SELECT saga_id, seq, body, fence FROM saga_log ORDER BY 1, 2")
        for saga_id, _, body, fence in rows:
            logs[saga_id].append((decode_record(body), fence))
        workers = dict(await conn.fetch("SELECT fence, worker FROM saga_workers"))
    finally:
        await conn.close()
    return statuses, logs, workers


async def dump(schema: str) -> str:
    """The open sagas' logs (kind, fence) and inboxes, and the workers table."""
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    try:
        out = []
        for (saga_id,) in await conn.fetch(
            "SELECT saga_id FROM sagas WHERE status NOT IN ('COMPLETED','COMPENSATED','FAILED')"
        ):
            out.append(saga_id)
            for seq, body, fence in await conn.fetch(
                "SELECT seq, body, fence FROM saga_log WHERE saga_id=$1 ORDER BY seq", saga_id
            ):
                r = decode_record(body)
                out.append(f"  {seq} {fence} {r.kind} {r.at:.3f}")
            for row in await conn.fetch(
                "SELECT id, event_id, status, origin, tx, sent_at FROM saga_inbox WHERE saga_id=$1",
                saga_id,
            ):
                out.append(f"  inbox {tuple(row)}")
        out.append(str([tuple(r) for r in await conn.fetch("SELECT * FROM saga_workers")]))
        return "\n".join(out)
    finally:
        await conn.close()


async def all_terminal(schema: str) -> bool:
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    try:
        open_ = await conn.fetchval(
            "SELECT count(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')"
        )
    finally:
        await conn.close()
    return open_ == 0


def test_three_workers_survive_a_kill_and_a_pause_past_the_lease(schema: str) -> None:
    url = url_for(schema, lease_seconds=LEASE)
    workers = [Process([str(WORKER), url, str(i), str(PER_WORKER)]) for i in range(3)]
    try:
        for worker in workers:
            worker.wait_for("STARTED")
        total = 3 * PER_WORKER
        sent = anyio.run(send_payments, schema, range(0, total, 2))
        workers[0].signal(signal.SIGKILL)  # dies with sagas waiting and in flight
        sent.update(anyio.run(send_payments, schema, range(1, total, 2)))
        workers[1].signal(signal.SIGSTOP)  # paused mid-work, past its lease
        time.sleep(LEASE * 2.5)
        workers[1].signal(signal.SIGCONT)

        deadline = time.monotonic() + 60
        while not anyio.run(all_terminal, schema):
            if time.monotonic() > deadline:
                logs = "\n".join(f"{w.proc.pid}: " + "\n".join(w.errors[-20:]) for w in workers)
                raise AssertionError("sagas still open:\n" + anyio.run(dump, schema) + logs)
            time.sleep(0.25)
        for worker in workers[1:]:
            worker.signal(signal.SIGTERM)
            worker.wait_for("STOPPED")
    finally:
        for worker in workers:
            worker.finish()

    statuses, logs, fences = anyio.run(read_store, schema)
    assert len(statuses) == total
    for n in range(total):
        saga_id = f"order-{n}"
        expected = "COMPENSATED" if n % 4 == 0 or n % 5 == 0 else "COMPLETED"
        assert statuses[saga_id] == expected, saga_id
        records = [record for record, _ in logs[saga_id]]
        # No step completed twice (forward or compensating).
        completed = collections.Counter(
            (r.step, r.data["compensating"]) for r in records if r.kind == "step_completed"
        )
        assert max(completed.values()) == 1, (saga_id, completed)
        # The one event sent was delivered exactly once, and nothing was dead-lettered.
        delivered = [r.data["event"]["event_id"] for r in records if r.kind == "event_delivered"]
        assert delivered == [sent[saga_id]], saga_id
        assert records[-1].kind in ("saga_completed", "saga_compensated")
        # Fencing: each record was written under a registered fence, and once another
        # owner wrote, the one before never wrote again (each fence's records are one run).
        written_by = [fence for _, fence in logs[saga_id]]
        assert all(f in fences for f in written_by), saga_id
        runs = [f for i, f in enumerate(written_by) if i == 0 or written_by[i - 1] != f]
        assert len(runs) == len(set(runs)), (saga_id, written_by)

    # The kill and the pause really moved sagas: some sagas were written by two owners,
    # and the paused worker found its lease gone when it woke.
    moved = [s for s, entries in logs.items() if len({f for _, f in entries}) > 1]
    assert len(moved) >= PER_WORKER // 2
    assert any("lost its lease" in line for line in workers[1].errors), workers[1].errors[-20:]
    pids = {w.proc.pid for w in workers}
    assert {int(worker.split(":")[1]) for worker in fences.values()} <= pids
