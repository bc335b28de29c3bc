"""A local stand-in for the Argo Server REST API (no cluster or Argo server can run here).

Serves, on 127.0.0.1 and an ephemeral port, the calls the reconciler makes, the way argo-server
answers them (grpc-gateway JSON errors `{"code": <grpc code>, "message": ...}`):

  POST /api/v1/workflows/{namespace}          body {"workflow": {...}} -> 200 + the created workflow
  GET  /api/v1/workflows/{namespace}          ?listOptions.labelSelector=k=v,k2=v2 -> {"items": [...]}
  GET  /api/v1/workflows/{namespace}/{name}   -> the workflow, or 404

It checks what the real server checks before accepting a workflow: a bearer token (401), a
namespace it serves (404 otherwise... argo-server answers 403 for namespaces the token may not use),
a name or generateName, label keys/values Kubernetes accepts, an entrypoint that names a template,
every `{{workflow.parameters.X}}` declared in spec.arguments and every `{{inputs.parameters.X}}`
declared in that template's inputs, and an existing name (409). Every request body is recorded
in `requests` for tests to inspect.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
WORKFLOW_PARAM = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")
INPUT_PARAM = re.compile(r"\{\{\s*inputs\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")

# grpc codes argo-server puts in its JSON errors
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED = 3, 5, 6, 7, 16


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ArgoStandIn:
    token: str | None = "s3cret"
    namespaces: tuple[str, ...] = ("argo",)
    workflows: dict[tuple[str, str], dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int | None = None  # answer the next request with this HTTP status (e.g. 500)

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                standin.requests.append(Recorded(method, self.path, dict(self.headers), body))
                status, payload = standin.answer(method, self.path, self.headers.get("Authorization"), body)
                self._reply(status, payload)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ArgoStandIn":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ the API

    def answer(self, method: str, raw_path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        if self.fail_next is not None:
            status, self.fail_next = self.fail_next, None
            return status, {"code": 13, "message": "injected failure"}
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, {"code": UNAUTHENTICATED, "message": "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/"}
        url = urlparse(raw_path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:3] != ["api", "v1", "workflows"] or len(parts) not in (4, 5):
            return 404, {"code": NOT_FOUND, "message": f"Not Found: {url.path}"}
        namespace = parts[3]
        if namespace not in self.namespaces:
            return 403, {"code": PERMISSION_DENIED, "message": f'workflows.argoproj.io is forbidden: User "system:serviceaccount:argo:reconciler" cannot access workflows in the namespace "{namespace}"'}
        if method == "POST" and len(parts) == 4:
            return self._create(namespace, body)
        if method == "GET" and len(parts) == 4:
            selector = parse_qs(url.query).get("listOptions.labelSelector", [""])[0]
            return 200, {"metadata": {"resourceVersion": "1"}, "items": self._list(namespace, selector) or None}
        if method == "GET" and len(parts) == 5:
            found = self.workflows.get((namespace, parts[4]))
            if found is None:
                return 404, {"code": NOT_FOUND, "message": f'workflows.argoproj.io "{parts[4]}" not found'}
            return 200, found
        return 405, {"code": 12, "message": f"method {method} not allowed on {url.path}"}

    def _list(self, namespace: str, selector: str) -> list[dict]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        return [wf for (ns, _), wf in sorted(self.workflows.items())
                if ns == namespace and all(wf["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]

    def _create(self, namespace: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("workflow"), dict):
            return 400, {"code": INVALID_ARGUMENT, "message": "request body must be {\"workflow\": {...}}"}
        workflow = json.loads(json.dumps(body["workflow"]))
        problems = validate(workflow, namespace)
        if problems:
            return 400, {"code": INVALID_ARGUMENT, "message": "; ".join(problems)}
        meta = workflow.setdefault("metadata", {})
        name = meta.get("name") or meta["generateName"] + uuid.uuid4().hex[:5]
        if (namespace, name) in self.workflows:
            return 409, {"code": ALREADY_EXISTS, "message": f'workflows.argoproj.io "{name}" already exists'}
        meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp="2026-01-01T00:00:00Z",
                    resourceVersion=str(len(self.workflows) + 1))
        meta.setdefault("labels", {})["workflows.argoproj.io/phase"] = "Pending"
        workflow["status"] = {"phase": "Pending"}
        self.workflows[(namespace, name)] = workflow
        return 200, workflow


def validate(workflow: dict, namespace: str) -> list[str]:
    """What argo-server / the API server reject at create time (a subset, the parts we can get wrong)."""
    problems = []
    meta = workflow.get("metadata") or {}
    if not meta.get("name") and not meta.get("generateName"):
        problems.append("metadata.name or metadata.generateName is required")
    if meta.get("namespace") not in (None, namespace):
        problems.append(f"the namespace of the provided object ({meta['namespace']}) does not match the "
                        f"namespace sent on the request ({namespace})")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if not LABEL_NAME.match(label) or len(label) > 63 or len(prefix) > 253:
            problems.append(f"metadata.labels: Invalid value: {key!r}: not a qualified name")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"metadata.labels: Invalid value: {value!r}: a valid label must be 63 characters "
                            "or less, alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
    spec = workflow.get("spec") or {}
    templates = {t.get("name"): t for t in spec.get("templates") or []}
    if not templates:
        problems.append("spec.templates is required")
    if spec.get("entrypoint") not in templates:
        problems.append(f"spec.entrypoint {spec.get('entrypoint')!r} does not name a template")
    arguments = (spec.get("arguments") or {}).get("parameters") or []
    declared = {p.get("name") for p in arguments}
    for param in arguments:
        if "value" not in param and "valueFrom" not in param:
            problems.append(f"spec.arguments.{param.get('name')}.value is required")
    for used in sorted(set(WORKFLOW_PARAM.findall(json.dumps(spec)))):
        if used not in declared:
            problems.append(f"failed to resolve {{{{workflow.parameters.{used}}}}}")
    for name, template in templates.items():
        inputs = {p.get("name") for p in (template.get("inputs") or {}).get("parameters") or []}
        for used in sorted(set(INPUT_PARAM.findall(json.dumps(template)))):
            if used not in inputs:
                problems.append(f"templates.{name}: failed to resolve {{{{inputs.parameters.{used}}}}}")
        for task in (template.get("dag") or {}).get("tasks") or []:
            if task.get("template") not in templates:
                problems.append(f"templates.{name}.tasks.{task.get('name')} template {task.get('template')!r} not found")
            target = templates.get(task.get("template")) or {}
            needed = {p["name"] for p in (target.get("inputs") or {}).get("parameters") or []
                      if "value" not in p and "default" not in p}
            given = {p.get("name") for p in (task.get("arguments") or {}).get("parameters") or []}
            for missing in sorted(needed - given):
                problems.append(f"templates.{name}.tasks.{task.get('name')}: inputs.parameters.{missing} was not supplied")
    return problems
