"""Helpers for JSON values (the only kind of data the stand-in stores)."""

from __future__ import annotations

import json
from typing import Any


def clone(value: Any) -> Any:
    """A deep copy of a JSON value; several times faster than ``copy.deepcopy``."""
    return json.loads(json.dumps(value))
