"""Resource types known to the stand-in: the built-ins it serves and registered custom resources.

Simplified compared to the real apiserver: one storage per (group, plural) shared by every served
version (no conversion beyond rewriting ``apiVersion``), and no OpenAPI schemas; the per-type
facts that matter for behaviour (scope, status subresource, known top-level fields) live here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


@dataclass(frozen=True)
class ResourceType:
    """One servable resource (group/version/plural) and the facts the handlers need about it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = False
    scale_subresource: bool = False
    builtin: bool = True
    # Whether metadata.generation is maintained (custom resources always have it).
    tracks_generation: bool = False
    # Top-level fields other than apiVersion/kind/metadata; None means "any" (custom resources).
    top_level_fields: frozenset[str] | None = None
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_generation(self) -> bool:
        return self.tracks_generation or not self.builtin

    @property
    def group_resource(self) -> tuple[str, str]:
        """Storage key: every served version of a resource shares one storage."""
        return (self.group, self.plural)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified_resource(self) -> str:
        """How NotFound/AlreadyExists/Conflict messages name the type: ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """How Invalid messages name the type: ``Deployment.apps``, ``ConfigMap``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def unknown_fields(self, obj: dict) -> list[str]:
        if self.top_level_fields is None:
            return []
        return sorted(k for k in obj if k not in _META_FIELDS and k not in self.top_level_fields)

    def discovery_entries(self) -> list[dict]:
        """APIResource entries for an APIResourceList (the resource and its subresources)."""
        entries = [{
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": list(ALL_VERBS),
            **({"shortNames": list(self.short_names)} if self.short_names else {}),
        }]
        if self.status_subresource:
            entries.append({"name": f"{self.plural}/status", "singularName": "",
                            "namespaced": self.namespaced, "kind": self.kind,
                            "verbs": ["get", "patch", "update"]})
        if self.scale_subresource:
            entries.append({"name": f"{self.plural}/scale", "singularName": "",
                            "namespaced": self.namespaced, "group": "autoscaling", "version": "v1",
                            "kind": "Scale", "verbs": ["get", "patch", "update"]})
        return entries


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


_SPEC_STATUS = _f("spec", "status")

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, status_subresource=True,
                 top_level_fields=_SPEC_STATUS, short_names=("ns",)),
    ResourceType("", "v1", "ConfigMap", "configmaps",
                 top_level_fields=_f("data", "binaryData", "immutable"), short_names=("cm",)),
    ResourceType("", "v1", "Secret", "secrets",
                 top_level_fields=_f("data", "stringData", "type", "immutable")),
    ResourceType("", "v1", "Service", "services", status_subresource=True,
                 top_level_fields=_SPEC_STATUS, short_names=("svc",)),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts",
                 top_level_fields=_f("secrets", "imagePullSecrets", "automountServiceAccountToken"),
                 short_names=("sa",)),
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims",
                 status_subresource=True, top_level_fields=_SPEC_STATUS, short_names=("pvc",)),
    ResourceType("", "v1", "Pod", "pods", status_subresource=True, top_level_fields=_SPEC_STATUS,
                 tracks_generation=True, short_names=("po",)),
    ResourceType("", "v1", "Event", "events", top_level_fields=_f(
        "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp",
        "count", "type", "eventTime", "series", "action", "related", "reportingComponent",
        "reportingInstance"), short_names=("ev",)),
    ResourceType("apps", "v1", "Deployment", "deployments", status_subresource=True,
                 scale_subresource=True, top_level_fields=_SPEC_STATUS, tracks_generation=True,
                 short_names=("deploy",)),
    ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                 status_subresource=True, top_level_fields=_SPEC_STATUS, tracks_generation=True,
                 short_names=("hpa",)),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets",
                 status_subresource=True, top_level_fields=_SPEC_STATUS, tracks_generation=True,
                 short_names=("pdb",)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", top_level_fields=_f("spec")),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", top_level_fields=_f("rules")),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings",
                 top_level_fields=_f("subjects", "roleRef")),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles",
                 namespaced=False, top_level_fields=_f("rules", "aggregationRule")),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                 namespaced=False, top_level_fields=_f("subjects", "roleRef")),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                 "customresourcedefinitions", namespaced=False, status_subresource=True,
                 top_level_fields=_SPEC_STATUS, tracks_generation=True, short_names=("crd", "crds")),
)

# (group, version, kind, plural, status subresource) for ``with_common_crds=True``; all
# namespaced, as upstream (Argo's Workflow CRD has no status subresource).
COMMON_CRDS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", True),
    ("networking.istio.io", "v1", "VirtualService", "virtualservices", True),
    ("networking.istio.io", "v1beta1", "VirtualService", "virtualservices", True),
    ("argoproj.io", "v1alpha1", "Workflow", "workflows", False),
)


@dataclass
class Registry:
    """Thread-safe lookup of served resource types by path and by apiVersion/kind."""

    _types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rtype: ResourceType) -> None:
        with self._lock:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def remove_group_resource(self, group: str, plural: str) -> None:
        with self._lock:
            for key in [k for k in self._types if k[0] == group and k[2] == plural]:
                del self._types[key]

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        with self._lock:
            for rtype in self._types.values():
                if rtype.group == group and rtype.version == version and rtype.kind == kind:
                    return rtype
        return None

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Served versions per group, in registration order (the first is the preferred one)."""
        out: dict[str, list[str]] = {}
        for rtype in self.all():
            versions = out.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.all() if t.group == group and t.version == version]
