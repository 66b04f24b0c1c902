"""Crash recovery with real processes: a worker (`_crash_worker.py`) runs sagas on a SQLite
file, is killed with SIGKILL at a marked point, and a new worker on the same file finishes.

The worker journals every handler invocation (fsynced) with its phase, so the tests can tell
what ran before the kill from what ran after it; the log is read through a `Runtime` opened
with no definitions, which recovers nothing and runs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _processes import child_env

import saga

WORKER = Path(__file__).with_name("_crash_worker.py")
MARKER_TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

Entry = dict[str, Any]


class Worker:
    """One `_crash_worker.py` process; its stdout lines are read by a thread."""

    def __init__(self, tmp: Path, scenario: str, mode: str, phase: str, *extra: str) -> None:
        self.stderr_path = tmp / f"stderr-{phase}.txt"
        argv = [sys.executable, str(WORKER), str(tmp / "saga.db"), str(tmp / "journal.jsonl"),
                scenario, mode, "--phase", phase, *extra]  # fmt: skip
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env()
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def expect(self, prefix: str, timeout: float = MARKER_TIMEOUT) -> str:
        """The first stdout line starting with ``prefix``; fails if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"no {prefix!r} from the worker in {timeout} s\n{self.stderr()}")
            if line is None:
                code = self.proc.wait(timeout=MARKER_TIMEOUT)
                pytest.fail(f"worker exited ({code}) before {prefix!r}\n{self.stderr()}")
            if line.startswith(prefix):
                return line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=MARKER_TIMEOUT) == -signal.SIGKILL

    def exit_code(self) -> int:
        return self.proc.wait(timeout=MARKER_TIMEOUT)

    def summary(self) -> dict[str, str]:
        line = self.expect("SUMMARY ", timeout=60)
        assert self.exit_code() == 0, self.stderr()
        result: dict[str, str] = json.loads(line.split(" ", 1)[1])
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=MARKER_TIMEOUT)
        self._reader.join(timeout=MARKER_TIMEOUT)  # it closes stdout at end of file


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Worker] = []

    def __call__(self, scenario: str, mode: str, phase: str, *extra: str) -> Worker:
        worker = Worker(self.tmp, scenario, mode, phase, *extra)
        self.started.append(worker)
        return worker

    def journal(self) -> list[Entry]:
        path = self.tmp / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def inspect(self, ids: list[str]) -> dict[str, tuple[saga.SagaInfo, list[saga.Record]]]:
        """Info and history of each saga, read without running anything (no definitions)."""

        async def read() -> dict[str, tuple[saga.SagaInfo, list[saga.Record]]]:
            url = f"sqlite:///{self.tmp / 'saga.db'}"
            async with saga.Runtime(url, sagas=[]) as runtime:
                assert await runtime.dead_letters() == []
                found = {}
                for sid in ids:
                    with contextlib.suppress(saga.UnknownSaga):  # not started before the kill
                        found[sid] = (await runtime.get(sid), await runtime.history(sid))
                return found

        return anyio.run(read)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    spawned = Workers(tmp_path)
    yield spawned
    for worker in spawned.started:
        worker.stop()


def calls(entries: list[Entry], saga_id: str = "s1", **match: Any) -> list[Entry]:
    """The journal's handler invocations of ``saga_id`` matching every ``field=value``."""
    return [
        e for e in entries if e.get("saga") == saga_id and all(e[k] == v for k, v in match.items())
    ]


def kinds(records: list[saga.Record], kind: str, **data: Any) -> list[saga.Record]:
    return [r for r in records if r.kind == kind and all(r.data[k] == v for k, v in data.items())]


def started_forward(records: list[saga.Record]) -> list[str]:
    """Forward steps in the order of their first ``step_started``."""
    order: list[str] = []
    for r in kinds(records, "step_started", compensating=False):
        assert r.step is not None
        if r.step not in order:
            order.append(r.step)
    return order


def collapse(steps: list[str]) -> list[str]:
    """``["F", "B", "B", "A"]`` -> ``["F", "B", "A"]``: a re-run after a crash counts once."""
    return [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]


def assert_one_key(entries: list[Entry]) -> None:
    """Every invocation of a saga + step + direction saw the same idempotency key."""
    keys: dict[tuple[str, str, bool], set[str]] = {}
    for e in entries:
        if "saga" in e:
            keys.setdefault((e["saga"], e["step"], e["compensating"]), set()).add(e["key"])
    assert all(len(k) == 1 for k in keys.values()), keys


def test_killed_mid_step_reruns_that_step_with_the_same_key(workers: Workers) -> None:
    first = workers("mid-step", "start", "1", "--block", "B:run")
    first.expect("IN_STEP s1 B")
    first.kill()
    info, log = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.RUNNING
    assert [r.step for r in kinds(log, "step_completed")] == ["A"]

    assert workers("mid-step", "resume", "2").summary() == {"s1": "COMPLETED"}

    entries = workers.journal()
    assert [(e["phase"], e["step"]) for e in calls(entries, handler="run")] == [
        ("1", "A"), ("1", "B"), ("2", "B"), ("2", "C"),
    ]  # fmt: skip
    assert_one_key(entries)
    info, log = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.COMPLETED
    assert [r.data["recovery"] for r in kinds(log, "step_started") if r.step == "B"] == [0, 1]
    assert [r.step for r in kinds(log, "step_completed")] == ["A", "B", "C"]
    assert log[-1].kind == "saga_completed"


def test_killed_while_waiting_then_the_event_is_delivered_once(workers: Workers) -> None:
    first = workers("waiting", "start", "1")
    first.expect("WAITING s1")
    first.kill()
    info, log = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.WAITING
    assert kinds(log, "event_delivered") == []

    assert workers("waiting", "resume", "2").summary() == {"s1": "COMPLETED"}

    entries = workers.journal()
    assert [(e["phase"], e["step"], e["handler"]) for e in calls(entries)] == [
        ("1", "A", "run"), ("1", "W", "run"), ("2", "W", "on_event"), ("2", "C", "run"),
    ]  # fmt: skip
    assert calls(entries, handler="on_event")[0]["event_id"] == "ev-s1"
    _, log = workers.inspect(["s1"])["s1"]
    assert [r.data["event"]["event_id"] for r in kinds(log, "event_delivered")] == ["ev-s1"]
    assert log[-1].kind == "saga_completed"


def test_killed_right_after_start_returned(workers: Workers) -> None:
    first = workers("started", "start", "1")
    first.expect("STARTED s1")
    first.kill()  # the worker froze its event loop after printing: no step could run
    info, log = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.RUNNING
    # The start committed the first step's step_started with saga_started (one commit);
    # its handler never ran, so the restart runs it as an interrupted run.
    assert [(r.kind, r.step) for r in log] == [("saga_started", None), ("step_started", "A")]
    assert workers.journal() == []

    assert workers("started", "resume", "2").summary() == {"s1": "COMPLETED"}

    entries = workers.journal()
    assert [(e["phase"], e["step"]) for e in calls(entries)] == [("2", "A"), ("2", "B"), ("2", "C")]
    _, log = workers.inspect(["s1"])["s1"]
    assert [r.data["recovery"] for r in kinds(log, "step_started") if r.step == "A"] == [0, 1]
    assert log[-1].kind == "saga_completed"


def test_killed_right_after_send_returned_the_buffered_event_is_delivered(
    workers: Workers,
) -> None:
    first = workers("sent", "start", "1")
    first.expect("SENT s1")
    first.kill()  # frozen right after send returned: the event is stored but not delivered
    info, log = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.WAITING
    assert kinds(log, "event_delivered") == []

    # This resume sends nothing: the stored event alone must wake the saga.
    assert workers("sent", "resume", "2").summary() == {"s1": "COMPLETED"}

    entries = workers.journal()
    assert [e["event_id"] for e in calls(entries, handler="on_event")] == ["ev-s1"]
    _, log = workers.inspect(["s1"])["s1"]
    assert [r.data["event"]["event_id"] for r in kinds(log, "event_delivered")] == ["ev-s1"]


def test_killed_during_compensation_resumes_it_in_reverse_order(workers: Workers) -> None:
    first = workers("compensation", "start", "1", "--block", "B:compensate")
    first.expect("IN_COMPENSATION s1 B")
    first.kill()
    info, _ = workers.inspect(["s1"])["s1"]
    assert info.status is saga.Status.COMPENSATING

    assert workers("compensation", "resume", "2").summary() == {"s1": "COMPENSATED"}

    entries = workers.journal()
    _, log = workers.inspect(["s1"])["s1"]
    started = started_forward(log)
    assert started == ["A", "B", "F"]  # C never started
    compensated = [(e["phase"], e["step"]) for e in calls(entries, compensating=True)]
    assert compensated == [("1", "F"), ("1", "B"), ("2", "B"), ("2", "A")]
    assert collapse([step for _, step in compensated]) == started[::-1]
    assert calls(entries, step="C") == []
    assert_one_key(entries)
    assert kinds(log, "compensation_started")[0].data["steps"] == ["F", "B", "A"]
    assert [r.step for r in kinds(log, "step_completed", compensating=True)] == ["F", "B", "A"]
    assert log[-1].kind == "saga_compensated"


def test_poison_step_is_failed_after_max_recoveries_and_compensated(workers: Workers) -> None:
    options = ("--max-recoveries", "3")
    assert workers("poison", "start", "1", *options).exit_code() == -signal.SIGKILL
    phase, summary = 1, None
    while summary is None:
        phase += 1
        assert phase <= 6, "the poison step keeps killing its process"
        worker = workers("poison", "resume", str(phase), *options)
        if worker.exit_code() != -signal.SIGKILL:
            summary = worker.summary()
    assert summary == {"s1": "COMPENSATED"}

    entries = workers.journal()
    runs = calls(entries, step="P", compensating=False)
    assert [e["phase"] for e in runs] == ["1", "2", "3"]
    assert_one_key(entries)
    _, log = workers.inspect(["s1"])["s1"]
    forward = kinds(log, "step_started", compensating=False)
    assert [r.data["recovery"] for r in forward if r.step == "P"] == [0, 1, 2]
    (failed,) = kinds(log, "step_failed")
    assert failed.step == "P"
    assert failed.data["error"]["type"] == "PoisonStep"
    assert failed.data["final"] is True
    assert kinds(log, "compensation_started")[0].data["steps"] == ["P", "A"]
    assert [e["step"] for e in calls(entries, compensating=True)] == ["P", "A"]
    assert calls(entries, step="C") == []
    assert log[-1].kind == "saga_compensated"


MIXED_IDS = [f"m{i:03d}" for i in range(100)]
MIXED_END = ["COMPLETED", "COMPLETED", "COMPENSATED", "COMPLETED"]  # by index % 4
WAITERS = [sid for i, sid in enumerate(MIXED_IDS) if i % 2 == 1]


def test_a_hundred_sagas_killed_in_flight_all_finish_exactly_once(workers: Workers) -> None:
    first = workers("mixed", "start", "1", "--kill-at", "300", "--delay", "0.01")
    first.expect("KILL_POINT")
    first.kill()
    before = workers.inspect(MIXED_IDS)
    assert any(not info.status.terminal for info, _ in before.values())
    done_before = {
        (sid, r.step) for sid, (_, log) in before.items() for r in kinds(log, "step_completed")
        if not r.data["compensating"]
    }  # fmt: skip
    assert done_before
    sent_before = {e["sent"] for e in workers.journal() if "sent" in e}

    summary = workers("mixed", "resume", "2", "--delay", "0.01").summary()
    assert summary == {sid: MIXED_END[i % 4] for i, sid in enumerate(MIXED_IDS)}

    entries = workers.journal()
    after = workers.inspect(MIXED_IDS)
    rerun = {
        (e["saga"], e["step"]) for e in entries
        if e["phase"] == "2" and "saga" in e and not e["compensating"]
    } & done_before  # fmt: skip
    assert rerun == set()
    assert_one_key(entries)
    delivered = Counter(
        r.data["event"]["event_id"]
        for _, log in after.values()
        for r in kinds(log, "event_delivered")
    )
    assert delivered == Counter({f"ev-{sid}": 1 for sid in WAITERS})
    assert sent_before <= set(delivered)
    for info, log in after.values():
        assert log[-1].kind == f"saga_{info.status.value.lower()}"
        if info.status is saga.Status.COMPENSATED:
            compensated = [r.step or "" for r in kinds(log, "step_completed", compensating=True)]
            assert compensated == started_forward(log)[::-1] == ["F", "B", "A"]
