"""Every error the runtime raises, under one root.

::

    SagaError
    ├── UnknownSaga            (also LookupError) no saga has this id
    ├── UnknownDefinition      (also LookupError) no registered definition has this name
    ├── SagaExists             the id is taken by a saga of another definition
    ├── SagaClosed             the saga is terminal; it takes no more events
    ├── StepTimeout            a wait ran out and the step's on_timeout did not handle it
    ├── PayloadTooLarge        (also ValueError) encoded state or payload over the limit
    ├── DefinitionMismatch     the log names a definition or steps this runtime lacks
    ├── CorruptLog             a stored record cannot be decoded or folded
    ├── PoisonStep             a handler was interrupted by crashes too many times
    ├── InvalidTransition      an operator action the saga's status does not allow
    └── StoreError             the store cannot be opened or used
        ├── NotASagaStore      the file exists but is not a saga store
        └── LeaseLost          this worker no longer owns the saga (shared stores)

Bad arguments (an empty id, a payload msgspec cannot encode) raise the builtin
``ValueError`` / ``TypeError`` with a clear message, and store nothing.
"""

from __future__ import annotations

__all__ = [
    "CorruptLog",
    "DefinitionMismatch",
    "InvalidTransition",
    "LeaseLost",
    "NotASagaStore",
    "PayloadTooLarge",
    "PoisonStep",
    "SagaClosed",
    "SagaError",
    "SagaExists",
    "StepTimeout",
    "StoreError",
    "UnknownDefinition",
    "UnknownSaga",
]


class SagaError(Exception):
    """Root of every error raised by ``saga``."""


class UnknownSaga(SagaError, LookupError):
    """No saga with this id exists in the store."""


class UnknownDefinition(SagaError, LookupError):
    """No registered saga definition has this name (or this definition is not registered)."""


class SagaExists(SagaError):
    """A saga with this id already exists, started from another definition."""


class SagaClosed(SagaError):
    """The saga is terminal and accepts no more events."""


class StepTimeout(SagaError):
    """A step's wait ran out; raised by the default ``Step.on_timeout``. Never retried."""


class PayloadTooLarge(SagaError, ValueError):
    """An encoded state or event payload is larger than ``max_payload_bytes``. Never retried."""


class DefinitionMismatch(SagaError):
    """The saga's log names a definition (name, version, steps) that this runtime lacks."""


class CorruptLog(SagaError):
    """A record of the saga's log cannot be decoded, or the log breaks its own rules."""


class PoisonStep(SagaError):
    """A handler was interrupted by a crash more than ``max_recoveries`` times."""


class InvalidTransition(SagaError):
    """An operator action in a status that does not allow it (``retry`` or ``skip`` of a
    saga that is not ``SUSPENDED``, ``revert`` of one that is not ``COMPLETED``); nothing
    was stored."""


class StoreError(SagaError):
    """The store cannot be opened or used (bad URL, missing directory, I/O failure)."""


class NotASagaStore(StoreError):
    """The file exists but holds something other than a saga store."""


class LeaseLost(StoreError):
    """This worker's lease on the saga is gone (expired, or another worker took the saga
    over): it may not write that saga's log again. Only shared stores (PostgreSQL) raise it.
    """
