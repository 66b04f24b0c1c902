"""The definitions a runtime runs, and what it keeps for each: its observers, its decoder."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import msgspec

from saga._definition import Saga
from saga._errors import CorruptLog, DefinitionMismatch, UnknownDefinition
from saga._fold import Progress
from saga._observer import Observer, ObserverCalls
from saga._replay import check_definition
from saga._validate import check_name

__all__ = ["Definitions"]


class Definitions:
    """A runtime's definitions by ``(name, version)``, each with the observers its sagas
    get (the runtime's, then its own) and a decoder of its state type, made on first use."""

    def __init__(
        self, definitions: Mapping[tuple[str, int], Saga[Any]], observers: Sequence[Observer]
    ) -> None:
        self._definitions: dict[tuple[str, int], Saga[Any]] = dict(definitions)
        self._observers = tuple(observers)
        self._observer_calls: dict[int, ObserverCalls] = {}
        self._decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {}

    @property
    def keys(self) -> Collection[tuple[str, int]]:
        """``(name, version)`` of every definition: the sagas this runtime can run."""
        return self._definitions.keys()

    def get(self, name: str, version: int) -> Saga[Any] | None:
        """The definition ``name`` version ``version``, if registered."""
        return self._definitions.get((name, version))

    def named(self, saga_or_name: Saga[Any] | str) -> Saga[Any]:
        """A registered definition, or the highest version of a name. Raises
        `UnknownDefinition`; `TypeError` / `ValueError` for a bad name."""
        if isinstance(saga_or_name, Saga):
            key = (saga_or_name.name, saga_or_name.version)
            if self._definitions.get(key) is not saga_or_name:
                raise UnknownDefinition(f"{saga_or_name!r} is not registered with this runtime")
            return saga_or_name
        check_name(saga_or_name, "saga name")
        versions = [d for (name, _), d in self._definitions.items() if name == saga_or_name]
        if not versions:
            raise UnknownDefinition(f"no saga definition named {saga_or_name!r}")
        return max(versions, key=lambda d: d.version)

    def definition_for(self, progress: Progress) -> Saga[Any]:
        """The registered definition that wrote this log, else `DefinitionMismatch`."""
        definition = self._definitions.get((progress.name, progress.version))
        if definition is None:
            raise DefinitionMismatch(
                f"saga {progress.saga_id!r} needs definition {progress.name!r} version "
                f"{progress.version}, which this runtime does not have"
            )
        check_definition(progress, definition)
        return definition

    def observers_for(self, saga: Saga[Any]) -> ObserverCalls:
        """The observers called for this definition's sagas."""
        calls = self._observer_calls.get(id(saga))
        if calls is None:
            calls = self._observer_calls[id(saga)] = ObserverCalls(self._observers + saga.observers)
        return calls

    @property
    def observer_errors(self) -> int:
        """How many observer calls raised since this runtime was created."""
        return sum(calls.errors for calls in self._observer_calls.values())

    def decode_state(self, saga: Saga[Any], state: bytes) -> Any:
        """A fresh typed copy of an encoded state. Raises `CorruptLog` if it does not fit."""
        decoder = self._decoders.get(id(saga))
        if decoder is None:
            decoder = self._decoders[id(saga)] = msgspec.msgpack.Decoder(saga.state)
        try:
            return decoder.decode(state)
        except (msgspec.DecodeError, TypeError, RecursionError) as error:
            raise CorruptLog(f"saved state does not fit {saga.state.__name__}: {error}") from None
