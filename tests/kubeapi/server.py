"""The HTTP front of the stand-in: :class:`KubeApiServer`, started and stopped in-process.

HTTP/1.1 with keep-alive on 127.0.0.1 and an ephemeral port, one thread per connection
(``ThreadingHTTPServer``), plain HTTP without authentication, JSON only (no protobuf/CBOR).
Watch responses use chunked transfer encoding.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.kubeapi.api import ApiHandler
from tests.kubeapi.errors import ApiError
from tests.kubeapi.instrumentation import Fault, FaultQueue, Stats
from tests.kubeapi.registry import BUILTIN_TYPES, COMMON_CRDS, Registry
from tests.kubeapi.rollout import RolloutMode, RolloutPolicy
from tests.kubeapi.routing import Request, Response
from tests.kubeapi.store import Store
from tests.kubeapi.validation import Validation, Validator
from tests.kubeapi.values import clone
from tests.kubeapi.writes import CRDS, Writer

SYSTEM_MANAGER = "kubeapi-standin"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_FAULT_MESSAGES = {429: "Too many requests, please try again later.",
                   500: "Internal error occurred: injected fault",
                   503: "the server is currently unable to handle the request"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging."""

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        req = Request(self.command, unquote(split.path), query, self.headers, body)
        fault = standin.faults.take(req.method, self.path)
        verb, resource = standin.api.verb(req)
        try:
            dry_run = req.dry_run
        except ApiError:
            dry_run = False
        standin.stats.record(verb, resource, dry_run, fault is not None)
        if fault is not None and fault.delay is not None:
            standin.stopping.wait(fault.delay)
            self.close_connection = True
            return
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            response = Response.error(ApiError(
                fault.status, _FAULT_MESSAGES.get(fault.status, "injected fault"),
                headers=headers))
        else:
            try:
                response = standin.api.handle(req, f"127.0.0.1:{standin.port}")
            except Exception as exc:  # a stand-in bug: answer like an apiserver panic would
                response = Response.error(ApiError(500, f"Internal error occurred: {exc!r}"))
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        names = {name.lower() for name, _ in response.headers}
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        for name, value in response.headers:
            self.send_header(name, value)
        if response.stream is None:
            payload = json.dumps(response.body).encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in response.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent clients (benchmarks) connect at once

    def __init__(self, address: tuple[str, int], standin: KubeApiServer) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (timeouts, stopped watches) are normal here; report the rest."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class KubeApiServer:
    """An in-memory Kubernetes API server speaking real HTTP to real clients.

    Use as a context manager or call :meth:`start` / :meth:`stop`. See the package docstring
    for what is simplified compared to a real kube-apiserver.
    """

    def __init__(self, *, with_common_crds: bool = False, simulate_rollouts: bool = True,
                 host: str = "127.0.0.1", port: int = 0, watch_history: int = 20000) -> None:
        self.with_common_crds = with_common_crds
        self.stats = Stats()
        self.faults = FaultQueue()
        self.registry = Registry()
        self.store = Store(history=watch_history)
        self.validation = Validation()
        self.rollout = RolloutPolicy()
        self.stopping = threading.Event()
        self.writer = Writer(self.registry, self.store, self.validation, self.rollout, self.stats)
        self.api = ApiHandler(self.registry, self.store, self.writer, self.stopping)
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._simulate_rollouts = simulate_rollouts
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        self.stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"kubeapi-standin:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends watches, drops keep-alive connections, closes the socket."""
        if self._httpd is None:
            return
        self.stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._httpd.shutdown()
        for conn in list(self._httpd.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the stand-in is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- state -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh cluster: built-in types, default namespaces, (common CRDs), no faults,
        no custom validators, rollouts "complete", zeroed stats."""
        with self.store.lock:
            self.store.clear()
            for rtype in self.registry.all():
                self.registry.remove_group_resource(rtype.group, rtype.plural)
            for rtype in BUILTIN_TYPES:
                self.registry.add(rtype)
            self.faults.clear()
            self.validation.clear()
            self.rollout.reset()
            self.rollout.enabled = self._simulate_rollouts
            for name in DEFAULT_NAMESPACES:
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            if self.with_common_crds:
                for group, version, kind, plural, status in COMMON_CRDS:
                    self.register_crd(group, version, kind, plural, status_subresource=status)
        self.stats.reset()

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self.store.resource_version

    def create(self, obj: dict, manager: str = SYSTEM_MANAGER) -> dict:
        """Store an object directly (setup helper; not counted in stats, same validation)."""
        rtype = self.registry.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rtype is None:
            raise ValueError(f"no served type {obj.get('apiVersion')}/{obj.get('kind')}")
        new = clone(obj)
        meta = new.setdefault("metadata", {})
        with self.store.lock:
            if rtype.namespaced:
                meta.setdefault("namespace", "default")
                if self.store.get(("", "namespaces"), "", meta["namespace"]) is None:
                    raise ApiError(404, f'namespaces "{meta["namespace"]}" not found')
            if self.store.get(rtype.group_resource, meta.get("namespace", ""),
                              meta.get("name", "")) is not None:
                raise ApiError(409, f'{rtype.qualified_resource} "{meta["name"]}" already exists')
            return clone(self.writer.persist(rtype, None, new, manager))

    def register_crd(self, group: str, version: str, kind: str, plural: str,
                     namespaced: bool = True, status_subresource: bool = False) -> dict:
        """Create (or add a served version to) a CustomResourceDefinition; returns it."""
        crds = self.registry.by_path("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        entry: dict = {"name": version, "served": True, "storage": True,
                       "schema": {"openAPIV3Schema": {"type": "object",
                                                      "x-kubernetes-preserve-unknown-fields": True}}}
        if status_subresource:
            entry["subresources"] = {"status": {}}
        name = f"{plural}.{group}"
        with self.store.lock:
            old = self.store.get(CRDS, "", name)
            if old is None:
                return self.create({
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": name},
                    "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                             "names": {"kind": kind, "plural": plural,
                                       "singular": kind.lower(), "listKind": f"{kind}List"},
                             "versions": [entry]}})
            new = clone(old)
            versions = new["spec"]["versions"]
            if all(v["name"] != version for v in versions):
                versions.append({**entry, "storage": False})
            return clone(self.writer.persist(crds, old, new, SYSTEM_MANAGER))

    def objects(self, kind: str | None = None, namespace: str | None = None,
                api_version: str | None = None) -> list[dict]:
        """Copies of stored objects, optionally filtered by kind, apiVersion and namespace."""
        out = []
        with self.store.lock:
            seen = set()
            for rtype in self.registry.all():
                if rtype.group_resource in seen:
                    continue
                if kind is not None and rtype.kind != kind:
                    continue
                if api_version is not None and rtype.api_version != api_version:
                    continue
                seen.add(rtype.group_resource)
                out += [clone(o) for o in self.store.list(rtype.group_resource, namespace)]
        return out

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        """A copy of one stored object, or None."""
        rtype = self.registry.by_kind(api_version, kind)
        if rtype is None:
            return None
        with self.store.lock:
            obj = self.store.get(rtype.group_resource, namespace if rtype.namespaced else "", name)
            return clone(obj) if obj is not None else None

    def kinds(self) -> list[str]:
        """``apiVersion/Kind`` of every served type."""
        return sorted({f"{t.api_version}/{t.kind}" for t in self.registry.all()})

    # -- behaviour knobs ---------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        """Queue a fault; it is consumed by the next ``fault.count`` matching requests."""
        self.faults.add(fault)
        return fault

    def add_validator(self, group: str, kind: str, validator: Validator) -> None:
        """Run ``validator(new, old) -> [Cause]`` on every write of (group, kind)."""
        self.validation.add(group, kind, validator)

    @property
    def simulate_rollouts(self) -> bool:
        return self.rollout.enabled

    @simulate_rollouts.setter
    def simulate_rollouts(self, enabled: bool) -> None:
        self.rollout.enabled = enabled

    def set_rollout_behaviour(self, mode: RolloutMode, name: str | None = None,
                              namespace: str | None = None, apply_now: bool = True) -> None:
        """Make Deployment rollouts ``complete``, ``stuck`` or ``failed``.

        Without ``name`` the mode becomes the default for all Deployments; with ``name`` (and
        optionally ``namespace``) it applies to that Deployment only. ``apply_now`` re-writes
        the status of the matching existing Deployments (a status update, new
        resourceVersion) as the controller would.
        """
        self.rollout.set(mode, name, namespace)
        if apply_now:
            deployments = self.registry.by_path("apps", "v1", "deployments")
            with self.store.lock:
                self.writer.resimulate(deployments, namespace, name)

    # -- client configuration ----------------------------------------------------------------

    def write_kubeconfig(self, path: str | Path, context: str = "standin",
                         namespace: str = "default") -> Path:
        """Write a kubeconfig with one context pointing at this server; returns the path."""
        return write_kubeconfig(path, {context: self}, namespace=namespace)


def write_kubeconfig(path: str | Path, servers: dict[str, KubeApiServer],
                     namespace: str = "default", current: str | None = None) -> Path:
    """Write a kubeconfig with one context (and cluster/user of the same name) per server."""
    path = Path(path)
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "current-context": current or next(iter(servers)),
        "clusters": [{"name": n, "cluster": {"server": s.url}} for n, s in servers.items()],
        "users": [{"name": n, "user": {"token": "standin"}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n, "namespace": namespace}}
                     for n in servers],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
