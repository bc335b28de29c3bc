"""The write verbs: create, update, patch, server-side apply, delete and deletecollection.

Every write goes through :meth:`Writer.persist`: server-owned metadata, status-subresource
rules, defaulting, validation, generation, managedFields, no-op detection, finalizers, the
Deployment rollout simulation, CRD registration and dry-run. Callers hold the store lock.

Simplified compared to the real apiserver: deletion is immediate unless the object has
finalizers (no graceful deletion of Pods); Background and Foreground propagation both delete
dependents (by ``ownerReferences`` uid) at once, Orphan leaves them untouched; deleting a
Namespace deletes its contents at once (no Terminating phase); client-sent
``metadata.managedFields`` are ignored.
"""

from __future__ import annotations

import random
import string
import uuid

from tests.kubeapi import ssa
from tests.kubeapi.defaults import apply_defaults
from tests.kubeapi.errors import ApiError, Cause, already_exists, bad_request, conflict, invalid, not_found
from tests.kubeapi.instrumentation import Stats
from tests.kubeapi.patch import json_merge_patch, json_patch, strategic_merge_patch
from tests.kubeapi.registry import Registry, ResourceType
from tests.kubeapi.rollout import RolloutPolicy, simulated_status, without_times
from tests.kubeapi.routing import Request, Response, Target, now
from tests.kubeapi.selectors import Predicate, selector_to_string
from tests.kubeapi.store import Store
from tests.kubeapi.validation import Validation
from tests.kubeapi.values import clone

NAMESPACES = ("", "namespaces")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
CONTROLLER_MANAGER = "kube-controller-manager"
_STALE = "the object has been modified; please apply your changes to the latest version and try again"


def render(obj: dict, rtype: ResourceType) -> dict:
    """A stored object as served at ``rtype``'s version (a shallow copy; stored dicts are never
    mutated in place)."""
    return {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _without_rv(obj: dict) -> dict:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def _success(rtype: ResourceType, obj: dict) -> dict:
    details = {"name": obj["metadata"]["name"], "kind": rtype.plural,
               "uid": obj["metadata"].get("uid", "")}
    if rtype.group:
        details["group"] = rtype.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def _crd_types(crd: dict) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [ResourceType(spec["group"], v["name"], names["kind"], names["plural"],
                         namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                         status_subresource="status" in (v.get("subresources") or {}),
                         scale_subresource="scale" in (v.get("subresources") or {}),
                         builtin=False, short_names=tuple(names.get("shortNames") or ()))
            for v in spec.get("versions") or [] if v.get("served", True)]


def _crd_causes(crd: dict) -> list[Cause]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = [Cause(f"spec.{key}", "Required value", "FieldValueRequired")
              for key, value in (("group", spec.get("group")), ("names.plural", names.get("plural")),
                                 ("names.kind", names.get("kind")),
                                 ("versions", spec.get("versions"))) if not value]
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not causes and crd["metadata"].get("name") != expected:
        causes.append(Cause("metadata.name", f'Invalid value: "{crd["metadata"].get("name")}": '
                                             f'must be spec.names.plural+"."+spec.group'))
    return causes


class Writer:
    """Implements the write verbs against a :class:`Store` (callers hold ``store.lock``)."""

    def __init__(self, registry: Registry, store: Store, validation: Validation,
                 rollout: RolloutPolicy, stats: Stats) -> None:
        self.registry, self.store, self.validation = registry, store, validation
        self.rollout, self.stats = rollout, stats

    # -- shared pipeline -------------------------------------------------------------------

    def persist(self, rtype: ResourceType, old: dict | None, new: dict, manager: str,
                subresource: str = "", dry_run: bool = False,
                entries: list[ssa.ManagedEntry] | None = None) -> dict:
        """Complete, validate and store one write; returns the resulting stored object.

        ``entries`` are the managedFields computed by an apply; None means an Update operation
        by ``manager`` (it takes ownership of the fields it changed).
        """
        stamp = now()
        meta = new.setdefault("metadata", {})
        if old is not None:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "generation", "name", "namespace",
                        "deletionTimestamp", "deletionGracePeriodSeconds"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = stamp
            if rtype.has_generation:
                meta["generation"] = 1
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        self._status_rules(rtype, old, new, subresource)
        apply_defaults(rtype, new, old)
        causes = self.validation.validate(rtype, new, old)
        if (rtype.group, rtype.plural) == CRDS:
            causes += _crd_causes(new)
        if causes:
            raise invalid(rtype, meta.get("name", ""), causes)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        if old is not None and rtype.has_generation and _spec_part(new) != _spec_part(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        old_entries = [ssa.ManagedEntry.from_dict(e)
                       for e in (old or {}).get("metadata", {}).get("managedFields") or []]
        if entries is None:
            entries = ssa.record_update(old, new, old_entries, manager, rtype.api_version,
                                        stamp, rtype.builtin, subresource)
        if entries:
            meta["managedFields"] = [e.to_dict() for e in entries]
        if old is not None and _without_rv(new) == _without_rv(old):
            return old
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if dry_run:
                return new
            return self._remove(rtype, new, "Background")
        generation_changed = old is None or meta.get("generation") != old["metadata"].get(
            "generation")
        if (rtype.group, rtype.kind) == ("apps", "Deployment") and generation_changed:
            self._simulate_rollout(new, stamp)
        if (rtype.group, rtype.plural) == CRDS:
            self._establish_crd(new, stamp, dry_run)
        if dry_run:
            if old is not None:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        self.stats.record_persisted()
        return self.store.put(rtype.group_resource, new)

    @staticmethod
    def _status_rules(rtype: ResourceType, old: dict | None, new: dict, subresource: str) -> None:
        """With a status subresource, the main resource ignores status and vice versa."""
        if not rtype.status_subresource:
            return
        if subresource == "status" and old is not None:
            status = new.get("status")
            new.clear()
            new.update(clone(old))
            new.pop("status", None)
            if status is not None:
                new["status"] = status
        elif old is not None and "status" in old:
            new["status"] = clone(old["status"])
        else:
            new.pop("status", None)

    def _simulate_rollout(self, deployment: dict, stamp: str) -> None:
        if not self.rollout.enabled:
            return
        meta = deployment["metadata"]
        mode = self.rollout.mode_for(meta.get("namespace", ""), meta["name"])
        before = {"status": deployment.get("status")} if "status" in deployment else {}
        deployment["status"] = simulated_status(deployment, mode, stamp)
        entries = [ssa.ManagedEntry.from_dict(e) for e in meta.get("managedFields") or []]
        entries = ssa.record_update(before, {"status": deployment["status"]}, entries,
                                    CONTROLLER_MANAGER, "apps/v1", stamp, True, "status")
        meta["managedFields"] = [e.to_dict() for e in entries]

    def resimulate(self, rtype: ResourceType, namespace: str | None, name: str | None) -> None:
        """Re-run the rollout simulation for existing Deployments (after a mode change)."""
        for obj in self.store.list(rtype.group_resource, namespace):
            if name is None or obj["metadata"]["name"] == name:
                new = clone(obj)
                self._simulate_rollout(new, now())
                if without_times(new.get("status")) != without_times(obj.get("status")):
                    self.stats.record_persisted()
                    self.store.put(rtype.group_resource, new)

    def _establish_crd(self, crd: dict, stamp: str, dry_run: bool) -> None:
        spec = crd["spec"]
        versions = spec.get("versions") or []
        storage = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"])
        crd["status"] = {
            "acceptedNames": clone(spec.get("names") or {}), "storedVersions": [storage],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp}]}
        if not dry_run:
            for rtype in _crd_types(crd):
                self.registry.add(rtype)

    def _namespace_must_exist(self, rtype: ResourceType, namespace: str) -> None:
        if rtype.namespaced and self.store.get(NAMESPACES, "", namespace) is None:
            raise ApiError(404, f'namespaces "{namespace}" not found',
                           details={"name": namespace, "kind": "namespaces"})

    def _check_body(self, t: Target, req: Request, body: dict, applying: bool) -> list[str]:
        """apiVersion/kind/name/namespace consistency and unknown fields; returns warnings."""
        rtype = t.rtype
        if body.get("apiVersion") and body.get("kind") and (
                body["apiVersion"] != rtype.api_version or body["kind"] != rtype.kind):
            raise bad_request(f"the API version in the data ({body['apiVersion']}) does not "
                              f"match the expected API version ({rtype.api_version})"
                              if body["apiVersion"] != rtype.api_version else
                              f"the kind in the data ({body['kind']}) does not match the "
                              f"expected kind ({rtype.kind})")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        meta = meta or {}
        if t.name and meta.get("name") and meta["name"] != t.name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name "
                              f"on the URL ({t.name})")
        if t.namespace and meta.get("namespace") and meta["namespace"] != t.namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        unknown = rtype.unknown_fields(body) if not t.subresource else []
        if not unknown:
            return []
        mode = req.query.get("fieldValidation", "Warn")
        if mode == "Strict":
            if applying:
                raise bad_request(", ".join(f".{k}: field not declared in schema"
                                            for k in unknown))
            raise bad_request("strict decoding error: " + ", ".join(
                f'unknown field "{k}"' for k in unknown))
        for key in unknown:
            body.pop(key)
        return [] if mode == "Ignore" else [f'unknown field "{k}"' for k in unknown]

    @staticmethod
    def _manager(req: Request) -> str:
        manager = req.query.get("fieldManager")
        if manager is None:
            return (req.headers.get("User-Agent") or "unknown").split("/")[0]
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: must have at most 128 bytes")
        return manager

    @staticmethod
    def _respond(code: int, obj: dict, rtype: ResourceType, warnings: list[str]) -> Response:
        escaped = (w.replace('"', '\\"') for w in warnings)
        headers = [("Warning", f'299 - "{w}"') for w in escaped]
        return Response(code, render(obj, rtype), headers)

    def _existing(self, t: Target) -> dict:
        obj = self.store.get(t.rtype.group_resource, t.namespace, t.name)
        if obj is None:
            raise not_found(t.rtype, t.name)
        return obj

    # -- verbs ------------------------------------------------------------------------------

    def create(self, t: Target, req: Request) -> Response:
        rtype, body = t.rtype, req.object_body()
        warnings = self._check_body(t, req, body, applying=False)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5))
        if rtype.namespaced:
            meta["namespace"] = t.namespace
            self._namespace_must_exist(rtype, t.namespace)
        else:
            meta.pop("namespace", None)
        name = meta.get("name", "")
        if name and self.store.get(rtype.group_resource, t.namespace, name) is not None:
            raise already_exists(rtype, name)
        obj = self.persist(rtype, None, body, self._manager(req), dry_run=req.dry_run)
        return self._respond(201, obj, rtype, warnings)

    def update(self, t: Target, req: Request) -> Response:
        rtype, body = t.rtype, req.object_body()
        old = self._existing(t)
        if t.subresource == "scale":
            return self._write_scale(t, req, old, body)
        warnings = self._check_body(t, req, body, applying=False)
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rtype, t.name, _STALE)
        obj = self.persist(rtype, old, body, self._manager(req), t.subresource, req.dry_run)
        return self._respond(200, obj, rtype, warnings)

    def patch(self, t: Target, req: Request) -> Response:
        if req.is_apply:
            return self._apply(t, req)
        if req.flag("force"):
            raise bad_request("force: Invalid value: true: may not be specified for non-apply "
                              "patch")
        rtype = t.rtype
        old = self._existing(t)
        current = clone(self._scale_view(rtype, old) if t.subresource == "scale"
                                else render(old, rtype))
        patch_body = req.json_body()
        content_type = req.content_type
        if content_type == "application/json-patch+json":
            patched = json_patch(current, patch_body)
        elif content_type == "application/merge-patch+json":
            patched = json_merge_patch(current, patch_body)
        elif content_type == "application/strategic-merge-patch+json" and rtype.builtin:
            patched = strategic_merge_patch(current, patch_body)
        else:
            raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                                f"media types include: application/json-patch+json, "
                                f"application/merge-patch+json, application/apply-patch+yaml"
                                f"{', application/strategic-merge-patch+json' if rtype.builtin else ''}")
        if not isinstance(patched, dict):
            raise bad_request("the patch produced a non-object")
        if t.subresource == "scale":
            return self._write_scale(t, req, old, patched)
        sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rtype, t.name, _STALE)
        warnings = self._check_body(t, req, patched, applying=False)
        obj = self.persist(rtype, old, patched, self._manager(req), t.subresource, req.dry_run)
        return self._respond(200, obj, rtype, warnings)

    def _apply(self, t: Target, req: Request) -> Response:
        rtype = t.rtype
        manager = req.query.get("fieldManager")
        if not manager:
            raise bad_request("PATCH /apply requires fieldManager: fieldManager is required for "
                              "apply requests")
        if t.subresource:
            raise bad_request(f"server-side apply to the {t.subresource} subresource is not "
                              f"supported by this stand-in")
        applied = req.object_body()
        warnings = self._check_body(t, req, applied, applying=True)
        missing = [Cause(key, "Required value", "FieldValueRequired")
                   for key in ("apiVersion", "kind") if not applied.get(key)]
        if missing:
            raise invalid(rtype, t.name, missing)
        meta = applied.setdefault("metadata", {})
        meta["name"] = t.name
        if rtype.namespaced:
            meta["namespace"] = t.namespace
        if rtype.status_subresource:
            applied.pop("status", None)
        old = self.store.get(rtype.group_resource, t.namespace, t.name)
        if old is None:
            self._namespace_must_exist(rtype, t.namespace)
            live = {"apiVersion": rtype.api_version, "kind": rtype.kind,
                    "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace")}}
            entries: list[ssa.ManagedEntry] = []
        else:
            live = render(old, rtype)  # ssa.apply works on a copy
            entries = [ssa.ManagedEntry.from_dict(e)
                       for e in old["metadata"].get("managedFields") or []]
        try:
            merged, entries = ssa.apply(live, applied, entries, manager, req.flag("force"),
                                        rtype.api_version, now(), rtype.builtin)
        except ssa.ApplyConflict as exc:
            details = {"name": t.name, "kind": rtype.plural, "causes": exc.causes()}
            if rtype.group:
                details["group"] = rtype.group
            raise ApiError(409, exc.message(), details=details) from exc
        obj = self.persist(rtype, old, merged, manager, dry_run=req.dry_run, entries=entries)
        return self._respond(201 if old is None else 200, obj, rtype, warnings)

    # -- scale subresource ------------------------------------------------------------------

    @staticmethod
    def _scale_view(rtype: ResourceType, obj: dict) -> dict:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        selector = selector_to_string((spec.get("selector") or {}).get("matchLabels") or {})
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp") if k in meta},
                "spec": {"replicas": spec.get("replicas", 1)},
                "status": {"replicas": status.get("replicas", 0), "selector": selector}}

    def scale(self, t: Target) -> Response:
        return Response(200, self._scale_view(t.rtype, self._existing(t)))

    def _write_scale(self, t: Target, req: Request, old: dict, scale: dict) -> Response:
        sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(t.rtype, t.name, _STALE)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(t.rtype, t.name, [Cause("spec.replicas", f"Invalid value: {replicas}: "
                                                                   f"must be greater than or "
                                                                   f"equal to 0")])
        new = clone(old)
        new.setdefault("spec", {})["replicas"] = replicas
        obj = self.persist(t.rtype, old, new, self._manager(req), "scale", req.dry_run)
        return Response(200, self._scale_view(t.rtype, obj))

    # -- deletion ---------------------------------------------------------------------------

    def _remove(self, rtype: ResourceType, obj: dict, propagation: str) -> dict:
        """Delete ``obj`` now, with its dependents (and a Namespace's contents or a CRD's CRs)."""
        meta = obj["metadata"]
        removed = self.store.delete(rtype.group_resource, meta.get("namespace", ""), meta["name"])
        self.stats.record_persisted()
        if rtype.group_resource == NAMESPACES:
            for gr in self.store.group_resources():
                for child in self.store.list(gr, meta["name"]):
                    self.store.delete(gr, meta["name"], child["metadata"]["name"])
                    self.stats.record_persisted()
        if rtype.group_resource == CRDS:
            spec = obj["spec"]
            gr = (spec["group"], spec["names"]["plural"])
            for child in self.store.list(gr):
                self.store.delete(gr, child["metadata"].get("namespace", ""),
                                  child["metadata"]["name"])
            self.registry.remove_group_resource(*gr)
        if propagation != "Orphan":
            self._delete_dependents(meta.get("uid", ""), propagation)
        return removed or obj

    def _delete_dependents(self, uid: str, propagation: str) -> None:
        for gr in self.store.group_resources():
            rtype = next((r for r in self.registry.all() if r.group_resource == gr), None)
            for child in self.store.list(gr):
                refs = child["metadata"].get("ownerReferences") or []
                if rtype is not None and any(r.get("uid") == uid for r in refs):
                    self._delete_one(rtype, child, propagation, dry_run=False)

    def _delete_one(self, rtype: ResourceType, obj: dict, propagation: str,
                    dry_run: bool) -> tuple[dict, bool]:
        """Delete or mark for deletion; returns (object, still present because of finalizers)."""
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj, True
            new = clone(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if dry_run:
                return new, True
            self.stats.record_persisted()
            return self.store.put(rtype.group_resource, new), True
        if dry_run:
            return obj, False
        return self._remove(rtype, obj, propagation), False

    def delete(self, t: Target, req: Request) -> Response:
        obj = self._existing(t)
        options = req.object_body() if req.body.strip() else {}
        preconditions = options.get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            expected = preconditions.get(key)
            if expected and expected != obj["metadata"].get(key):
                raise conflict(t.rtype, t.name, f"Precondition failed: {label} in precondition: "
                                                f"{expected}, {label} in object meta: "
                                                f"{obj['metadata'].get(key)}")
        propagation = req.query.get("propagationPolicy") or options.get(
            "propagationPolicy") or "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f'propagationPolicy: Unsupported value: "{propagation}"')
        dry_run = req.dry_run or "All" in (options.get("dryRun") or [])
        result, pending = self._delete_one(t.rtype, obj, propagation, dry_run)
        if pending:
            return Response(200, render(result, t.rtype))
        return Response(200, _success(t.rtype, result))

    def delete_collection(self, t: Target, req: Request, matches: Predicate) -> Response:
        rtype = t.rtype
        deleted = []
        for obj in self.store.list(rtype.group_resource, t.namespace or None):
            if matches(obj):
                result, _ = self._delete_one(rtype, obj, req.query.get(
                    "propagationPolicy", "Background"), req.dry_run)
                deleted.append(render(result, rtype))
        return Response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                              "metadata": {"resourceVersion": str(self.store.resource_version)},
                              "items": deleted})
