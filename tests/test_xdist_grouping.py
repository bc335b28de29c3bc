"""The suite relies on pytest-xdist's ``--dist loadgroup`` (pyproject addopts): the tests marked
``xdist_group("node")`` share one worker so a run starts ONE real node (tests/node_fixtures.py), and
``xdist_group("user_path")`` runs README command 1 once. pytest 9.2 broke it silently (pytest-dev/pytest-xdist#1386):
nothing fails, the tests are just spread over the workers. This runs the installed pytest + xdist on two tiny test
files as a subprocess and checks that one group lands on one worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = '''
import os
import pytest

pytestmark = [pytest.mark.xdist_group("together")]


@pytest.mark.parametrize("i", range(4))
def test_one(i):
    print("WORKER", os.environ["PYTEST_XDIST_WORKER"])
'''


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path: Path) -> None:
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(GROUPED)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --dist loadgroup\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-v", "-s",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    passed = [line for line in done.stdout.splitlines() if "PASSED" in line]
    assert len(passed) == 8, done.stdout[-3000:]
    workers = {line.split("]")[0].lstrip("[") for line in passed if line.startswith("[gw")}
    assert len(workers) == 1, (f"one xdist_group ran on {sorted(workers)}: --dist loadgroup does not group with "
                               f"this pytest/pytest-xdist pair (see requirements-test.txt)\n" + "\n".join(passed))
