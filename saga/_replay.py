"""`replay`: the public face of the fold. Runs no step code."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from saga._definition import Saga
from saga._errors import DefinitionMismatch
from saga._export import SagaExport
from saga._fold import Progress, typed_state
from saga._info import SagaInfo
from saga._records import Record

__all__ = ["check_definition", "replay"]


def check_definition(progress: Progress, saga: Saga[Any]) -> None:
    """Raise `DefinitionMismatch` unless ``saga`` is the definition the log was written by."""
    if (progress.name, progress.version) != (saga.name, saga.version):
        raise DefinitionMismatch(
            f"saga {progress.saga_id!r} was started by {progress.name!r} "
            f"version {progress.version}, not {saga.name!r} version {saga.version}"
        )
    if progress.steps != saga.step_names:
        raise DefinitionMismatch(
            f"saga {progress.saga_id!r} was started with steps {list(progress.steps)}, "
            f"but {saga.name!r} version {saga.version} has {list(saga.step_names)}"
        )


def replay(
    records: Iterable[Record] | SagaExport, saga: Saga[Any]
) -> Iterator[tuple[Record, SagaInfo]]:
    """Fold a saga's log, yielding each record with the `SagaInfo` right after it.

    This is the same fold recovery uses; it runs no step code and calls no observer.

    Args:
        records: the saga's log in order, from ``runtime.history``, or a `SagaExport`
            (``runtime.export``, ``SagaExport.from_json``).
        saga: the definition the log was written by (its state type types ``info.state``).

    Yields:
        ``(record, info)`` pairs.

    Raises:
        DefinitionMismatch: the log was written by another definition or other steps.
        CorruptLog: the records do not form a valid log.
        ValueError: an export of a format this version cannot read.
    """
    if isinstance(records, SagaExport):
        records.check()
        records = records.records
    progress: Progress | None = None
    for record in records:
        if progress is None:
            progress = Progress(record)
            check_definition(progress, saga)
        else:
            progress.apply(record)
        yield record, progress.info(typed_state(progress.state, saga.state))
