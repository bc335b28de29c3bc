"""Start-up of the `reconciler` command as a user runs it: the console script as a process, CPU (user +
system, children included) and wall time, with the number of modules it imports.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5]

Rows: `reconciler --help`, `reconciler plan --help`, and `reconciler plan --no-check-artifacts` on a
fresh git copy of the example repository with one model changed (the PR job; the warm render cache is
the default folder, so the second and later runs are warm). Bytecode is compiled first (a normal install
has it; this machine sets PYTHONDONTWRITEBYTECODE=1, see ../shared/FIELD-NOTES.md).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("reconciler")
WRAPPER = ("import atexit, json, runpy, sys\n"
           "out, sys.argv = sys.argv[1], sys.argv[2:]\n"
           "atexit.register(lambda: json.dump(len(sys.modules), open(out, 'w')))\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def once(args: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def modules(args: list[str], cwd: Path) -> int:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-c", WRAPPER, out.name, str(SCRIPT), *args], cwd=cwd, capture_output=True)
        return int(json.loads(Path(out.name).read_text() or "0"))


def example_repo(dest: Path) -> Path:
    for part in ("models", "environments", "pipelines", ".dvc", ".dvcignore", ".gitignore"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pkl"))
        elif src.is_file():
            shutil.copy2(src, dest / part)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "template"], cwd=dest, check=True)
    spec = dest / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("maxReplicas: 4", "maxReplicas: 5", 1))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    compileall.compile_dir(str(ROOT / "reconciler"), quiet=1)
    compileall.compile_dir(str(ROOT / "pipelines"), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        repo = example_repo(Path(tmp) / "repo")
        print(f"load average {os.getloadavg()[0]:.2f}; {runs} runs each, median")
        print(f"{'command':<45} {'CPU s':>7} {'wall s':>7} {'modules':>8}")
        for args in (["--help"], ["plan", "--help"], ["plan", "--no-check-artifacts", "--format", "json"]):
            once(args, repo)  # warm the page cache (and the render cache for plan)
            samples = [once(args, repo) for _ in range(runs)]
            cpu = statistics.median(s[0] for s in samples)
            wall = statistics.median(s[1] for s in samples)
            print(f"{'reconciler ' + ' '.join(args):<45} {cpu:7.3f} {wall:7.3f} {modules(args, repo):8d}")


if __name__ == "__main__":
    main()
