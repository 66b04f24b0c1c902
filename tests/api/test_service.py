"""End to end: ``examples/service.py`` under uvicorn, driven over real HTTP, traced into a
small OTLP/HTTP receiver that decodes what the service exports.

One trace must run from the HTTP request that started the saga to its last step, and the
step that received the event must link to the HTTP request that sent it.
"""

from __future__ import annotations

import gzip
import http.server
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60.0


class Receiver(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP exports on 127.0.0.1; keeps the decoded spans of /v1/traces."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[dict[str, Any], Span]] = []  # (resource attributes, span)
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def snapshot(self) -> list[tuple[dict[str, Any], Span]]:
        with self.lock:
            return list(self.spans)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        reply = b""
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with self.server.lock:
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        self.server.spans.extend((resource, s) for s in scope_spans.spans)
            reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)  # metrics are accepted and dropped
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def attributes(pairs: Any) -> dict[str, Any]:
    found = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT)


class Service:
    """``uvicorn service:app`` on 127.0.0.1, on a port the OS picks."""

    def __init__(self, tmp: Path, otlp: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OTEL_SERVICE_NAME": "trips-e2e",
            "SAGA_DB_URL": f"sqlite:///{tmp / 'trips.db'}",
        })  # fmt: skip
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "service:app",
                "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._started()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.output.append(line)
                self._lines.put(line)
        self._lines.put(None)

    def _started(self) -> str:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                pytest.fail("the service did not start:\n" + "".join(self.output))
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                return found.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a graceful shutdown flushes the exporter
            try:
                return self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=TIMEOUT)


def poll(client: httpx.Client, trip: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        body: dict[str, Any] = client.get(f"/trips/{trip}").json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.02)


def wait_for_spans(receiver: Receiver, names: set[str]) -> None:
    """Until spans with these names were exported (batched, so a little after the fact)."""
    deadline = time.monotonic() + TIMEOUT
    while not names <= {s.name for _, s in receiver.snapshot()}:
        assert time.monotonic() < deadline, f"no {names} exported in {TIMEOUT} s"
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_one_trace_from_the_http_request_to_the_last_step(
    tmp_path: Path, receiver: Receiver
) -> None:
    service = Service(tmp_path, receiver.endpoint)
    try:
        with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
            created = client.post("/trips", json={"trip_id": "e2e"})
            assert (created.status_code, created.json()["trip_id"]) == (201, "e2e")
            poll(client, "e2e", "WAITING")
            paid = {"name": "payment.settled", "payload": {"ok": True}}
            sent = client.post("/trips/e2e/events", json=paid)
            assert sent.status_code == 202
            done = poll(client, "e2e", "COMPLETED")
            assert client.get("/trips/nope").status_code == 404
            assert client.post("/trips/e2e/events", json={"name": "late"}).status_code == 409
        assert done["state"] == {"trip_id": "e2e", "hotel": done["state"]["hotel"],
                                 "paid": True, "ticket": "ticket-e2e"}  # fmt: skip
        assert done["history"][-1]["kind"] == "saga_completed"
        wait_for_spans(receiver, {"step IssueTicket", "saga book-trip completed"})
    finally:
        code = service.stop()
    assert code == 0, "".join(service.output)
    spans = receiver.snapshot()  # all of them: the shutdown flushed the exporter

    def one(name: str) -> Span:
        (span,) = [s for _, s in spans if s.name == name]
        return span

    request = one("POST /trips")
    sender, _late = sorted((s for _, s in spans if s.name == "POST /trips/e2e/events"),
                           key=lambda s: s.start_time_unix_nano)  # fmt: skip
    anchor = one("saga book-trip")
    reserve = one("step ReserveHotel")
    run, on_event = sorted((s for _, s in spans if s.name == "step AwaitPayment"),
                           key=lambda s: s.start_time_unix_nano)  # fmt: skip
    last = one("step IssueTicket")
    end = one("saga book-trip completed")
    hotel = one("hotels.reserve")

    assert request.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert request.parent_span_id == b""  # the trace starts at the HTTP request
    saga_spans = [anchor, reserve, run, on_event, last, end, hotel]
    assert {s.trace_id for s in saga_spans} == {request.trace_id}
    assert anchor.parent_span_id == request.span_id
    assert {s.parent_span_id for s in (reserve, run, on_event, last, end)} == {anchor.span_id}
    assert hotel.parent_span_id == reserve.span_id  # the handler's own span nests in its step
    # The event's request is another trace, linked from the step that received the event.
    assert sender.trace_id != request.trace_id
    assert [(link.trace_id, link.span_id) for link in on_event.links] == [
        (sender.trace_id, sender.span_id)
    ]
    assert [e.name for e in run.events] == ["saga.wait"]
    assert attributes(last.attributes)["saga.id"] == "e2e"
    assert attributes(end.attributes)["saga.status"] == "COMPLETED"
    assert {r.get("service.name") for r, _ in spans} == {"trips-e2e"}
