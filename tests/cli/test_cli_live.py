"""``saga abort`` and ``saga resume`` on a live store: a service process runs a `Runtime` on
a SQLite file (``_cli_service.py serve``), and the command line, in other processes, reads
that file and leaves requests the service acts on. Then the same with no service running:
the requests wait in the store, and the next service to start acts on them.

Nothing here asserts a tight timing: the command waits (``--wait``) for the service to take
a request, and the outcome is read back from the store with a generous deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _cli import Service, eventually, ok, ok_json, status
from test_cli import history

Services = Callable[[Path], Service]


@pytest.fixture
def services() -> Iterator[Services]:
    """Start ``serve`` services; any still running when the test ends is killed."""
    started: list[Service] = []

    def start(db: Path) -> Service:
        service = Service(db, "serve")
        started.append(service)
        service.expect("READY")
        return service

    yield start
    for service in started:
        service.close()


def test_abort_and_resume_reach_the_service_that_owns_the_store(
    tmp_path: Path, services: Services
) -> None:
    db = tmp_path / "saga.db"
    service = services(db)

    # Reads work while the service holds the store (no lock, no waiting).
    listed = {i["saga_id"]: i["status"] for i in ok_json("list", db=db)}
    assert listed == {"hold-1": "WAITING", "stuck-1": "FAILED",
                      "hold-2": "WAITING", "stuck-2": "FAILED"}  # fmt: skip

    said = " ".join(ok("abort", "hold-1", "--reason", "customer cancelled", "--wait", "30",
                       "--by", "ops:ana", db=db).split())  # fmt: skip
    assert said.startswith("abort of saga hold-1 requested by ops:ana. The runtime took the")
    eventually(lambda: status(db, "hold-1") == "COMPENSATED")
    records = history(db, "hold-1")
    [abort] = [r for r in records if r.kind == "abort_requested"]
    assert (abort.step, abort.data) == (
        "Pay", {"reason": "customer cancelled", "by": "ops:ana", "effective": True},
    )  # fmt: skip
    assert records[-1].kind == "saga_compensated"
    shown = ok_json("show", "hold-1", db=db)
    assert shown["saga"]["error"] == {"type": "Aborted", "message": "customer cancelled",
                                      "step": "Pay"}  # fmt: skip

    (tmp_path / "saga.db.fixed").touch()  # the refund service is repaired
    resumed = ok_json("resume", "stuck-1", "--reason", "refunds work again", "--wait", "30",
                      db=db)  # fmt: skip
    assert (resumed["request"], resumed["outcome"]) == ("resume", "taken")
    assert resumed["by"].startswith("cli:")
    eventually(lambda: status(db, "stuck-1") == "COMPENSATED")
    records = history(db, "stuck-1")
    [resume] = [r for r in records if r.kind == "saga_resumed"]
    assert resume.data == {"reason": "refunds work again", "by": resumed["by"]}
    after = [r.kind for r in records[resume.seq :]]
    assert after == ["step_started", "step_completed", "saga_compensated"]

    # Requests that do not apply change nothing, with the service running too.
    assert "nothing to abort" in ok("abort", "hold-1", "--reason", "again", db=db)
    assert ok_json("list", "--status", "COMPENSATED", db=db) != []
    service.stop()


def test_requests_wait_in_the_store_until_a_service_starts(
    tmp_path: Path, services: Services
) -> None:
    db = tmp_path / "saga.db"
    services(db).stop()

    said = " ".join(ok("abort", "hold-2", "--reason", "stop", "--wait", "0.3", db=db).split())
    assert "The request is stored but not taken yet: no runtime is running" in said
    (tmp_path / "saga.db.fixed").touch()
    pending = ok_json("resume", "stuck-2", "--wait", "0", db=db)
    assert (pending["outcome"], pending["status"]) == ("pending", "FAILED")
    assert pending["request_id"].startswith("resume-")
    shown = ok_json("show", "hold-2", db=db)
    assert [(p["kind"], p["payload"]["reason"]) for p in shown["pending"]] == [("abort", "stop")]
    assert "abort (abort)" in ok("show", "hold-2", db=db)
    assert status(db, "hold-2") == "WAITING"  # nothing acts on it yet

    service = services(db)  # its recovery takes both requests
    eventually(lambda: status(db, "hold-2") == "COMPENSATED")
    eventually(lambda: status(db, "stuck-2") == "COMPENSATED")
    service.stop()
    kinds = [r.kind for r in history(db, "stuck-2")]
    assert kinds.count("saga_resumed") == 1
    assert ok_json("show", "hold-2", db=db)["pending"] == []
