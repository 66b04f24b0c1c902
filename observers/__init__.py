"""Observers for ``saga``: OpenTelemetry tracing and metrics, state-change records, logging.

Each is a `saga.Observer`; pass instances to ``saga.Runtime(..., observers=[...])`` (every
saga) or ``saga.Saga(..., observers=[...])`` (one definition). They use the public
OpenTelemetry API only (the SDK is the application's choice), never replace the global
providers, and see live transitions only: a runtime recovering or replaying a saga calls
no observer, so nothing is traced or counted twice after a restart.

* `TracingObserver`: one trace per saga, across processes and restarts.
* `MetricsObserver`: counters and histograms of sagas, steps and events.
* `StateChangeRecorder`: a `StateChange` per change of status or state, to a callable or
  a `JsonLinesSink`.
* `LoggingObserver`: one structured log line per transition.
"""

from observers._logging import LoggingObserver as LoggingObserver
from observers._metrics import MetricsObserver as MetricsObserver
from observers._sinks import JsonLinesSink as JsonLinesSink
from observers._state import StateChange as StateChange
from observers._state import StateChangeRecorder as StateChangeRecorder
from observers._state import StateChangeSink as StateChangeSink
from observers._tracing import TracingObserver as TracingObserver

__all__ = [
    "JsonLinesSink",
    "LoggingObserver",
    "MetricsObserver",
    "StateChange",
    "StateChangeRecorder",
    "StateChangeSink",
    "TracingObserver",
]
