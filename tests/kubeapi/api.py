"""Request dispatch: discovery, the read verbs (get, list, watch) and the write verbs.

Simplified compared to the real apiserver: ``limit``/``continue`` pagination uses an opaque
(non-expiring) token; list items of built-in types omit apiVersion/kind as the real server does,
custom resources keep them; watches support ``resourceVersion`` (unset or "0" = synthetic ADDED
events for the current state first), label/field selectors evaluated on the event's object,
``timeoutSeconds`` (default 1800) and no bookmarks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

from tests.kubeapi import discovery
from tests.kubeapi.errors import ApiError, bad_request, not_found
from tests.kubeapi.registry import Registry, ResourceType
from tests.kubeapi.routing import Request, Response, Target, not_served, parse_target
from tests.kubeapi.selectors import Predicate, field_selector, label_selector
from tests.kubeapi.store import Store, WatchEvent
from tests.kubeapi.writes import Writer, render

WATCH_POLL_SECONDS = 0.5


def _verb_for(req: Request, target: Target | None) -> str:
    """The audit-style verb of a request (see :class:`tests.kubeapi.instrumentation.Stats`)."""
    if target is None:
        return "discovery"
    if req.method == "GET":
        if target.name:
            return "get"
        return "watch" if req.flag("watch") else "list"
    if req.method == "DELETE":
        return "delete" if target.name else "deletecollection"
    if req.is_apply:
        return "apply"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(req.method, "unknown")


class ApiHandler:
    """Turns a :class:`Request` into a :class:`Response` against one store."""

    def __init__(self, registry: Registry, store: Store, writer: Writer,
                 stopping: threading.Event) -> None:
        self.registry, self.store, self.writer, self.stopping = registry, store, writer, stopping

    def resolve(self, req: Request) -> Target | None:
        """The resource target of a request, or None for discovery/version paths."""
        parts = [p for p in req.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) > 2:
            return parse_target(self.registry, "", parts[1], parts[2:])
        if parts[:1] == ["apis"] and len(parts) > 3:
            return parse_target(self.registry, parts[1], parts[2], parts[3:])
        return None

    def verb(self, req: Request) -> tuple[str, str]:
        """(verb, resource) for accounting; unroutable requests count as ("unknown", "")."""
        try:
            target = self.resolve(req)
        except ApiError:
            return "unknown", ""
        resource = ""
        if target is not None:
            resource = target.rtype.plural + (f"/{target.subresource}" if target.subresource
                                              else "")
        return _verb_for(req, target), resource

    def handle(self, req: Request, server_address: str) -> Response:
        try:
            target = self.resolve(req)
            if target is None:
                return self._discovery(req, server_address)
            return self._resource(req, target)
        except ApiError as err:
            return Response.error(err)

    def _discovery(self, req: Request, server_address: str) -> Response:
        if req.method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        parts = [p for p in req.path.split("/") if p]
        doc: dict | None = None
        if parts == ["version"]:
            doc = dict(discovery.VERSION_INFO)
        elif parts == ["api"]:
            doc = discovery.api_versions(server_address)
        elif parts == ["apis"]:
            doc = discovery.api_group_list(self.registry)
        elif len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list(self.registry, "", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(self.registry, parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(self.registry, parts[1], parts[2])
        if doc is None:
            raise not_served()
        return Response(200, doc)

    def _resource(self, req: Request, t: Target) -> Response:
        verb = _verb_for(req, t)
        if verb == "watch":
            return self._watch(req, t)
        with self.store.lock:
            if verb == "get":
                if t.subresource == "scale":
                    return self.writer.scale(t)
                obj = self.store.get(t.rtype.group_resource, t.namespace, t.name)
                if obj is None:
                    raise not_found(t.rtype, t.name)
                return Response(200, render(obj, t.rtype))
            if verb == "list":
                return self._list(req, t)
            if t.subresource and verb in ("create", "delete"):
                raise ApiError(405, "the server does not allow this method on the requested "
                                    "resource")
            if verb == "create":
                if t.name:
                    raise ApiError(405, "the server does not allow this method on the requested "
                                        "resource")
                return self.writer.create(t, req)
            if verb in ("update", "patch", "apply"):
                if not t.name:
                    raise ApiError(405, "the server does not allow this method on the requested "
                                        "resource")
                return (self.writer.update if verb == "update" else self.writer.patch)(t, req)
            if verb == "delete":
                return self.writer.delete(t, req)
            if verb == "deletecollection":
                return self.writer.delete_collection(t, req, self._matcher(req))
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _matcher(req: Request) -> Predicate:
        labels = label_selector(req.query.get("labelSelector"))
        fields = field_selector(req.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    @staticmethod
    def _list_item(obj: dict, rtype: ResourceType) -> dict:
        if rtype.builtin:
            return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return render(obj, rtype)

    def _list(self, req: Request, t: Target) -> Response:
        rtype, matches = t.rtype, self._matcher(req)
        objects = [o for o in self.store.list(rtype.group_resource, t.namespace or None)
                   if matches(o)]
        meta: dict = {"resourceVersion": str(self.store.resource_version)}
        token = req.query.get("continue")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token)))
            except ValueError as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
            objects = [o for o in objects if (o["metadata"].get("namespace", ""),
                                              o["metadata"]["name"]) > after]
        limit = int(req.query.get("limit") or 0)
        if limit and len(objects) > limit:
            last = objects[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                [last.get("namespace", ""), last["name"]]).encode()).decode()
            meta["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        return Response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                              "metadata": meta,
                              "items": [self._list_item(o, rtype) for o in objects]})

    def _watch(self, req: Request, t: Target) -> Response:
        matches = self._matcher(req)
        timeout = float(req.query.get("timeoutSeconds") or 1800)
        raw_rv = req.query.get("resourceVersion") or "0"
        try:
            since = int(raw_rv)
        except ValueError as exc:
            raise bad_request(f'resourceVersion: Invalid value: "{raw_rv}"') from exc
        with self.store.lock:
            initial: list[dict] = []
            if since == 0:
                since = self.store.resource_version
                initial = [o for o in self.store.list(t.rtype.group_resource, t.namespace or None)
                           if matches(o)]
            pending = self.store.events_after(since)
        return Response(200, headers=[("Content-Type", "application/json")],
                        stream=self._events(t, matches, since, initial, pending,
                                            time.monotonic() + timeout))

    @staticmethod
    def _line(event_type: str, obj: dict) -> bytes:
        return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"

    def _events(self, t: Target, matches: Predicate, since: int, initial: list[dict],
                pending: list[WatchEvent] | None, deadline: float) -> Iterator[bytes]:
        for obj in initial:
            yield self._line("ADDED", render(obj, t.rtype))
        while not self.stopping.is_set():
            if pending is None:
                status = ApiError(410, f"too old resource version: {since} "
                                       f"({self.store.resource_version})", reason="Expired")
                yield self._line("ERROR", status.to_status())
                return
            for event in pending:
                since = event.resource_version
                if (event.group_resource == t.rtype.group_resource
                        and (not t.namespace or event.namespace == t.namespace)
                        and matches(event.obj)):
                    yield self._line(event.type, render(event.obj, t.rtype))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with self.store.changed:
                pending = self.store.events_after(since)
                if pending == []:
                    self.store.changed.wait(min(remaining, WATCH_POLL_SECONDS))
                    pending = self.store.events_after(since)
