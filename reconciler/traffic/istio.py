"""The Istio router: a VirtualService for the host ``<model>.<ns>.svc.cluster.local`` (and
``<model>.<ns>.<domain>`` with ``canary.routeDomain``) with weighted destinations; header match (A/B) and
mirror + mirrorPercentage (shadow traffic).

Options (``canary.routerOptions``): ``gateways`` (the Istio Gateways the VirtualService binds to),
``apiVersion`` (default ``networking.istio.io/v1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reconciler.traffic.base import Backends, Change, RouterKind, Traffic, register, route_change, route_meta


class IstioOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    gateways: tuple[str, ...] = ()
    api_version: str = Field("networking.istio.io/v1", alias="apiVersion", pattern=r"^networking\.istio\.io/v1(beta1)?$")


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
        return {"apiVersion": self.api_version, "kind": "VirtualService", "metadata": route_meta(b, b.model), "spec": spec}

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        return route_change(self.virtualservice(backends, traffic), backends, traffic)


def _make(options: IstioOptions, domain: str | None) -> IstioRouter:
    return IstioRouter(api_version=options.api_version, gateways=options.gateways, domain=domain)


register(RouterKind("istio", weight_by="route", header_routing=True, mirroring=True, make=_make, options=IstioOptions))
