"""Argo Workflows adapter: render hera Workflows to YAML, submit them to an Argo server.

The server comes from the environment, like the `argo` CLI: ARGO_SERVER (host[:port], https
unless a scheme is given), ARGO_TOKEN (with or without the `Bearer ` prefix), ARGO_NAMESPACE
(default `argo`), ARGO_INSECURE_SKIP_VERIFY=true for a self-signed certificate.

Every failure (HTTP status, connection, TLS, a malformed reply) is raised as ArgoError with a fix;
no hera or requests exception leaves this module.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import requests

from reconciler import net
from reconciler.errors import ArgoError

DEFAULT_NAMESPACE = "argo"


@dataclass(frozen=True)
class ArgoConfig:
    host: str
    token: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    verify_ssl: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ArgoConfig":
        env = os.environ if env is None else env
        server = env.get("ARGO_SERVER", "").strip()
        if not server:
            raise ArgoError("no Argo server configured (ARGO_SERVER is not set)",
                            fix="export ARGO_SERVER=argo.example.com:2746 (and ARGO_TOKEN, ARGO_NAMESPACE), "
                                "or render the workflow with `reconciler pipeline render` and `argo submit` it")
        if "://" not in server:
            server = "https://" + server
        return cls(host=server.rstrip("/"), token=env.get("ARGO_TOKEN") or None,
                   namespace=env.get("ARGO_NAMESPACE") or DEFAULT_NAMESPACE,
                   verify_ssl=env.get("ARGO_INSECURE_SKIP_VERIFY", "").lower() not in ("1", "true", "yes"))


@dataclass(frozen=True)
class SubmitResult:
    name: str
    namespace: str
    created: bool  # False: a workflow with this name already existed (exists_ok)
    ui_url: str


DEADLINE = 30.0  # seconds for each whole request to the Argo server (reconciler.net)


class _DeadlineSession(requests.Session):
    """The session hera's WorkflowsService sends through: each request goes out by reconciler.net, with a
    deadline for the whole request and a byte bound (requests, like httpx, only times each socket read: an
    Argo server dripping its answer would hold `build --submit` as long as it likes). httpx's failures
    come back as the requests exceptions `_translate` words."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def request(self, method: str | bytes, url: str | bytes, params: Any = None, data: Any = None,  # type: ignore[override]
                headers: Any = None, verify: Any = True, cert: Any = None, **_: Any) -> requests.Response:
        sent = {k: v for k, v in (headers or {}).items() if v is not None}
        try:
            with net.client(self.deadline, verify=verify is not False, **({"cert": cert} if cert else {})) as client:
                answer = client.request(str(method).upper(), str(url), params=params, content=data, headers=sent)
        except net.DeadlineExceeded as exc:
            raise requests.exceptions.Timeout(str(exc)) from None
        except httpx.HTTPError as exc:
            if isinstance(exc.__context__, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise requests.exceptions.SSLError(str(exc)) from None
            raise requests.exceptions.ConnectionError(f"{type(exc).__name__}: {exc}") from None
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.content
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response.url = str(answer.url)
        response.reason = answer.reason_phrase
        response.encoding = answer.encoding
        return response


def _service(config: ArgoConfig):
    from hera.workflows import WorkflowsService

    return WorkflowsService(host=config.host, token=config.token, namespace=config.namespace,
                            verify_ssl=config.verify_ssl, session=_DeadlineSession(DEADLINE))


def _ui_url(config: ArgoConfig, namespace: str, name: str) -> str:
    return f"{config.host}/workflows/{namespace}/{name}"


def _translate(exc: Exception, config: ArgoConfig, action: str, namespace: str) -> ArgoError:
    """One ArgoError, with a fix, for whatever hera / requests raised."""
    from hera import exceptions as hx

    where = f"Argo server {config.host}"
    if isinstance(exc, hx.Unauthorized):
        return ArgoError(f"{where} refused the credentials while trying to {action} (401): {exc}",
                         fix="set ARGO_TOKEN to a valid token (`argo auth token`, or a service account token)")
    if isinstance(exc, hx.Forbidden):
        return ArgoError(f"{where} forbids {action} in namespace {namespace!r} (403): {exc}",
                         fix=f"grant the token's service account create/get on workflows.argoproj.io in {namespace} "
                             "(a Role + RoleBinding), or set ARGO_NAMESPACE to a namespace it may use")
    if isinstance(exc, hx.AlreadyExists):
        return ArgoError(f"{where}: cannot {action}: it already exists (409): {exc}",
                         fix="this exact build was already submitted: `argo get` it, or delete it to run it again")
    if isinstance(exc, hx.NotFound):
        return ArgoError(f"{where}: not found while trying to {action} (404): {exc}",
                         fix="check ARGO_SERVER points at the Argo server (not the UI behind a path prefix) "
                             f"and that namespace {namespace!r} exists and is managed by Argo")
    if isinstance(exc, hx.BadRequest):
        return ArgoError(f"{where} rejected the workflow while trying to {action} (400): {exc}",
                         fix="the workflow is invalid for this Argo version: render it with `reconciler pipeline "
                             "render` and run `argo lint` on it")
    if isinstance(exc, hx.HeraException):
        return ArgoError(f"{where} failed to {action}: {exc}",
                         fix="retry; if it persists, check the workflow-controller and argo-server logs")
    if isinstance(exc, requests.exceptions.SSLError):
        return ArgoError(f"TLS verification of {where} failed: {exc}",
                         fix="install the server's CA, or set ARGO_INSECURE_SKIP_VERIFY=true for a self-signed server")
    if isinstance(exc, requests.exceptions.RequestException):
        return ArgoError(f"cannot reach {where} to {action}: {type(exc).__name__}: {exc}",
                         fix="check ARGO_SERVER (host:port of argo-server, e.g. `kubectl -n argo port-forward "
                             "svc/argo-server 2746`) and the network")
    return ArgoError(f"{where} gave an unexpected reply while trying to {action}: {type(exc).__name__}: {exc}",
                     fix="check ARGO_SERVER points at an Argo server (its REST API answers on /api/v1/...)")


def submit(workflow: Any, config: ArgoConfig, *, exists_ok: bool = False) -> SubmitResult:
    """Create the workflow on the Argo server (POST /api/v1/workflows/{namespace}).

    The namespace is the workflow's own (metadata.namespace) or the config's. A workflow with a fixed
    name that already exists raises ArgoError, or with exists_ok=True returns created=False.
    """
    from hera.workflows.models import WorkflowCreateRequest

    built = workflow.build()
    namespace = built.metadata.namespace or config.namespace
    name = built.metadata.name or built.metadata.generate_name or "?"
    action = f"create workflow {namespace}/{name}"
    service = _service(config)
    try:
        created = service.create_workflow(WorkflowCreateRequest(workflow=built), namespace=namespace)
    except Exception as exc:  # translated, never leaked
        from hera import exceptions as hx

        if exists_ok and isinstance(exc, hx.AlreadyExists) and built.metadata.name:
            return SubmitResult(built.metadata.name, namespace, False, _ui_url(config, namespace, built.metadata.name))
        raise _translate(exc, config, action, namespace) from None
    finally:
        service.close()
    final = created.metadata.name if created.metadata and created.metadata.name else name
    return SubmitResult(final, namespace, True, _ui_url(config, namespace, final))


def get_workflow(name: str, config: ArgoConfig, *, namespace: str | None = None) -> dict[str, Any]:
    """The workflow as a plain dict (GET /api/v1/workflows/{namespace}/{name})."""
    namespace = namespace or config.namespace
    service = _service(config)
    try:
        found = service.get_workflow(name, namespace=namespace)
    except Exception as exc:
        raise _translate(exc, config, f"get workflow {namespace}/{name}", namespace) from None
    finally:
        service.close()
    return found.model_dump(by_alias=True, exclude_none=True, mode="json")


def list_workflows(config: ArgoConfig, *, labels: Mapping[str, str] | None = None,
                   namespace: str | None = None) -> list[dict[str, Any]]:
    """Workflows matching all `labels` (e.g. {"gitops.ml/model": "iris-classifier"}), as plain dicts."""
    namespace = namespace or config.namespace
    selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or None
    service = _service(config)
    try:
        found = service.list_workflows(namespace=namespace, label_selector=selector)
    except Exception as exc:
        raise _translate(exc, config, f"list workflows in {namespace}", namespace) from None
    finally:
        service.close()
    return [w.model_dump(by_alias=True, exclude_none=True, mode="json") for w in (found.items or [])]
