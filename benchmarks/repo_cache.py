"""Generated benchmark repositories, cached by their parameters under /var/tmp, so a second run at 10,000 models
does not write 50,000 files and commit them again.

The key is the generator's inputs: the number of models, the broken ones, and the bytes of everything copied
from this checkout (the iris example, environments/, and the generator code itself). A run gets its own
`git clone --shared` of the cached repository (objects are shared, commits a benchmark makes stay in its
clone), so the cache is never written to after it is made. A lock file makes concurrent first runs generate
once. `BENCH_REPO_CACHE=off` generates into the run's own folder (the old behaviour); `BENCH_REPO_CACHE=DIR`
moves the cache.

    .venv/bin/python benchmarks/repo_cache.py --models 10000   # fill the cache ahead of the benchmarks
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path("/var/tmp/model-gitops-bench-repos")
# what the generated repository is made of: a change to any of these files makes a new key
INPUTS = ("models/iris-classifier", "environments", "benchmarks/render_bench.py", "benchmarks/plan_bench.py",
          "benchmarks/repo_cache.py")


def _digest(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in paths:
        base = ROOT / rel
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pkl":
                continue
            h.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def key(models: int, broken: int) -> str:
    return f"m{models}-b{broken}-{_digest(INPUTS)}"


def cached_repo(models: int, broken: int, generate: Callable[[Path, int, int], None]) -> Path | None:
    """The cached repository for these parameters (generated on first use), or None when the cache is off."""
    setting = os.environ.get("BENCH_REPO_CACHE", "")
    if setting == "off":
        return None
    base = Path(setting) if setting else DEFAULT_DIR
    base.mkdir(parents=True, exist_ok=True)
    target = base / key(models, broken)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".git" / "bench-complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            building = Path(tempfile.mkdtemp(prefix="building-", dir=base))
            started = time.perf_counter()
            generate(building, models, broken)
            # packed, as a clone from a server is (loose objects cost a file open each: 50,000 at 10,000 models)
            subprocess.run(["git", "repack", "-a", "-d", "-q"], cwd=building, check=True)
            subprocess.run(["git", "prune-packed"], cwd=building, check=True)
            (building / ".git" / "bench-complete").write_text(f"{models} models, {broken} broken\n")
            building.rename(target)
            print(f"(generated {target} in {time.perf_counter() - started:.0f} s; cached for later runs)",
                  file=sys.stderr)
    return target


def checkout(dest: Path, models: int, broken: int, generate: Callable[[Path, int, int], None]) -> None:
    """A repository of `models` generated models at `dest`: a shared clone of the cached one, or generated there."""
    source = cached_repo(models, broken, generate)
    if source is None:
        generate(dest, models, broken)
        return
    subprocess.run(["git", "clone", "-q", "--shared", str(source), str(dest)], check=True)
    # no origin: a plan would otherwise look for rendered/* branches there (it fetches missing ones)
    subprocess.run(["git", "remote", "remove", "origin"], cwd=dest, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--broken", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.plan_bench import generate

    print(cached_repo(args.models, args.broken, generate))


if __name__ == "__main__":
    main()
