"""Parsed requests and responses, and the mapping of REST paths to resource targets."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import yaml

from tests.kubeapi.errors import ApiError, bad_request
from tests.kubeapi.registry import Registry, ResourceType

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


def now() -> str:
    """A timestamp in the apiserver's RFC 3339 seconds format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    """One HTTP request, decoupled from the transport."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()

    @property
    def is_apply(self) -> bool:
        return self.method == "PATCH" and self.content_type == APPLY_CONTENT_TYPE

    @property
    def dry_run(self) -> bool:
        value = self.query.get("dryRun")
        if value is None:
            return False
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return True

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def json_body(self) -> object:
        if not self.body.strip():
            raise bad_request("the request body is empty")
        try:
            return json.loads(self.body)
        except ValueError as exc:
            if "yaml" not in self.content_type:
                raise bad_request(f"the request body is not valid JSON: {exc}") from exc
        try:
            # via JSON, so that YAML timestamps etc. become the strings JSON would carry
            return json.loads(json.dumps(yaml.safe_load(self.body), default=str))
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML: {exc}") from exc

    def object_body(self) -> dict:
        body = self.json_body()
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body


@dataclass
class Response:
    """Status code plus either a JSON body or a stream of newline-delimited JSON chunks."""

    status: int
    body: dict | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterator[bytes] | None = None

    @classmethod
    def error(cls, err: ApiError) -> Response:
        return cls(err.code, err.to_status(), list(err.headers.items()))


@dataclass(frozen=True)
class Target:
    """The resource a REST path addresses (``name`` empty for collections)."""

    rtype: ResourceType
    namespace: str = ""
    name: str = ""
    subresource: str = ""


def not_served() -> ApiError:
    return ApiError(404, "the server could not find the requested resource")


def parse_target(registry: Registry, group: str, version: str, rest: list[str]) -> Target:
    """Resolve ``[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`` under a group-version."""
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        candidate = registry.by_path(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise not_served()
    rtype = registry.by_path(group, version, rest[0])
    if rtype is None:
        raise not_served()
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if (rtype.namespaced and name and not namespace) or (namespace and not rtype.namespaced):
        raise not_served()
    if subresource and not ((subresource == "status" and rtype.status_subresource)
                            or (subresource == "scale" and rtype.scale_subresource)):
        raise not_served()
    return Target(rtype, namespace, name, subresource)
