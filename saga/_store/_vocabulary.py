"""The store's words, defined once: saga statuses as the index keeps them, what an inbox
entry is and where it stands, how a store instance is opened, and the SQL built from them.

Every backend, schema and query spells these through the names here, never as literals:
``f"... WHERE status = {InboxState.PENDING:d}"``, ``f"... AND status IN {OPEN_SQL}"``.
The schemas' partial indexes are built from them too, and must stay byte for byte what
existing stores hold (``tests/test_store_vocabulary.py`` pins them).

The statuses are `saga.Status`'s values, spelled here because `saga._info` imports the
store's rows (the store importing it back would be a circle); the same test checks that
they are exactly `Status`'s.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

__all__ = [
    "ACCESS_MODES",
    "CLOSED_STATE_SQL",
    "DURABILITIES",
    "FAILED",
    "OPEN_SQL",
    "OPEN_STATUSES",
    "REQUEST_STATUS",
    "RUNTIME_REQUESTS",
    "SUSPENDED",
    "TERMINAL_STATUSES",
    "WAITING",
    "Access",
    "InboxKind",
    "InboxState",
    "check_options",
    "sql_list",
    "sql_text",
]

# -- saga statuses (`saga.Status`) ----------------------------------------------------------

# A saga that has not ended: recovery folds it, its deadlines fire, a claim takes it over.
# In `Status` order, which is the order the schemas' partial indexes spell them in.
OPEN_STATUSES: Final = ("RUNNING", "WAITING", "COMPENSATING")
# A saga that has ended: its inbox is closed (`InboxState.DEAD_LETTER`).
TERMINAL_STATUSES: Final = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})
WAITING: Final = "WAITING"  # `StoreStats.oldest_waiting` looks for it
FAILED: Final = "FAILED"  # the one terminal status a resume request applies to
COMPLETED: Final = "COMPLETED"  # the status a revert request applies to
# Waiting for an operator (retry, skip, abort): not terminal, yet not open either: no
# actor runs it, recovery does not fold it, no claim takes it over. Requests for it are
# performed by a runtime, as a resume request is.
SUSPENDED: Final = "SUSPENDED"


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    """``values`` as a parenthesised list of SQL string literals, for ``IN``."""
    return "(" + ", ".join(map(sql_text, values)) + ")"


OPEN_SQL: Final = sql_list(OPEN_STATUSES)  # "('RUNNING', 'WAITING', 'COMPENSATING')"


# -- the inbox -----------------------------------------------------------------------------


class InboxKind:
    """What an inbox entry is (`InboxItem.kind`)."""

    EVENT = "event"  # for a step's wait; a dead letter if the saga ends without taking it
    ABORT = "abort"  # an operator's abort request, taken by the saga's actor
    RESUME = "resume"  # an operator's resume request for a FAILED saga, taken by the runtime
    RETRY = "retry"  # an operator's retry request for a SUSPENDED saga, taken by the runtime
    SKIP = "skip"  # an operator's skip request for a SUSPENDED saga, taken by the runtime
    REVERT = "revert"  # an operator's revert request for a COMPLETED saga, taken by the runtime


# The requests a runtime (not a saga's actor) performs, each with the one status it applies
# to: `Store.send` refuses one for a saga in any other status. An abort of a SUSPENDED saga
# is performed the same way (it has no actor).
REQUEST_STATUS: Final = {
    InboxKind.RESUME: FAILED,
    InboxKind.RETRY: SUSPENDED,
    InboxKind.SKIP: SUSPENDED,
    InboxKind.REVERT: COMPLETED,
}
RUNTIME_REQUESTS: Final = tuple(REQUEST_STATUS)


class InboxState(enum.IntEnum):
    """Where an inbox entry stands (its ``status`` column, an integer)."""

    PENDING = 0  # not taken yet: what `Store.inbox` and `Store.foreign_inbox` read
    CONSUMED = 1  # taken by its saga, or a request left when the saga ended
    DEAD_LETTER = 2  # an event its saga ended without taking (`Store.dead_letters`)


# An entry still pending when its saga ends: an event becomes a dead letter, a request is
# done with.
CLOSED_STATE_SQL: Final = (
    f"CASE kind WHEN {sql_text(InboxKind.EVENT)} THEN {InboxState.DEAD_LETTER:d} "
    f"ELSE {InboxState.CONSUMED:d} END"
)


# -- options -------------------------------------------------------------------------------


class Access:
    """How a store instance is opened (the ``access`` option of every store)."""

    OWNER = "owner"  # the runtime's: takes the store, creates or upgrades the schema
    CLIENT = "client"  # another process (the command line): reads, and sends requests only
    READ = "read"  # reads only


ACCESS_MODES: Final = (Access.OWNER, Access.CLIENT, Access.READ)
DURABILITIES: Final = ("full", "normal")


def check_options(*, durability: str, access: str) -> None:
    """Raise `ValueError` for a ``durability`` or an ``access`` no store knows."""
    if durability not in DURABILITIES:
        choices = " or ".join(map(repr, DURABILITIES))
        raise ValueError(f"durability must be {choices}, got {durability!r}")
    if access not in ACCESS_MODES:
        raise ValueError(f"access must be one of {ACCESS_MODES}, got {access!r}")
