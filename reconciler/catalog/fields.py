"""Field rules shared by every spec file: the strict base model (unknown fields are errors), DNS
labels, Kubernetes quantities and durations."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


DURATION = re.compile(r"^([0-9]+)(s|m|h)$")


class Strict(BaseModel):
    """Base for every spec model: unknown fields are errors, aliases allow camelCase in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def dns_label_fix(value: str) -> str:
    """What to write instead of an invalid DNS-1123 label: its lowercase (or cleaned-up) form when that is one."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:63].strip("-")
    if cleaned and DNS1123_LABEL.match(cleaned) and cleaned != value:
        return f"use '{cleaned}'" + (" (lowercase)" if cleaned == value.lower() else "")
    return "use at most 63 lowercase letters, digits and '-', e.g. 'fraud-detector'"


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise PydanticCustomError(
            "dns_label", "{what} {value} is not a DNS-1123 label: use at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit",
            {"what": what, "value": repr(value), "fix": dns_label_fix(value)})
    return value


def _quantity(value: str | int | float) -> str:
    text = str(value)
    if not QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. '500m', '2', '512Mi', '4Gi')")
    return text


def duration_seconds(value: str) -> int:
    """'30s' -> 30, '5m' -> 300, '1h' -> 3600."""
    match = DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write e.g. '30s', '5m' or '1h'")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


DURATION_MS = re.compile(r"^([0-9]+)(ms|s|m)$")


def duration_ms(value: str) -> int:
    """'20ms' -> 20, '1s' -> 1000, '1m' -> 60000."""
    match = DURATION_MS.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write e.g. '20ms', '1s'")
    return int(match.group(1)) * {"ms": 1, "s": 1000, "m": 60000}[match.group(2)]


Quantity = Annotated[str, Field(description="a Kubernetes quantity, e.g. 500m or 2Gi")]


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
