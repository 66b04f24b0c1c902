"""The ``saga`` command line's read commands and its user errors, through real subprocesses
(``python -m saga``) on a store that a real runtime wrote (``_cli_service.py populate``):
completed, compensated, timed out, FAILED and waiting sagas, and two dead letters."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from _cli import failed, fails, fits, ok, ok_json, populate, run, run_many, succeeded
from _cli_service import TRIP

import saga
from saga._cli import main
from saga._cli._parser import build_parser

NEWEST_FIRST = ["wait-1", "stuck-1", "late-1", "declined-1", "ok-1"]
STATUS = {"ok-1": "COMPLETED", "declined-1": "COMPENSATED", "late-1": "COMPENSATED",
          "stuck-1": "FAILED", "wait-1": "WAITING"}  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The populated store, shared by this module's tests; none of them may change it."""
    path = tmp_path_factory.mktemp("cli") / "trips.db"
    populate(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    yield path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "a command changed the store"


def history(db: Path, saga_id: str) -> list[saga.Record]:
    return msgspec.convert(ok_json("history", saga_id, db=db), list[saga.Record])


# -- list -------------------------------------------------------------------------------------


def test_list(db: Path) -> None:
    lines = ok("list", db=db).splitlines()
    assert lines[0].split() == ["ID", "NAME", "V", "STATUS", "STEP", "UPDATED"]
    assert [line.split()[0] for line in lines[1:-1]] == NEWEST_FIRST
    for line in lines[1:-1]:
        saga_id, name, version, status = line.split()[:4]
        assert (name, version, status) == ("book-trip", "1", STATUS[saga_id])
        assert line.endswith(" ago")
    assert lines[-1] == "5 sagas, newest first"

    infos = ok_json("list", db=db)
    assert [(i["saga_id"], i["status"]) for i in infos] == [(s, STATUS[s]) for s in NEWEST_FIRST]
    waiting = infos[0]
    assert (waiting["step"], waiting["state"]) == (
        "Pay", {"trip_id": "wait-1", "hotel": "room-wait-1", "paid": False},
    )  # fmt: skip
    assert infos[1]["error"] == {"type": "Declined", "message": "refund service down",
                                 "step": "Reserve"}  # fmt: skip


def test_list_filters_and_limit(db: Path) -> None:
    assert [i["saga_id"] for i in ok_json("list", "--status", "failed", db=db)] == ["stuck-1"]
    compensated = ok_json("list", "--status", "COMPENSATED", "--name", "book-trip", db=db)
    assert [i["saga_id"] for i in compensated] == ["late-1", "declined-1"]
    assert ok_json("list", "--name", "other", db=db) == []
    assert ok("list", "--name", "other", db=db) == "no sagas match\n"
    lines = ok("list", "--limit", "2", db=db).splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == NEWEST_FIRST[:2]
    assert lines[-1] == "2 sagas, newest first; more with --limit 4"


# -- show -------------------------------------------------------------------------------------


def test_show_a_compensated_saga(db: Path) -> None:
    text = ok("show", "declined-1", db=db)
    lines = text.splitlines()
    assert lines[0] == "saga declined-1 (book-trip v1)"
    assert "status    COMPENSATED" in lines
    assert "error     Declined: card expired (step Pay)" in lines
    assert "dead      1 dead letter; see: saga dead-letters declined-1" in lines
    timeline = lines[lines.index("") + 1 :]
    assert timeline[0].split() == ["SEQ", "TIME", "STEP", "DIR", "ATT", "WHAT"]
    assert timeline[1].split()[:3] == ["1", "+0.000s", "-"]
    flat = " ".join(" ".join(line.split()) for line in timeline)
    for expected in (
        "2 +0.000s Reserve fwd 1 run",
        "waiting for payment.settled key=declined-1; timeout 1m00s, deadline +1m00s (",
        "event payment.settled key=declined-1 delivered",
        "Pay fwd 1 failed: Declined: card expired; no more attempts",
        "compensation started (Pay: Declined: card expired); to undo: Pay, Reserve",
        "Reserve comp 1 compensate",
        "saga compensated",
    ):
        assert expected in flat


def test_show_a_waiting_and_a_failed_saga(db: Path) -> None:
    lines = ok("show", "wait-1", db=db).splitlines()
    assert "status    WAITING" in lines
    waiting = next(line for line in lines if line.startswith("waiting "))
    assert waiting.startswith("waiting   for payment.settled key=wait-1; deadline 20")
    assert "inbox     1 pending: note (event)" in lines

    text = " ".join(ok("show", "stuck-1", db=db).split())
    assert "status FAILED step Reserve" in text
    assert "saga FAILED: Declined: refund service down; not undone: Reserve" in text
    assert "next fix the cause, then: saga resume stuck-1" in text


def test_show_json(db: Path) -> None:
    shown = ok_json("show", "wait-1", db=db)
    assert shown["saga"]["status"] == "WAITING"
    started = shown["saga"]["created_at"]
    assert shown["waiting"]["name"] == "payment.settled"
    assert shown["waiting"]["key"] == "wait-1"
    assert shown["waiting"]["deadline"] == pytest.approx(started + 3600)
    assert [(p["event_id"], p["payload"]) for p in shown["pending"]] == [
        ("note-1", {"text": "early"})
    ]
    shown = ok_json("show", "declined-1", db=db)
    records = history(db, "declined-1")
    timeline = shown["timeline"]
    assert [(e["seq"], e["kind"], e["step"]) for e in timeline] == [
        (r.seq, r.kind, r.step) for r in records
    ]
    assert [e["direction"] for e in timeline if e["kind"] == "step_started"] == [
        "forward", "forward", "forward", "compensating", "compensating",
    ]  # fmt: skip
    assert timeline[0]["offset"] == 0
    assert (shown["dead_letters"], shown["waiting"], shown["problem"]) == (1, None, None)


# -- history and replay -----------------------------------------------------------------------


def test_history(db: Path) -> None:
    records = history(db, "late-1")
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[4].kind == "step_waiting"
    assert records[5].kind == "wait_timed_out"
    lines = ok("history", "late-1", db=db).splitlines()
    headers = [line for line in lines if line.startswith("#")]
    assert len(headers) == len(records)
    assert headers[0].startswith("#1 20")
    assert headers[0].endswith("Z saga_started")
    assert headers[5].endswith(" wait_timed_out Pay")
    assert lines[1].startswith('    {"saga_id": "late-1", "name": "book-trip"')
    assert all(line.startswith(("#", "    ")) for line in lines)


def test_replay_folds_the_log_up_to_a_record(db: Path) -> None:
    records = history(db, "declined-1")
    expected = [info for _, info in saga.replay(records, TRIP)]
    at5 = ok_json("replay", "declined-1", "--at", "5", db=db)
    assert at5["saga"] == msgspec.to_builtins(expected[4])
    assert at5["saga"]["status"] == "WAITING"
    assert (at5["record"]["seq"], at5["record"]["kind"], at5["last_seq"]) == (
        5, "step_waiting", len(records),
    )  # fmt: skip
    assert at5["waiting"]["name"] == "payment.settled"
    last = ok_json("replay", "declined-1", db=db)
    assert last["saga"] == msgspec.to_builtins(expected[-1])
    assert last["waiting"] is None

    lines = ok("replay", "declined-1", "--at", "5", db=db).splitlines()
    assert lines[0] == f"saga declined-1 (book-trip v1) as of record 5 of {len(records)}"
    assert "status    WAITING" in lines
    assert "step      Pay" in lines
    assert any(line.startswith("waiting   for payment.settled key=declined-1") for line in lines)
    assert 'state     {"trip_id": "declined-1", "hotel": "room-declined-1", "paid": false}' in lines


# -- dead letters, export, stats --------------------------------------------------------------


def test_dead_letters(db: Path) -> None:
    letters = ok_json("dead-letters", db=db)
    assert [(d["saga_id"], d["event_id"], d["name"], d["payload"], d["reason"])
            for d in letters] == [
        ("declined-1", "promo-1", "promo", {"code": "SPRING"}, "saga compensated"),
    ]  # fmt: skip
    lines = ok("dead-letters", "declined-1", db=db).splitlines()
    assert lines[0].split() == ["SENT", "SAGA", "EVENT", "KEY", "REASON", "PAYLOAD"]
    assert " declined-1 promo " in lines[1]
    assert lines[1].endswith('saga compensated {"code": "SPRING"}')
    assert lines[-1] == "1 dead letter, newest first"
    assert ok_json("dead-letters", "ok-1", db=db) == []
    assert ok("dead-letters", "ok-1", db=db) == "no dead letters\n"


def test_export(db: Path, tmp_path: Path) -> None:
    records = history(db, "stuck-1")
    document = saga.SagaExport.from_json(ok("export", "stuck-1", db=db))
    assert (document.saga_id, document.name, document.version) == ("stuck-1", "book-trip", 1)
    assert (document.steps, list(document.records)) == (("Reserve", "Pay"), records)
    infos = [info for _, info in saga.replay(document, TRIP)]
    assert infos[-1].status is saga.Status.FAILED

    out = tmp_path / "stuck-1.json"
    said = " ".join(ok("export", "stuck-1", "-o", str(out), db=db).split())
    assert said == f"exported saga stuck-1 ({len(records)} records) to {out}"
    assert saga.SagaExport.from_json(out.read_bytes()).records == document.records
    summary = ok_json("export", "stuck-1", "-o", str(out), db=db)
    assert summary == {"saga_id": "stuck-1", "records": len(records), "file": str(out)}


def test_stats(db: Path) -> None:
    found = ok_json("stats", db=db)
    by_status = {"RUNNING": 0, "WAITING": 1, "COMPENSATING": 0, "COMPLETED": 1,
                 "COMPENSATED": 2, "FAILED": 1, "SUSPENDED": 0}  # fmt: skip
    assert (found["total"], found["by_status"]) == (5, by_status)
    assert found["by_name"] == {"book-trip": {**by_status, "total": 5}}
    oldest = found["oldest_waiting"]
    assert (oldest["saga_id"], oldest["step"], oldest["event"], oldest["key"]) == (
        "wait-1", "Pay", "payment.settled", "wait-1",
    )  # fmt: skip
    lines = ok("stats", db=db).splitlines()
    assert lines[0] == "5 sagas"
    assert lines[2].split() == ["NAME", "RUNNING", "WAITING", "COMPENSATING", "COMPLETED",
                                "COMPENSATED", "FAILED", "SUSPENDED", "TOTAL"]  # fmt: skip
    # eight status columns: the name column gives way at 80 columns
    name, *counts = lines[3].split()
    assert name.startswith("book-")
    assert counts == ["0", "1", "0", "1", "2", "1", "0", "5"]
    assert " ".join(" ".join(lines[-2:]).split()).startswith(
        "longest wait-1 (book-trip), step Pay, waiting for payment.settled key=wait-1 since 20"
    )


# -- requests that change nothing -------------------------------------------------------------


def test_requests_on_sagas_that_cannot_take_them(db: Path) -> None:
    # (The module's store fixture checks that these changed nothing.)
    assert ok("abort", "ok-1", "--reason", "too late", db=db) == (
        "saga ok-1 has already ended (COMPLETED): there is nothing to abort.\n"
    )
    ended = ok_json("abort", "ok-1", "--reason", "too late", db=db)
    assert (ended["outcome"], ended["status"], ended["request_id"]) == ("ended", "COMPLETED", None)
    assert "saga 'ok-1' is COMPLETED, not FAILED" in fails("resume", "ok-1", db=db)
    assert "no saga with id 'nope'" in fails("abort", "nope", "--reason", "x", db=db)


# -- manners ----------------------------------------------------------------------------------

COMMANDS = ["list", "show", "history", "replay", "abort", "resume", "dead-letters", "export",
            "stats"]  # fmt: skip


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in COMMANDS:  # in process: the same parser, without a process per command
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        fits(text)
        assert f"usage: saga {command}" in text
        assert f"example:\n  saga {command}" in text
        assert "--json" in text
        assert "--db URL" in text
    top, show = (succeeded(d) for d in run_many([["--help"], ["show", "--help"]]))
    assert all(f"    {command}" in top for command in COMMANDS)
    assert "example:\n  saga show t-1" in show


def test_the_store_comes_from_db_or_saga_db(db: Path, tmp_path: Path) -> None:
    ids = NEWEST_FIRST
    from_env = run("list", "--json", extra_env={"SAGA_DB": f"sqlite:///{db}"})
    assert [i["saga_id"] for i in msgspec.json.decode(from_env.stdout)] == ids
    after = run("list", "--db", f"sqlite:///{db}", "--json",
                extra_env={"SAGA_DB": "sqlite:///x.db"})  # fmt: skip
    assert [i["saga_id"] for i in msgspec.json.decode(succeeded(after))] == ids
    error = fails("list", cwd=tmp_path)  # no --db, no SAGA_DB: saga.db here, which is absent
    assert "no saga store at 'saga.db'" in error
    assert "SAGA_DB is not set" in error


def test_reads_take_no_lock(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    assert [i["saga_id"] for i in ok_json("list", db=copy)] == NEWEST_FIRST
    assert not (tmp_path / "copy.db.lock").exists()
    # A read-only reader of a WAL file may leave SQLite's own side files, with no data.
    assert {p.name for p in tmp_path.iterdir()} <= {"copy.db", "copy.db-wal", "copy.db-shm"}
    wal = tmp_path / "copy.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


USER_ERRORS = [
    (["show", "nope"], "no saga with id 'nope'"),
    (["history", "nope"], "no saga with id 'nope'"),
    (["replay", "nope"], "no saga with id 'nope'"),
    (["export", "nope"], "no saga with id 'nope'"),
    (["dead-letters", "nope"], "no saga with id 'nope'"),
    (["resume", "nope"], "no saga with id 'nope'"),
    (["replay", "ok-1", "--at", "99"], "has records 1 to 9; --at 99 is past them"),
    (["export", "ok-1", "-o", "/nonexistent/dir/x.json"], "No such file or directory"),
]

USAGE_ERRORS = [
    (["replay", "ok-1", "--at", "0"], "expected a positive whole number"),
    (["list", "--limit", "lots"], "expected a positive whole number"),
    (["list", "--status", "DONE"], "unknown status 'DONE'; one of RUNNING, WAITING"),
    (["abort", "ok-1"], "the following arguments are required: --reason"),
    (["abort", "ok-1", "--reason", "r", "--wait", "-1"], "expected seconds from 0 to 3600"),
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


def test_user_errors(db: Path) -> None:
    results = run_many([argv for argv, _ in USER_ERRORS], db=db)
    for (argv, message), done in zip(USER_ERRORS, results, strict=True):
        assert message in failed(done), argv


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # in process: the parser rejects it first
        main(argv)
    assert exited.value.code == 2  # a usage error
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.count("\n") == 1


STORE_ERRORS = [
    ("trips.db", "has no scheme; for a SQLite file, try 'sqlite:///trips.db'"),
    ("mysql://host/db", "unsupported store URL scheme 'mysql'"),
    ("sqlite:///:memory:", "private to the process that opened it"),
    ("sqlite:///missing.db", "no saga store at 'missing.db': the file does not exist"),
    ("sqlite:///nowhere/x.db", "directory"),
    ("sqlite:///other.db", "'other.db' is not a saga store"),
    ("sqlite:///notes.txt", "'notes.txt' is not a saga store"),
]


def test_store_errors(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    before = sorted(p.name for p in tmp_path.iterdir())
    # A read command and a write command on each: neither creates anything.
    commands = (["show", "x"], ["abort", "x", "--reason", "r"])
    argvs = [[*commands[n % 2], "--db", url] for n, (url, _) in enumerate(STORE_ERRORS)]
    results = run_many(argvs, cwd=tmp_path)
    for (_, message), done in zip(STORE_ERRORS, results, strict=True):
        assert message in failed(done), done.args
    assert sorted(p.name for p in tmp_path.iterdir()) == before
