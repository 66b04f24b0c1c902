"""The README's examples run as documented: ``python examples/trip_booking.py``, and
``python examples/workers.py URL`` in several processes on one PostgreSQL database."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from _pg import url_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trip_booking.py"
WORKERS = EXAMPLE.with_name("workers.py")


def _run(cwd: Path) -> dict[str, str]:
    """Run the example in ``cwd``; return each saga's printed section by saga id."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    sections = {}
    for block in done.stdout.split("\n\n"):
        found = re.match(r"(trip-[\w-]+): ", block.strip())
        if found:
            sections[found.group(1)] = block.strip()
    assert sorted(sections) == ["trip-declined", "trip-ok", "trip-silent"], done.stdout
    return sections


def _status(section: str) -> str:
    return section.split("\n", 1)[0].split()[1]


def _kinds(section: str) -> list[str]:
    return re.findall(r"^\s+\d+\s+[\d.]+s\s+(\w+)", section, flags=re.MULTILINE)


def test_trip_booking_completes_one_trip_and_compensates_two(tmp_path: Path) -> None:
    sections = _run(tmp_path)
    ok, declined, silent = sections["trip-ok"], sections["trip-declined"], sections["trip-silent"]

    assert _status(ok) == "COMPLETED"
    assert "event_delivered" in _kinds(ok)
    assert _kinds(ok)[-1] == "saga_completed"

    assert _status(declined) == "COMPENSATED"
    assert "PaymentDeclined" in declined
    assert _kinds(declined)[-1] == "saga_compensated"
    assert "compensation_started" in _kinds(declined)

    assert _status(silent) == "COMPENSATED"
    assert "wait_timed_out" in _kinds(silent)
    assert "StepTimeout" in silent
    assert _kinds(silent)[-1] == "saga_compensated"

    assert (tmp_path / "trips.db").is_file()  # in the working directory, as documented


def test_trip_booking_runs_again_from_scratch(tmp_path: Path) -> None:
    first = _run(tmp_path)
    again = _run(tmp_path)  # the old trips.db is replaced, not resumed
    assert {k: _status(v) for k, v in again.items()} == {k: _status(v) for k, v in first.items()}
    assert [len(_kinds(v)) for v in again.values()] == [len(_kinds(v)) for v in first.values()]


def test_two_workers_of_the_workers_example_share_the_orders(schema: str) -> None:
    """README "Running many workers": two processes on one database finish every order."""
    url = url_for(schema)
    argv = [sys.executable, str(WORKERS), url, "--start", "20", "--seconds", "6"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    for output in outputs:
        assert "started 20 orders" in output
        last = output.strip().splitlines()[-1]
        assert "40 orders completed, 0 waiting, 0 running" in last, output


def test_operator_actions_retry_skip_and_revert(tmp_path: Path) -> None:
    example = EXAMPLE.with_name("operator_actions.py")
    done = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    blocks = {b.split(":", 1)[0]: b for b in done.stdout.strip().split("\n\n")}
    assert blocks["order-retry"].startswith(
        "order-retry: COMPLETED; reserved, charged, wrapped, shipped"
    )
    assert (
        "saga_retried           Charge  by ops:ana: card processor is back" in blocks["order-retry"]
    )
    assert blocks["order-skip"].startswith("order-skip: COMPLETED; reserved, shipped")
    assert "step_skipped           Charge  by ops:ben: paid by phone" in blocks["order-skip"]
    assert blocks["order-revert"].startswith(
        "order-revert: COMPENSATED; reserved, charged, shipped, returned, refunded, released"
    )
    assert (tmp_path / "orders.db").is_file()
