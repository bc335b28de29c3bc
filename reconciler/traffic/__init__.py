"""Canary traffic routers: one registry (``base.ROUTERS``), one module per router.

Importing this package registers the built-in routers (Gateway API, Istio, replicas), so the specs,
the rollout state and the controller all read one complete table.
"""

from reconciler.traffic import gateway_api, istio, replicas
from reconciler.traffic.base import (ROUTERS, Backends, Capabilities, Change, NoOptions, Router, RouterKind, Traffic,
                                     names, register, router_for, router_kind, with_capability)
from reconciler.traffic.gateway_api import GatewayAPIRouter
from reconciler.traffic.istio import IstioRouter
from reconciler.traffic.replicas import ReplicaRouter

__all__ = ["ROUTERS", "Backends", "Capabilities", "Change", "GatewayAPIRouter", "IstioRouter", "NoOptions",
           "ReplicaRouter", "Router", "RouterKind", "Traffic", "gateway_api", "istio", "names", "register",
           "replicas", "router_for", "router_kind", "with_capability"]
