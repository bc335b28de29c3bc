"""``metav1.Status`` failures, raised as :class:`ApiError` and rendered exactly as the apiserver does."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.kubeapi.registry import ResourceType

_REASON_BY_CODE = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
                   410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
                   429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class Cause:
    """One ``details.causes`` entry of an Invalid status."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    """A request failure; ``to_status()`` is the response body."""

    code: int
    message: str
    reason: str = ""
    details: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reason = self.reason or _REASON_BY_CODE.get(self.code, "Unknown")
        super().__init__(self.message)

    def to_status(self) -> dict:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            status["details"] = self.details
        return status


def _details(rtype: ResourceType, name: str) -> dict:
    details = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified_resource} "{name}" not found',
                    details=_details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rtype.qualified_resource} "{name}" already exists',
                    reason="AlreadyExists", details=_details(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {rtype.qualified_resource} "{name}": '
                         f"{why}", details=_details(rtype, name))


def invalid(rtype: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    text = ", ".join(f"{c.field}: {c.message}" for c in causes)
    details = {"name": name, "kind": rtype.kind, "causes": [c.to_dict() for c in causes]}
    if rtype.group:
        details["group"] = rtype.group
    if len(causes) > 1:
        text = f"[{text}]"
    return ApiError(422, f'{rtype.qualified_kind} "{name}" is invalid: {text}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)
