"""The Gateway API router: an HTTPRoute ``<model>`` whose backendRefs weight the stable Service
``<model>-<pool>`` against the canary Service; header matches (A/B) and a RequestMirror filter (shadow
traffic). Every model's route has its own hostname, as KServe gives every service one:
``<model>.<namespace>.<domain>`` (``canary.routeDomain``; without it the in-cluster name
``<model>.<namespace>.svc.cluster.local``, the GAMMA convention), so two models on the shared Gateway
never claim the same (hostname, path) and precedence never sends one's traffic to another.

Options (``canary.routerOptions``): ``gateway`` (default ``models``), ``gatewayNamespace``, ``pathPrefix``,
``hostnames``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reconciler.traffic.base import Backends, Change, RouterKind, Traffic, register, route_change, route_meta


class GatewayAPIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    gateway: str = Field("models", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                         description="the Gateway the HTTPRoutes attach to")
    gateway_namespace: str | None = Field(None, alias="gatewayNamespace", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    path_prefix: str = Field("/", alias="pathPrefix", pattern=r"^/")
    hostnames: tuple[str, ...] = ()


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
                "metadata": route_meta(b, b.model), "spec": spec}

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        return route_change(self.httproute(backends, traffic), backends, traffic)


def _make(options: GatewayAPIOptions, domain: str | None) -> GatewayAPIRouter:
    return GatewayAPIRouter(gateway=options.gateway, gateway_namespace=options.gateway_namespace,
                            hostnames=options.hostnames, path_prefix=options.path_prefix, domain=domain)


register(RouterKind("gateway-api", weight_by="route", header_routing=True, mirroring=True, make=_make,
                    options=GatewayAPIOptions))
