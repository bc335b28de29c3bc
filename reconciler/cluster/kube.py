"""Kubernetes adapter: the only module that talks to an API server.

Over 400 lines: it is one class, KubeClient, whose verbs share the discovery cache, the retry policy
and the one translation of API errors into KubeError subclasses; split across modules, those would
have to be shared back through private names.

Built on the official ``kubernetes`` client (37.x): its ``ApiClient`` holds the kubeconfig or in-cluster
auth, TLS and proxies, and requests go out on its urllib3 pool as raw JSON (its per-request serialiser and
auth refresh are skipped: see ``_send``). This module adds what the reconciler needs on top of it:

* arbitrary kinds, custom resources included, through a small discovery-backed resource mapping
  (``apiVersion`` + ``kind`` -> plural and scope, one ``GET /api/v1`` or ``/apis/<group>/<version>``
  per group-version, refreshed once on a miss so a freshly installed CRD is found);
* server-side apply with a field manager (``application/apply-patch+yaml``), server-side dry run;
* every failure turned into :class:`reconciler.errors.KubeError` (status, reason, Retry-After,
  causes): no ``ApiException`` or urllib3 error leaves this module;
* bounded retries on 429 / 5xx / timeouts / connection errors, honouring ``Retry-After``, with a
  capped exponential backoff (tenacity).

Objects go in and come out as plain dicts (the JSON the server speaks).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import tenacity
import urllib3

from reconciler import labels
from reconciler.errors import (Conflict, Forbidden, Invalid, KubeError, NoKindMatch, NotFound, ServerError,
                               TooManyRequests, Unauthorized, Unreachable)
from reconciler.results import ObjectRef

from reconciler.cluster.protocol import Cluster, PatchType
import os

CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a request that failed with 429, 5xx, a timeout or a connection error.

    The wait before attempt n+1 is ``min(cap, initial * 2**(n-1))``, raised to the server's
    ``Retry-After`` when it sent one (itself capped at ``max_retry_after``). Retries stop after
    ``attempts`` tries or once ``deadline`` seconds have passed, whichever comes first; the last
    error is raised then.
    """

    attempts: int = 6
    initial: float = 0.2
    cap: float = 5.0
    max_retry_after: float = 30.0
    deadline: float = 120.0

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        backoff = min(self.cap, self.initial * (2 ** max(0, attempt - 1)))
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            backoff = max(backoff, min(float(retry_after), self.max_retry_after))
        return backoff


NO_RETRY = RetryPolicy(attempts=1)

# Connections kept per API server: at least the sync's concurrency (SyncOptions.concurrency, 8 by default).
POOL_SIZE = 32


@dataclass(frozen=True)
class Resource:
    """What the server calls a kind: its plural path segment and whether it lives in a namespace."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def base_path(self) -> str:
        return f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        path = self.base_path()
        if self.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{self.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        return path


@dataclass
class RequestStats:
    """Client-side counts (the server's own counters are the truth in tests; these are for reports)."""

    requests: int = 0
    retries: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


def _parse_retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


# A 500 that is the server's answer about the object, not a fault of the server: these come from
# paths of the apiserver that return a plain Go error for bad client input, so they reach the client as
# HTTP 500 with no Status reason. Resending the same object fails the same way, so they are Invalid
# (not retried, and one model's bad object skips only that model). Each entry: message prefix -> why.
VALIDATION_500: dict[str, str] = {
    # server-side apply of a field the schema does not declare (or a malformed associative list):
    # kubernetes/kubernetes#122480, #139253 (a fix to answer 400 is open upstream)
    "failed to create typed patch object": "the object does not match the kind's schema",
    # a value the typed conversion cannot parse, e.g. a quantity `cpu: lots`
    "failed to convert new object": "a field has a value of the wrong type or format",
    "unable to convert unstructured object": "a field has a value of the wrong type or format",
}


def is_validation_500(message: str) -> bool:
    return any(message.startswith(prefix) or f": {prefix}" in message for prefix in VALIDATION_500)


def _error_class(status: int, status_reason: str | None, message: str) -> type[KubeError]:
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if status in (400, 422) or (status == 500 and status_reason in (None, "") and is_validation_500(message)):
        return Invalid
    if status == 401:
        return Unauthorized
    if status == 403:
        return Forbidden
    if status == 429:
        return TooManyRequests
    if status >= 500:
        return ServerError
    return KubeError


def _error_from_response(status: int, reason: str | None, data: bytes | None, headers: Any,
                         what: str) -> KubeError:
    """Build the KubeError subclass for an HTTP failure, reading the metav1.Status body when there is one."""
    message, causes, status_reason, payload = "", [], None, None
    if data:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            payload = body
            message = body.get("message") or ""
            status_reason = body.get("reason") or None
            for cause in (body.get("details") or {}).get("causes") or []:
                text = cause.get("message") or cause.get("reason") or ""
                causes.append(f"{cause['field']}: {text}" if cause.get("field") else text)
        elif data:
            message = data.decode("utf-8", "replace")[:500]
    cls = _error_class(status, status_reason, message)
    reason_text = status_reason or ("Invalid" if cls is Invalid and status == 500 else None) or reason or "Unknown"
    fix = _FIXES.get(status) if cls is not Invalid or status != 500 else _FIXES[422]
    return cls(f"{what}: HTTP {status} {reason_text}" + (f": {message}" if message else ""),
               status=status, reason=reason_text, retry_after=_parse_retry_after(headers),
               causes=causes, fix=fix, payload=payload)


_FIXES: dict[int, str] = {
    400: "the rendered object is malformed: fix the model's manifests",
    401: "the credentials in the kubeconfig were rejected: refresh them (or pick another --context)",
    403: "the reconciler's ServiceAccount lacks RBAC for this verb and kind: see environments/reconciler/rbac.yaml",
    422: "the rendered object is invalid: fix the model's manifests named in the causes",
    429: "the API server is throttling: retry later or lower the reconcile concurrency",
}


class KubeClient:
    """A small, typed front to one API server. Thread-safe for concurrent requests."""

    def __init__(self, api_client: Any, *, retry: RetryPolicy | None = None,
                 request_timeout: float | tuple[float, float] | None = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.stats = RequestStats()
        self._sleep = sleep
        self._resources: dict[str, dict[str, Resource]] = {}
        self._lock = threading.Lock()
        self._auth: dict[str, str] | None = None
        self._auth_at = 0.0

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, context: str | None = None,
                        **kwargs: Any) -> "KubeClient":
        """A client for the kubeconfig at ``path`` (default: $KUBECONFIG or ~/.kube/config) and
        ``context`` (default: its current context). With no path and no kubeconfig at all, the
        in-cluster ServiceAccount is used (the reconciler's own Deployment)."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        configuration = k8s_client.Configuration()
        offline = "; for an offline view of what would change, run `reconciler plan`"
        shown = str(path) if path else kubeconfig_location()
        if path is None and not _default_kubeconfig_exists():
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                raise KubeError(f"no Kubernetes cluster to talk to: there is no kubeconfig at {shown} and this is not "
                                "a pod in a cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset)",
                                reason="NoConfig",
                                fix=f"pass --kubeconfig PATH (and --context NAME) or set KUBECONFIG{offline}") from None
        else:
            try:
                k8s_config.load_kube_config(config_file=str(path) if path else None, context=context,
                                            client_configuration=configuration, persist_config=False)
            except k8s_config.ConfigException as exc:
                which = f"context {context!r} of " if context else ""
                raise KubeError(f"cannot use {which}the kubeconfig at {shown}: {exc}", reason="NoConfig",
                                fix=f"check the file and the context (`kubectl config get-contexts`), or pass "
                                    f"--kubeconfig PATH --context NAME{offline}") from None
            except (OSError, ValueError) as exc:
                raise KubeError(f"cannot read the kubeconfig at {shown}: {exc}", reason="NoConfig",
                                fix=f"check the file exists and is valid YAML{offline}") from None
        # Retries belong to this adapter (bounded, Retry-After aware); urllib3 must not retry on its own.
        configuration.retries = 0
        # One kept-alive connection per concurrent request: the client's default (5 per CPU) is below the
        # sync's concurrency on a 1-CPU pod, and urllib3 then opens (TLS handshake) and drops a
        # connection for every request beyond it.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_SIZE)
        return cls(k8s_client.ApiClient(configuration), **kwargs)

    def check_connection(self) -> str:
        """One GET /version without retries; the server URL on success, a KubeError saying so otherwise."""
        server = getattr(getattr(self.api_client, "configuration", None), "host", "") or "the API server"
        try:
            self.request("GET", "/version", what=f"GET {server}/version", retry=NO_RETRY)
        except KubeError as exc:
            if exc.status is not None and exc.status in (401, 403):
                return server  # reachable; what the credentials may do is each request's business
            raise KubeError(f"cannot reach the Kubernetes API at {server}: {exc.message}", status=exc.status,
                            reason=exc.reason, fix="check the kubeconfig's server URL and the network; for an "
                                                   "offline view of what would change, run `reconciler plan`") from None
        return server

    @classmethod
    def from_api_client(cls, api_client: Any, **kwargs: Any) -> "KubeClient":
        return cls(api_client, **kwargs)

    def close(self) -> None:
        try:
            self.api_client.close()
        except Exception:  # closing is best effort
            pass

    # -- transport -----------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        """The Authorization header of the configuration, re-read at most once a second.

        The client's own path re-runs the kubeconfig's refresh hook on every request, and that hook
        re-assigns the host, which re-reads every proxy variable of the environment: about 1 ms of
        CPU per request, a quarter of the reconciler's CPU in a cold sync. Tokens that expire (exec
        plugins, OIDC, the projected ServiceAccount token) are still refreshed by the hook, once a
        second at most."""
        now = time.monotonic()
        with self._lock:
            if self._auth is not None and now - self._auth_at < 1.0:
                return self._auth
        cfg = getattr(self.api_client, "configuration", None)
        token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization") if cfg is not None else None
        auth = {"Authorization": token} if token else {}
        with self._lock:
            self._auth, self._auth_at = auth, now
        return auth

    def _send(self, method: str, path: str, query: list[tuple[str, str]] | None, body: Any,
              content_type: str | None) -> Any:
        """One HTTP exchange on the client's urllib3 pool (its TLS, proxy and client certificates), with
        the JSON encoded here: the client's own serialiser walks every value of the body first."""
        api = self.api_client
        url = api.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {**api.default_headers, "Accept": "application/json", **self._auth_headers()}
        if getattr(api, "cookie", None):
            headers["Cookie"] = api.cookie
        data = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        return api.rest_client.pool_manager.request(method, url, body=data, headers=headers, timeout=_urllib3_timeout(self.request_timeout),
                                                    preload_content=True)

    def _request_once(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                      body: Any = None, content_type: str | None = None, what: str = "") -> tuple[int, Any]:
        with self._lock:
            self.stats.requests += 1
            self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
        try:
            response = self._send(method, path, query, body, content_type)
            data = response.data
        except KubeError:
            raise
        except urllib3.exceptions.SSLError as exc:  # a certificate problem does not go away by retrying
            raise KubeError(f"{what or method + ' ' + path}: TLS error: {exc}", status=None, reason="SSLError",
                            fix="check the kubeconfig's certificate-authority data and the server URL") from None
        except urllib3.exceptions.HTTPError as exc:
            inner = getattr(exc, "reason", None) or exc
            if isinstance(inner, urllib3.exceptions.SSLError):
                raise KubeError(f"{what or method + ' ' + path}: TLS error: {inner}", status=None, reason="SSLError",
                                fix="check the kubeconfig's certificate-authority data and the server URL") from None
            # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first
            timed_out = isinstance(inner, urllib3.exceptions.TimeoutError) and not isinstance(
                inner, urllib3.exceptions.NewConnectionError)
            reason = "Timeout" if timed_out else "ConnectionError"
            raise Unreachable(f"{what or method + ' ' + path}: {reason}: {inner}", status=None, reason=reason,
                              fix="check the API server is reachable (kubeconfig server URL, network)") from None
        except Exception as exc:  # anything else from the transport
            status = getattr(exc, "status", None) or None
            raise KubeError(f"{what or method + ' ' + path}: {type(exc).__name__}: {getattr(exc, 'reason', exc)}",
                            status=status, reason=type(exc).__name__) from None
        status = response.status
        if not 200 <= status <= 299:
            raise _error_from_response(status, response.reason, data, response.headers, what or f"{method} {path}")
        if not data:
            return status, None
        try:
            return status, json.loads(data)
        except ValueError:
            raise KubeError(f"{what or method + ' ' + path}: the server answered with non-JSON",
                            status=status, reason="BadResponse") from None

    def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                body: Any = None, content_type: str | None = None, what: str = "",
                retry: RetryPolicy | None = None) -> tuple[int, Any]:
        """One API call with bounded retries on retryable failures. Returns (status, parsed JSON)."""
        policy = retry or self.retry
        started = time.monotonic()

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            remaining = policy.deadline - (time.monotonic() - started)
            return max(0.0, min(policy.wait_for(state.attempt_number, exc), remaining))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            with self._lock:
                self.stats.retries += 1

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, KubeError) and e.retryable),
            stop=tenacity.stop_after_attempt(max(1, policy.attempts)) | tenacity.stop_after_delay(policy.deadline),
            wait=wait, sleep=self._sleep, before_sleep=before_sleep, reraise=True)
        return retrying(self._request_once, method, path, query=query, body=body,
                        content_type=content_type, what=what)

    # -- resource mapping ----------------------------------------------------------------------

    def _discover(self, api_version: str) -> dict[str, Resource]:
        group = api_version.rpartition("/")[0]
        path = f"/apis/{api_version}" if group else f"/api/{api_version}"
        try:
            _, body = self.request("GET", path, what=f"discovery of {api_version}")
        except NotFound:
            return {}
        found: dict[str, Resource] = {}
        for item in (body or {}).get("resources", []):
            name = item.get("name", "")
            if "/" in name:  # subresources: deployments/status, deployments/scale
                continue
            found[item["kind"]] = Resource(api_version, item["kind"], name, bool(item.get("namespaced")))
        return found

    def _rediscover(self, api_version: str) -> dict[str, Resource]:
        """Ask discovery afresh and cache the answer."""
        fresh = self._discover(api_version)
        with self._lock:
            self._resources[api_version] = fresh
        return fresh

    def resource(self, api_version: str, kind: str) -> Resource:
        """Map apiVersion + kind to the server's resource, asking discovery once per group-version
        (and once more on a miss, so custom resources installed meanwhile are found)."""
        with self._lock:
            cached = self._resources.get(api_version)
        if cached is None or kind not in cached:
            cached = self._rediscover(api_version)
        try:
            return cached[kind]
        except KeyError:
            raise NoKindMatch(f"the server does not serve kind {kind} in {api_version}", status=404,
                              reason="NoKindMatch",
                              fix=f"check apiVersion/kind, or install the CustomResourceDefinition for {kind}") from None

    def wait_for_kind(self, api_version: str, kind: str, timeout: float) -> bool:
        """Whether the server serves `kind` in `api_version`, asking discovery until `timeout`: the API server
        marks a CustomResourceDefinition Established before its discovery document lists the kind, so a
        custom resource applied right after its CRD can meet NoKindMatch (controller-runtime's envtest and
        Flux's kustomize-controller wait the same way)."""
        deadline = time.monotonic() + timeout
        while True:
            if kind in self._rediscover(api_version):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _path_for(self, ref: ObjectRef) -> str:
        res = self.resource(ref.api_version, ref.kind)
        if res.namespaced and not ref.namespace:
            raise KubeError(f"{ref} is namespaced but has no metadata.namespace", status=None, reason="NoNamespace",
                            fix="set metadata.namespace on the object (the renderer sets the environment namespace)")
        return res.path(ref.namespace if res.namespaced else None, ref.name)

    # -- verbs ---------------------------------------------------------------------------------

    def get(self, ref: ObjectRef) -> dict | None:
        """The live object, or None when it does not exist."""
        try:
            _, body = self.request("GET", self._path_for(ref), what=f"get {ref}")
        except NotFound:
            return None
        return body

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, *, page_size: int = 500) -> list[dict]:
        """Every object of a kind (in a namespace, or cluster-wide), optionally filtered by labels.
        Items get their apiVersion/kind filled in (list responses omit them)."""
        res = self.resource(api_version, kind)
        path = res.path(namespace if res.namespaced else None)
        items: list[dict] = []
        token: str | None = None
        while True:
            query = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            _, body = self.request("GET", path, query=query, what=f"list {kind} in {namespace or 'all namespaces'}")
            for item in (body or {}).get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            token = ((body or {}).get("metadata") or {}).get("continue")
            if not token:
                return items

    def apply(self, obj: dict, field_manager: str = labels.MANAGER, force: bool = True,
              dry_run: bool = False) -> dict:
        """Server-side apply ``obj`` as ``field_manager``; returns the object the server stored (or,
        with dry_run, would store). ``force`` takes ownership of fields another manager holds."""
        ref = ObjectRef.of(obj)
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        body = {k: v for k, v in obj.items() if k != "status"}
        _, result = self.request("PATCH", self._path_for(ref), query=query, body=body,
                                 content_type=CONTENT_TYPES["apply"],
                                 what=f"{'dry-run ' if dry_run else ''}apply {ref}")
        return result

    def patch(self, ref: ObjectRef, patch: dict | list, type: PatchType = "merge",
              field_manager: str | None = labels.MANAGER, dry_run: bool = False) -> dict:
        """Patch a live object (merge, JSON-patch or strategic-merge)."""
        if type not in ("merge", "json", "strategic"):
            raise ValueError(f"unknown patch type {type!r}: use merge, json or strategic")
        if type == "json" and not isinstance(patch, list):
            raise ValueError("a JSON patch is a list of operations")
        query = [("fieldManager", field_manager)] if field_manager else []
        if dry_run:
            query.append(("dryRun", "All"))
        _, result = self.request("PATCH", self._path_for(ref), query=query, body=patch,
                                 content_type=CONTENT_TYPES[type], what=f"{type}-patch {ref}")
        return result

    def create(self, obj: dict, field_manager: str = labels.MANAGER) -> dict:
        """POST a new object; 409 AlreadyExists is raised as KubeError(status=409)."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        path = res.path(ref.namespace if res.namespaced else None)
        _, result = self.request("POST", path, query=[("fieldManager", field_manager)], body=obj,
                                 what=f"create {ref}")
        return result

    def replace(self, obj: dict, field_manager: str = labels.MANAGER) -> dict:
        """PUT an object. With metadata.resourceVersion set this is optimistic concurrency: a stale
        version is raised as KubeError(status=409) and not retried."""
        ref = ObjectRef.of(obj)
        _, result = self.request("PUT", self._path_for(ref), query=[("fieldManager", field_manager)], body=obj,
                                 what=f"replace {ref}")
        return result

    def delete(self, ref: ObjectRef, propagation_policy: str = "Background", dry_run: bool = False) -> bool:
        """Delete an object. True if it was deleted, False if it was already gone."""
        query = [("propagationPolicy", propagation_policy)]
        if dry_run:
            query.append(("dryRun", "All"))
        try:
            self.request("DELETE", self._path_for(ref), query=query, what=f"delete {ref}")
        except NotFound:
            return False
        return True


def _urllib3_timeout(timeout: float | tuple[float, float] | None) -> Any:
    """The client's timeout convention: one number is the total, a pair is (connect, read)."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout) if timeout else None


def kubeconfig_location() -> str:
    """Where a kubeconfig is looked for when none is given: $KUBECONFIG, else ~/.kube/config."""

    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def _default_kubeconfig_exists() -> bool:
    env = os.environ.get("KUBECONFIG")
    if env:
        return any(Path(p).expanduser().exists() for p in env.split(os.pathsep) if p)
    return Path("~/.kube/config").expanduser().exists()


if TYPE_CHECKING:
    def _satisfies_cluster(client: KubeClient) -> Cluster:  # mypy checks the seam; never called
        return client
