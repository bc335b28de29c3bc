"""Traffic routers behind one interface: what to change so the canary gets ``canary_weight`` %.

Each router computes the desired route object purely (plain dicts); the controller hands them to
the sync with the rest of the environment (validated by a server-side dry run, owned by the inventory).

- ``GatewayAPIRouter``: an HTTPRoute ``<model>`` whose backendRefs weight the stable Service
  ``<model>-<pool>`` against the canary Service; header matches (A/B) and a RequestMirror filter
  (shadow traffic). Every model's route has its own hostname, as KServe gives every service one:
  ``<model>.<namespace>.<domain>`` (``canary.routeDomain``; without it the in-cluster name
  ``<model>.<namespace>.svc.cluster.local``, the GAMMA convention), so two models on the shared
  Gateway never claim the same (hostname, path) and precedence never sends one's traffic to another.
- ``IstioRouter``: a VirtualService for the host ``<model>.<ns>.svc.cluster.local`` (and
  ``<model>.<ns>.<domain>`` with ``canary.routeDomain``) with weighted destinations; header match
  (A/B) and mirror + mirrorPercentage (shadow traffic).
- ``ReplicaRouter``: no mesh. The model's Service ``<model>`` selects both tracks, so kube-proxy
  spreads requests by ready pods; the controller sizes the canary Deployment alone
  (``controller.canary_replicas``, never the stable's replicas, which an HPA may own) and reports
  the weight the ready pods achieve. Whole replicas make weights coarse, so the weight shown is the
  achieved one. No header routing, no mirroring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from reconciler import labels as L
from reconciler.errors import ReconcilerError
from reconciler.results import ObjectRef


@dataclass(frozen=True)
class Backends:
    """Where the stable and canary versions of one model run in one namespace."""

    model: str
    namespace: str
    environment: str
    stable_service: str          # e.g. iris-gpu-a10g
    canary_service: str          # e.g. iris-gpu-a10g-canary, or iris-inf2 across pools
    stable_deployment: str
    canary_deployment: str
    port: int = 80               # the Services' port (manifests.service exposes 80 -> http)
    total_replicas: int = 2      # the replica router splits this many replicas

    def fqdn(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.cluster.local"

    def hostnames(self, domain: str | None) -> list[str]:
        """The model's own hostname(s): ``<model>.<ns>.<domain>``, else its in-cluster name."""
        return [f"{self.model}.{self.namespace}.{domain}"] if domain else [self.fqdn(self.model)]

    @property
    def labels(self) -> dict[str, str]:
        return {L.MANAGED_BY: L.MANAGER, L.MODEL: self.model, L.ENVIRONMENT: self.environment}


@dataclass(frozen=True)
class Traffic:
    """How traffic should be split: weight, optional A/B header, optional shadow mirror."""

    canary_weight: int
    header: tuple[str, str] | None = None     # requests carrying this header/value always reach the canary
    mirror_percent: int | None = None         # copy this % of requests to the canary (responses dropped)

    def __post_init__(self) -> None:
        if not 0 <= self.canary_weight <= 100:
            raise ValueError(f"canary weight {self.canary_weight} is not a percentage")
        if self.mirror_percent is not None and not 0 <= self.mirror_percent <= 100:
            raise ValueError(f"mirror percent {self.mirror_percent} is not a percentage")


@dataclass(frozen=True)
class Change:
    """One object change: a server-side apply of a whole object, or a merge patch of a live one."""

    op: Literal["apply", "patch"]
    ref: ObjectRef
    body: dict[str, Any]
    note: str = ""


class Router(Protocol):
    name: str

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]: ...


def _meta(b: Backends, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": b.namespace, "labels": b.labels}


@dataclass(frozen=True)
class GatewayAPIRouter:
    gateway: str = "models"
    gateway_namespace: str | None = None
    hostnames: tuple[str, ...] = ()      # explicit hostnames; default: the model's own (Backends.hostnames)
    path_prefix: str = "/"
    domain: str | None = None
    name: str = "gateway-api"

    def httproute(self, b: Backends, t: Traffic) -> dict[str, Any]:
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.gateway}
        if self.gateway_namespace:
            parent["namespace"] = self.gateway_namespace
        canary_ref = {"name": b.canary_service, "port": b.port}
        rules: list[dict[str, Any]] = []
        if t.header is not None:
            rules.append({
                "matches": [{"path": {"type": "PathPrefix", "value": self.path_prefix},
                             "headers": [{"type": "Exact", "name": t.header[0], "value": t.header[1]}]}],
                "backendRefs": [{**canary_ref, "weight": 1}],
            })
        backends = [{"name": b.stable_service, "port": b.port, "weight": 100 - t.canary_weight}]
        if b.canary_service != b.stable_service:
            backends.append({**canary_ref, "weight": t.canary_weight})
        else:  # no canary: one backend, nothing points at a removed Service
            backends = [{"name": b.stable_service, "port": b.port, "weight": 100}]
        main: dict[str, Any] = {
            "matches": [{"path": {"type": "PathPrefix", "value": self.path_prefix}}],
            "backendRefs": backends,
        }
        if t.mirror_percent:
            main["filters"] = [{"type": "RequestMirror",
                                "requestMirror": {"backendRef": dict(canary_ref), "percent": t.mirror_percent}}]
        rules.append(main)
        spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules,
                                "hostnames": list(self.hostnames) or b.hostnames(self.domain)}
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": _meta(b, b.model), "spec": spec}

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        return _apply_route(self.httproute(backends, traffic), backends, traffic)


def _apply_route(route: dict[str, Any], backends: Backends, traffic: Traffic) -> list[Change]:
    """The one change of a route-object router (HTTPRoute, VirtualService): apply it, say the split."""
    return [Change("apply", ObjectRef.of(route), route,
                   f"{route['kind']} {backends.model}: {backends.stable_service} {100 - traffic.canary_weight}% / "
                   f"{backends.canary_service} {traffic.canary_weight}%")]


@dataclass(frozen=True)
class IstioRouter:
    api_version: str = "networking.istio.io/v1"
    gateways: tuple[str, ...] = ()
    domain: str | None = None
    name: str = "istio"

    def virtualservice(self, b: Backends, t: Traffic) -> dict[str, Any]:
        def dest(service: str) -> dict[str, Any]:
            return {"host": b.fqdn(service), "port": {"number": b.port}}

        http: list[dict[str, Any]] = []
        if t.header is not None:
            http.append({"name": "canary-header", "match": [{"headers": {t.header[0]: {"exact": t.header[1]}}}],
                         "route": [{"destination": dest(b.canary_service), "weight": 100}]})
        route = [{"destination": dest(b.stable_service), "weight": 100 - t.canary_weight},
                 {"destination": dest(b.canary_service), "weight": t.canary_weight}]
        if b.canary_service == b.stable_service:  # no canary: one destination
            route = [{"destination": dest(b.stable_service), "weight": 100}]
        main: dict[str, Any] = {"name": "primary", "route": route}
        if t.mirror_percent:
            main["mirror"] = dest(b.canary_service)
            main["mirrorPercentage"] = {"value": float(t.mirror_percent)}
        http.append(main)
        hosts = [b.fqdn(b.model)] + ([h for h in b.hostnames(self.domain) if h != b.fqdn(b.model)])
        spec: dict[str, Any] = {"hosts": hosts, "http": http}
        if self.gateways:
            spec["gateways"] = list(self.gateways)
        return {"apiVersion": self.api_version, "kind": "VirtualService", "metadata": _meta(b, b.model), "spec": spec}

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        return _apply_route(self.virtualservice(backends, traffic), backends, traffic)


@dataclass(frozen=True)
class ReplicaRouter:
    name: str = "replicas"

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        if traffic.header is not None or traffic.mirror_percent:
            raise ReconcilerError("the replica-ratio router cannot route by header or mirror traffic",
                                  fix="set canary.router to gateway-api or istio in the model or environment spec")
        return []  # no route object: the canary Deployment's size is the weight


def router_for(kind: str, **options: Any) -> Router:
    if kind == "replicas":
        options.pop("domain", None)
    if kind == "gateway-api":
        return GatewayAPIRouter(**options)
    if kind == "istio":
        return IstioRouter(**options)
    if kind == "replicas":
        return ReplicaRouter()
    raise ReconcilerError(f"unknown canary router {kind!r}", fix="use gateway-api, istio or replicas")
