"""A small fault-injecting HTTP proxy in front of the real API server.

A real kube-apiserver cannot be told to fail on demand, so tests of retries and of what a pass does when
the server misbehaves put this between the client and the server: it forwards every request to the real
server (so what is not faulted keeps real semantics) and, for requests matching a :class:`Fault`, answers
a status (5xx, 429 with Retry-After) itself, delays the answer past the client's timeout, or drops the
connection without answering. The client talks plain HTTP to the proxy on 127.0.0.1; the proxy talks
HTTPS to the server with the client's own bearer token, so RBAC still applies.

    with FaultProxy(envtest) as proxy:
        proxy.inject(Fault(path="deployments/digits", method="PATCH", status=500, count=2))
        kube = KubeClient.from_kubeconfig(proxy.kubeconfig(tmp_path / "kc"))

Responses are relayed whole (watches through the proxy get their events when the watch ends).
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.envtest import ControlPlane, write_kubeconfig

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}


@dataclass
class Fault:
    """What to do to matching requests. ``path`` is a substring of the request path (query included),
    ``method`` an HTTP method or None for all; ``count`` requests are faulted, then the fault is spent.

    Exactly one effect: ``status`` (answered by the proxy, a metav1.Status body, ``retry_after`` seconds as
    a header), ``delay`` (seconds before forwarding: longer than the client's timeout is a timeout), or
    ``drop`` (close the connection without an answer)."""

    path: str = ""
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    count: int = 1
    dry_run: bool | None = None  # None: both; True: only dryRun=All requests; False: only real writes
    hits: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        if self.hits >= self.count:
            return False
        if self.method and method != self.method:
            return False
        if self.dry_run is not None and ("dryRun=All" in path) != self.dry_run:
            return False
        return self.path in path


class FaultProxy:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int | str]] = []  # (method, path, status or "drop"/"fault")
        self._lock = threading.Lock()
        self._ctx = ssl.create_default_context(cafile=str(plane.ca_file))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        """A kubeconfig pointing at the proxy (plain HTTP) with ``token`` (default: the admin's)."""
        write_kubeconfig(path, self.url, self.plane.ca_file, user, token or self.plane.admin_token)
        return path

    # -- serving -------------------------------------------------------------------------------------------

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        fault = self._pick(h.command, h.path)
        if fault is not None and fault.drop:
            self._record(h, "drop")
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault is not None and fault.status is not None:
            self._record(h, fault.status)
            reason = {429: "TooManyRequests", 500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable",
                      504: "Timeout"}.get(fault.status, "InternalError")
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": f"injected fault: {fault.status}", "reason": reason, "code": fault.status}
            payload = json.dumps(status).encode()
            h.send_response(fault.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            if fault.retry_after is not None:
                h.send_header("Retry-After", str(int(fault.retry_after) if fault.retry_after >= 1 else fault.retry_after))
            h.end_headers()
            h.wfile.write(payload)
            return
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        upstream = http.client.HTTPSConnection("127.0.0.1", self.plane.api_port, context=self._ctx, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            upstream.request(h.command, h.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError as exc:
            self._record(h, "upstream-error")
            h.send_error(502, f"upstream: {exc}")
            return
        finally:
            upstream.close()
        self._record(h, response.status)
        try:
            h.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    h.send_header(key, value)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (its timeout fired during a delay fault)
            h.close_connection = True

    def _record(self, h: http.server.BaseHTTPRequestHandler, outcome: int | str) -> None:
        with self._lock:
            self.requests.append((h.command, h.path, outcome))
