"""Static checks in the suite (and so in .ci/run): ruff over the project, mypy over reconciler/.

mypy runs against a baseline (tests/mypy-baseline.txt, the errors main had when the check was
introduced, without line numbers): a NEW error fails this test; an error that is gone only has to be
dropped from the baseline (`python tests/test_static.py --update`), so the baseline only shrinks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy-baseline.txt"
BIN = Path(sys.executable).parent
_LINE = re.compile(r"^(?P<file>[^:\s]+\.py):\d+(?::\d+)?: error: (?P<message>.*)$")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: install the test extra (`uv pip install -e '.[test]'`)")
    return str(path)


def mypy_errors() -> Counter[str]:
    """mypy's errors as 'file: message  [code]', counted (line numbers move with every edit)."""
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 1) or "error: " not in proc.stdout and proc.returncode:
        pytest.fail(f"mypy did not run: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    found: Counter[str] = Counter()
    for line in proc.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            found[f"{m['file']}: {m['message']}"] += 1
    return found


def read_baseline() -> Counter[str]:
    lines = [x for x in BASELINE.read_text(encoding="utf-8").splitlines() if x and not x.startswith("#")]
    return Counter(lines)


def test_ruff_passes():
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "reconciler", "pipelines", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff found problems (fix them, or `ruff check --fix`):\n{proc.stdout}{proc.stderr}"


@pytest.mark.slow
def test_mypy_has_no_new_errors():
    new = mypy_errors() - read_baseline()
    assert not new, ("mypy found errors that are not in tests/mypy-baseline.txt (fix them; the baseline only "
                     "shrinks):\n" + "\n".join(sorted(new.elements())))


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    current = mypy_errors()
    kept = current & read_baseline() if BASELINE.exists() else current
    header = "# mypy errors accepted for now (tests/test_static.py); remove lines as they are fixed, never add\n"
    BASELINE.write_text(header + "".join(f"{k}\n" for k in sorted(kept.elements())), encoding="utf-8")
    print(f"{sum(kept.values())} baseline errors ({sum((current - kept).values())} new ones NOT added)")
