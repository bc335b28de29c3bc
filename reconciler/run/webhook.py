"""The reconciler's HTTP endpoint: GitHub push webhooks, Prometheus /metrics and /healthz.

``POST /webhook`` accepts a GitHub ``push`` event only with a valid ``X-Hub-Signature-256``
(HMAC SHA-256 of the raw body with the shared secret, compared in constant time); a push to the
watched branch wakes the loop at once instead of at its next poll. A missing or wrong signature is
answered 401 and changes nothing; so is any request when no secret is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


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


class _Handler(BaseHTTPRequestHandler):
    server: "ReconcilerHTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _reply(self, code: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok, text = self.server.health()
            self._reply(200 if ok else 503, text + "\n")
        elif path == "/metrics":
            content_type, payload = self.server.metrics()
            self._reply(200, payload, content_type)
        else:
            self._reply(404, "not found\n")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0] != "/webhook":
            self._reply(404, "not found\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._reply(413, "payload too large\n")
            return
        body = self.rfile.read(length)
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
                 count: Callable[[str], None] = lambda outcome: None) -> None:
        super().__init__(address, _Handler)
        self.secret = secret
        self.branch = branch
        self.on_push = on_push
        self.metrics = metrics
        self.health = health
        self.count = count
        self._thread: threading.Thread | None = None

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
