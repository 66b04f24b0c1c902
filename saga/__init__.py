"""saga: durable sagas for asyncio services.

Layers, bottom up: the log's records (`Record`, whose `RecordKind` says what happened and
whose typed `Record.body` says the rest: `StepStarted`, `StepFailed`, ...) and the fold
that turns a log into a saga's condition (`replay`); the stores that keep logs, inboxes
and deadlines; the actors that drive one saga each and alone write its records; the engine
that runs them; and the `Runtime`, the engine's public face.
Users touch the definitions (`Saga`, `Step`, `wait_for`, `RetryPolicy`), the `Runtime`
and the `Observer` hooks; everything else lives in private modules.
"""

from saga._bodies import AbortRequested as AbortRequested
from saga._bodies import CompensationStarted as CompensationStarted
from saga._bodies import EventDelivered as EventDelivered
from saga._bodies import RecordBody as RecordBody
from saga._bodies import RecordKind as RecordKind
from saga._bodies import SagaCompensated as SagaCompensated
from saga._bodies import SagaCompleted as SagaCompleted
from saga._bodies import SagaFailed as SagaFailed
from saga._bodies import SagaResumed as SagaResumed
from saga._bodies import SagaRetried as SagaRetried
from saga._bodies import SagaReverted as SagaReverted
from saga._bodies import SagaStarted as SagaStarted
from saga._bodies import SagaSuspended as SagaSuspended
from saga._bodies import StepBody as StepBody
from saga._bodies import StepCompleted as StepCompleted
from saga._bodies import StepFailed as StepFailed
from saga._bodies import StepSkipped as StepSkipped
from saga._bodies import StepStarted as StepStarted
from saga._bodies import StepWaiting as StepWaiting
from saga._bodies import WaitTimedOut as WaitTimedOut
from saga._context import StepContext as StepContext
from saga._definition import Saga as Saga
from saga._definition import Step as Step
from saga._errors import CorruptLog as CorruptLog
from saga._errors import DefinitionMismatch as DefinitionMismatch
from saga._errors import InvalidTransition as InvalidTransition
from saga._errors import LeaseLost as LeaseLost
from saga._errors import NotASagaStore as NotASagaStore
from saga._errors import PayloadTooLarge as PayloadTooLarge
from saga._errors import PoisonStep as PoisonStep
from saga._errors import SagaClosed as SagaClosed
from saga._errors import SagaError as SagaError
from saga._errors import SagaExists as SagaExists
from saga._errors import StepTimeout as StepTimeout
from saga._errors import StoreError as StoreError
from saga._errors import UnknownDefinition as UnknownDefinition
from saga._errors import UnknownSaga as UnknownSaga
from saga._events import Event as Event
from saga._events import Wait as Wait
from saga._events import wait_for as wait_for
from saga._export import SagaExport as SagaExport
from saga._handle import SagaHandle as SagaHandle
from saga._info import DeadLetter as DeadLetter
from saga._info import ErrorInfo as ErrorInfo
from saga._info import SagaInfo as SagaInfo
from saga._info import Status as Status
from saga._observer import Observer as Observer
from saga._observer import StepOutcome as StepOutcome
from saga._records import Record as Record
from saga._replay import replay as replay
from saga._retry import RetryPolicy as RetryPolicy
from saga._runtime import Runtime as Runtime

__all__ = [
    "AbortRequested",
    "CompensationStarted",
    "CorruptLog",
    "DeadLetter",
    "DefinitionMismatch",
    "ErrorInfo",
    "Event",
    "EventDelivered",
    "InvalidTransition",
    "LeaseLost",
    "NotASagaStore",
    "Observer",
    "PayloadTooLarge",
    "PoisonStep",
    "Record",
    "RecordBody",
    "RecordKind",
    "RetryPolicy",
    "Runtime",
    "Saga",
    "SagaClosed",
    "SagaCompensated",
    "SagaCompleted",
    "SagaError",
    "SagaExists",
    "SagaExport",
    "SagaFailed",
    "SagaHandle",
    "SagaInfo",
    "SagaResumed",
    "SagaRetried",
    "SagaReverted",
    "SagaStarted",
    "SagaSuspended",
    "Status",
    "Step",
    "StepBody",
    "StepCompleted",
    "StepContext",
    "StepFailed",
    "StepOutcome",
    "StepSkipped",
    "StepStarted",
    "StepTimeout",
    "StepWaiting",
    "StoreError",
    "UnknownDefinition",
    "UnknownSaga",
    "Wait",
    "WaitTimedOut",
    "replay",
    "wait_for",
]
