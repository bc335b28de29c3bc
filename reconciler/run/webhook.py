"""The reconciler's HTTP endpoint: GitHub push webhooks, Prometheus /metrics and /healthz.

``POST /webhook`` accepts a GitHub ``push`` event only with a valid ``X-Hub-Signature-256``
(HMAC SHA-256 of the raw body with the shared secret, compared in constant time); a push to the
watched branch wakes the loop at once instead of at its next poll. A missing or wrong signature is
answered 401 and changes nothing; so is any request when no secret is configured. A delivery whose
``X-GitHub-Delivery`` ID was already handled (GitHub redelivers) is acknowledged without work.

The endpoint faces the network, so it holds against slow and greedy clients (ServerLimits): the
request line and headers must arrive within `header_timeout` and the body within `body_timeout`,
each a deadline for the whole phase: every socket read gets only the time left before it (and at
most `read_timeout`), so a client declaring 1 MB and sending 10 bytes, or one byte at a time, is
cut at the deadline whatever came before it. At most `max_connections` are served at once and at
most `max_per_client` from one peer address (past either: 503 at once, without a thread), and each
connection carries one request. It binds 127.0.0.1 unless told otherwise (the in-cluster manifest
says 0.0.0.0). With a metrics token, /metrics wants `Authorization: Bearer <token>`.

The kubelet's probes do not come here: they have their own listener (reconciler.run.health), which
no webhook client can starve. ``/healthz`` is answered here too, for people, from the same check.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
import sys

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of the HTTP endpoint (seconds, counts, bytes)."""

    read_timeout: float = 10.0      # one socket read (idle time)
    header_timeout: float = 5.0     # request line + headers, in total (GitHub sends them at once)
    body_timeout: float = 30.0      # the whole body, in total
    max_connections: int = 32       # served at once; the next gets 503
    max_per_client: int = 8         # served at once for one peer address; the next gets 503
    max_body: int = MAX_BODY
    remembered_deliveries: int = 4096  # X-GitHub-Delivery IDs kept to acknowledge redeliveries


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes | None, body: bytes, header: str | None) -> bool:
    """True only for a well-formed ``sha256=<hex>`` header matching the body (constant-time)."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


@dataclass(frozen=True)
class PushEvent:
    ref: str  # refs/heads/main
    after: str  # the new head commit
    forced: bool
    delivery: str | None = None

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None


def parse_push(body: bytes, delivery: str | None = None) -> PushEvent:
    """Raise ValueError for a payload that is not a push event."""
    data = json.loads(body)
    if not isinstance(data, dict) or "ref" not in data or "after" not in data:
        raise ValueError("not a push event payload (needs 'ref' and 'after')")
    return PushEvent(str(data["ref"]), str(data["after"]), bool(data.get("forced")), delivery)


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each with a socket timeout of the time left in the handler's phase
    (at most read_timeout); past the deadline a read raises TimeoutError at once."""

    def __init__(self, handler: "_Handler") -> None:
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        h = self.handler
        left = h._deadline - time.monotonic()
        if left <= 0:
            h._expire()
            raise TimeoutError(f"{h._phase} passed")
        h.connection.settimeout(min(h.server.limits.read_timeout, left))
        try:
            return h.connection.recv_into(buffer)
        except TimeoutError:
            if time.monotonic() >= h._deadline:
                h._expire()
            raise


class _Handler(BaseHTTPRequestHandler):
    server: "ReconcilerHTTPServer"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self._expired = False
        self._arm(self.server.limits.header_timeout, "header_timeout")
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self))  # every read within the phase's deadline

    def _arm(self, seconds: float, which: str) -> None:
        """The current phase (headers, body) must be over within `seconds` from now."""
        self._deadline = time.monotonic() + seconds
        self._phase = which

    def _disarm(self) -> None:
        self._deadline = float("inf")

    def _expire(self) -> None:
        if not self._expired:
            self._expired = True
            self.server.count(f"timeout_{self._phase.removesuffix('_timeout')}")

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._disarm()  # the request line and headers are in
        self.close_connection = True  # one request per connection: no idle keep-alive to hold
        return ok and not self._expired  # cut off mid-headers: what arrived is not a request

    def finish(self) -> None:
        self._disarm()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        pass

    def _reply(self, code: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.connection.settimeout(self.server.limits.read_timeout)  # the reply's writes
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # stdlib naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok, text = self.server.health()
            self._reply(200 if ok else 503, text + "\n")
        elif path == "/metrics":
            if not self.server.metrics_authorized(self.headers.get("Authorization")):
                self._reply(401, "/metrics wants Authorization: Bearer <token>\n")
                return
            content_type, payload = self.server.metrics()
            self._reply(200, payload, content_type)
        else:
            self._reply(404, "not found\n")

    def do_POST(self) -> None:  # stdlib naming
        if self.path.split("?", 1)[0] != "/webhook":
            self._reply(404, "not found\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.server.limits.max_body:
            self._reply(413, "payload too large\n")
            return
        self._arm(self.server.limits.body_timeout, "body_timeout")
        try:
            body = self.rfile.read(length)
        except OSError:  # a read timed out, or the body's deadline passed
            return
        finally:
            self._disarm()
        if len(body) < length or self._expired:
            return  # the client went away, or was cut off, before sending what it declared
        if not verify_signature(self.server.secret, body, self.headers.get("X-Hub-Signature-256")):
            self.server.count("rejected")
            self._reply(401, "invalid or missing X-Hub-Signature-256\n")
            return
        event = self.headers.get("X-GitHub-Event", "")
        if event == "ping":
            self.server.count("ping")
            self._reply(200, "pong\n")
            return
        if event != "push":
            self.server.count("ignored")
            self._reply(202, f"ignored event {event!r}\n")
            return
        try:
            push = parse_push(body, self.headers.get("X-GitHub-Delivery"))
        except ValueError as exc:
            self.server.count("bad")
            self._reply(400, f"{exc}\n")
            return
        if push.delivery and not self.server.first_delivery(push.delivery):
            self.server.count("duplicate")
            self._reply(200, f"delivery {push.delivery} already handled\n")
            return
        if self.server.branch is not None and push.branch != self.server.branch:
            self.server.count("ignored")
            self._reply(202, f"ignored push to {push.ref} (watching {self.server.branch})\n")
            return
        self.server.count("accepted")
        self.server.on_push(push)
        self._reply(202, f"queued {push.after[:12]}\n")


class ReconcilerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, secret: bytes | None, branch: str | None,
                 on_push: Callable[[PushEvent], None],
                 metrics: Callable[[], tuple[str, bytes]],
                 health: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
                 count: Callable[[str], None] = lambda outcome: None,
                 limits: ServerLimits = ServerLimits(), metrics_token: str | None = None) -> None:
        super().__init__(address, _Handler)
        self.limits = limits
        self.metrics_token = metrics_token
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._clients: collections.Counter[str] = collections.Counter()
        self._clients_lock = threading.Lock()
        self._deliveries: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._deliveries_lock = threading.Lock()
        self.secret = secret
        self.branch = branch
        self.on_push = on_push
        self.metrics = metrics
        self.health = health
        self.count = count
        self._thread: threading.Thread | None = None

    def metrics_authorized(self, header: str | None) -> bool:
        if not self.metrics_token:
            return True
        expected = f"Bearer {self.metrics_token}".encode()
        return header is not None and hmac.compare_digest(header.strip().encode(), expected)

    def first_delivery(self, delivery: str) -> bool:
        """True the first time a delivery ID is seen (the last `remembered_deliveries` are kept)."""
        with self._deliveries_lock:
            if delivery in self._deliveries:
                self._deliveries.move_to_end(delivery)
                return False
            self._deliveries[delivery] = None
            while len(self._deliveries) > self.limits.remembered_deliveries:
                self._deliveries.popitem(last=False)
            return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, up to max_connections and max_per_client; past that a 503 without a thread."""
        peer = str(client_address[0]) if client_address else "?"
        with self._clients_lock:
            mine = self._clients[peer] < self.limits.max_per_client
            if mine:
                self._clients[peer] += 1
        if not mine or not self._slots.acquire(blocking=False):
            if mine:
                self._leave(peer)
            self.count("overloaded")
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\nRetry-After: 1\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _leave(self, peer: str) -> None:
        with self._clients_lock:
            self._clients[peer] -= 1
            if self._clients[peer] <= 0:
                del self._clients[peer]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._leave(str(client_address[0]) if client_address else "?")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was cut off) is not an error of the server; the rest is logged."""

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ReconcilerHTTPServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="reconciler-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
