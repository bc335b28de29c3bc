"""The router registry: every canary traffic router is one RouterKind entry that states what it can do.

As Argo Rollouts' TrafficRoutingReconciler (SetWeight, SetHeaderRoute, SetMirrorRoute, VerifyWeight),
a router declares its capabilities and the controller asks them; nobody compares router names.

- ``weight_by``: ``"route"`` (a route object splits requests by weight: Gateway API, Istio) or
  ``"replicas"`` (no route object: the canary Deployment's share of ready pods is the weight).
- ``header_routing``: requests carrying a header reach the canary (``canary.abHeader``).
- ``mirroring``: a share of requests is copied to the canary (``canary.mirrorPercent``).
- ``verify``: the router can tell the weight it really achieved (from ready pods, for the replica
  router); a router without it reports the weight it wrote once the canary has a ready pod.
- ``options``: the pydantic model of the router's ``canary.routerOptions`` (e.g. the Gateway's name),
  validated with the spec.

Adding a router is one module that builds its objects (plain dicts, pure) and calls ``register``;
``tests/test_traffic_registry.py`` adds a fake one that way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

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
    """A router for one policy: ``changes`` are the objects that give the canary ``traffic``."""

    @property
    def name(self) -> str: ...

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]: ...


class NoOptions(BaseModel):
    """A router without options: any key under canary.routerOptions is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class Capabilities:
    weight_by: Literal["route", "replicas"]
    header_routing: bool
    mirroring: bool
    verify_weight: bool


@dataclass(frozen=True)
class RouterKind:
    """One registered router: its name in specs, what it can do, its options and how to build it."""

    name: str
    weight_by: Literal["route", "replicas"]
    header_routing: bool
    mirroring: bool
    make: Callable[[Any, str | None], Router]          # (its options model, canary.routeDomain) -> Router
    options: type[BaseModel] = NoOptions
    verify: Callable[[int, int, int], float] | None = None  # (weight, stable ready, canary ready) -> achieved %

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.weight_by, self.header_routing, self.mirroring, self.verify is not None)

    def parse_options(self, options: Mapping[str, Any] | None) -> BaseModel:
        """The router's options from canary.routerOptions; ReconcilerError naming the field on a bad one."""
        try:
            return self.options.model_validate(dict(options or {}))
        except ValidationError as exc:
            problems = "; ".join(f"routerOptions.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ReconcilerError(f"canary router {self.name}: {problems}",
                                  fix=f"the {self.name} router takes {option_names(self) or 'no options'}") from None


ROUTERS: dict[str, RouterKind] = {}


def register(kind: RouterKind) -> RouterKind:
    """Add a router to the table (a later entry of the same name replaces the earlier one)."""
    ROUTERS[kind.name] = kind
    return kind


def option_names(kind: RouterKind) -> str:
    return ", ".join(field.alias or name for name, field in kind.options.model_fields.items())


def names() -> list[str]:
    return sorted(ROUTERS)


def with_capability(capability: str) -> list[str]:
    """The registered routers that can do ``capability`` (a Capabilities field that is true)."""
    return [name for name in names() if getattr(ROUTERS[name].capabilities, capability)]


def router_kind(name: str) -> RouterKind:
    kind = ROUTERS.get(name)
    if kind is None:
        raise ReconcilerError(f"unknown canary router {name!r}", fix=f"use one of: {', '.join(names())}")
    return kind


def router_for(name: str, options: Mapping[str, Any] | None = None, domain: str | None = None) -> Router:
    """The router ``name`` built from its options (canary.routerOptions) and the route domain."""
    kind = router_kind(name)
    return kind.make(kind.parse_options(options), domain)


def route_meta(b: Backends, name: str) -> dict[str, Any]:
    """The metadata of a route object a router writes for ``b``'s model."""
    return {"name": name, "namespace": b.namespace, "labels": b.labels}


def route_change(route: dict[str, Any], backends: Backends, traffic: Traffic) -> list[Change]:
    """The one change of a route-object router (HTTPRoute, VirtualService): apply it, say the split."""
    return [Change("apply", ObjectRef.of(route), route,
                   f"{route['kind']} {backends.model}: {backends.stable_service} {100 - traffic.canary_weight}% / "
                   f"{backends.canary_service} {traffic.canary_weight}%")]
