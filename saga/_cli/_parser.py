"""The command line's grammar: one sub-command per operator task, each with an example."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from saga._info import Status
from saga._validate import MAX_LIMIT, check_name, check_text

__all__ = ["DEFAULT_URL", "build_parser"]

DEFAULT_URL = "sqlite:///saga.db"
MAX_SEQ = 2**31 - 1  # a record's seq is a 32-bit integer in the stores

_DESCRIPTION = """\
Look at and steer the sagas in a store, from their logs, while the service runs.

Read commands open the store read-only and never block the service. 'abort',
'resume', 'retry', 'skip' and 'revert' leave a durable request in the store; the
runtime that owns the store acts on it within a second (or when it next starts)."""

_EPILOG = """\
The store is --db URL, else $SAGA_DB, else sqlite:///saga.db.
Every read command takes --json to print JSON only.

examples:
  export SAGA_DB=sqlite:///trips.db
  saga list --status FAILED
  saga show t-1
  saga abort t-1 --reason "customer cancelled"
"""

_EXAMPLES = {
    "list": "saga list --status WAITING --name book-trip --limit 20",
    "show": "saga show t-1",
    "history": "saga history t-1 --json",
    "replay": "saga replay t-1 --at 5",
    "abort": 'saga abort t-1 --reason "customer cancelled"',
    "resume": 'saga resume t-1 --reason "refund service fixed"',
    "retry": 'saga retry t-1 --reason "card processor is back"',
    "skip": 'saga skip t-1 --reason "charged by phone"',
    "revert": 'saga revert t-1 --reason "order cancelled after delivery"',
    "dead-letters": "saga dead-letters t-1",
    "export": "saga export t-1 -o t-1.json",
    "stats": "saga stats --json",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors (an unknown option, a missing or malformed argument) are one line on
    stderr and exit status 2; a refused or failed command exits 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _status(text: str) -> Status:
    try:
        return Status(text.upper())
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise argparse.ArgumentTypeError(f"unknown status {text!r}; one of {names}") from None


def _whole(high: int) -> Callable[[str], int]:
    """A positive whole number up to ``high``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a positive whole number up to {high:,}, got {text!r}"
            )
        return value

    return convert


_limit = _whole(MAX_LIMIT)
_seq = _whole(MAX_SEQ)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # NaN and infinities too
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 3600, got {text!r}")
    return value


def _checked(check: Callable[[str, str], str], what: str) -> Callable[[str], str]:
    """An argument checked as the runtime checks it: a usage error, not a store error."""

    def convert(text: str) -> str:
        try:
            return check(text, what)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


_saga_id = _checked(check_name, "saga_id")
_name = _checked(check_name, "name")
_by = _checked(check_name, "by")
_reason = _checked(check_text, "reason")


def build_parser() -> argparse.ArgumentParser:
    """The ``saga`` argument parser."""
    parser = _Parser(prog="saga", description=_DESCRIPTION, epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--db", metavar="URL", help="the store (default: $SAGA_DB)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, *, json: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary, epilog=f"example:\n  {_EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        # SUPPRESS: a --db given before the command is not reset by the command's default.
        sub.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                         help="the store (default: $SAGA_DB, else sqlite:///saga.db)")  # fmt: skip
        if json:
            sub.add_argument("--json", action="store_true", help="print JSON only")
        return sub

    sub = command("list", "List sagas, newest first.")
    sub.add_argument("--status", type=_status, help="only sagas with this status")
    sub.add_argument("--name", type=_name, help="only sagas of this definition name")
    sub.add_argument("--limit", type=_limit, default=50, metavar="K",
                     help=f"show at most K sagas (default 50, at most {MAX_LIMIT:,})")  # fmt: skip

    sub = command("show", "Show a saga: its summary and a readable timeline of its log.")
    sub.add_argument("saga_id", metavar="ID", type=_saga_id, help="the saga id")

    sub = command("history", "Print a saga's log: every record, as stored.")
    sub.add_argument("saga_id", metavar="ID", type=_saga_id, help="the saga id")

    sub = command("replay", "Fold a saga's log up to a record: its status and state then.")
    sub.add_argument("saga_id", metavar="ID", type=_saga_id, help="the saga id")
    sub.add_argument("--at", type=_seq, metavar="SEQ",
                     help="the record to stop at (default: the last one)")  # fmt: skip

    for name, summary in (
        ("abort", "Ask the runtime to stop a saga where it is and compensate."),
        ("resume", "Ask the runtime to run a FAILED saga's remaining compensations again."),
        ("retry", "Ask the runtime to run a SUSPENDED saga's failed step again."),
        ("skip", "Ask the runtime to skip a SUSPENDED saga's failed step and go on."),
        ("revert", "Ask the runtime to compensate every step of a COMPLETED saga."),
    ):
        sub = command(name, summary)
        sub.add_argument("saga_id", metavar="ID", type=_saga_id, help="the saga id")
        if name != "resume":
            sub.add_argument("--reason", type=_reason, required=True,
                             help="why (recorded in the log)")  # fmt: skip
        else:
            sub.add_argument("--reason", type=_reason, default="resumed from the command line",
                             help="why it may continue now (recorded in the log)")  # fmt: skip
        sub.add_argument("--by", metavar="WHO", type=_by,
                         help="who asks (recorded; default cli:USER@HOST)")  # fmt: skip
        sub.add_argument("--wait", type=_seconds, default=3.0, metavar="SECONDS",
                         help="how long to wait for the runtime to take the request "
                              "(default 3; 0 returns at once)")  # fmt: skip

    sub = command("dead-letters", "List events no step consumed before their saga ended.")
    sub.add_argument("saga_id", metavar="ID", type=_saga_id, nargs="?", help="only this saga's")
    sub.add_argument("--limit", type=_limit, default=50, metavar="K",
                     help=f"show at most K (default 50, at most {MAX_LIMIT:,})")  # fmt: skip

    sub = command("export", "Write a saga's log as one JSON document (saga.SagaExport).")
    sub.add_argument("saga_id", metavar="ID", type=_saga_id, help="the saga id")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")

    command("stats", "Count sagas by status and by name; find the longest wait.")
    return parser
