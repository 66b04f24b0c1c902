"""Observers for ``saga``: OpenTelemetry tracing and state-change records.

Not yet provided: this package is filled in by the observers milestone. Until then, write
your own by subclassing `saga.Observer`.
"""

__all__: list[str] = []
