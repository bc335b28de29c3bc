"""Hydrate at monorepo scale: `reconciler hydrate --branch-prefix rendered/` as a user runs it (a process,
start-up included), on an N-model repository x 3 environments.

Rows, one run, one after the other:
- cold: no rendered/* branches yet: every model of every environment rendered and committed;
- one model changed: a second commit edits one model's model.yaml; the branches hold the first commit's
  render, so only that model is rendered and one file per environment is written;
- nothing changed: the same commit again;
- all changed (an environment overlay edited): every model rendered again (`--skip-all` leaves it out);
- with `--check`, a `--full` hydrate of the one-model commit to other branches, and the trees compared.

Wall time, CPU (the command and its kustomize children) and the peak RSS of the command's process tree
(the largest child: ru_maxrss of RUSAGE_CHILDREN) are printed per row. The render cache is off
(RECONCILER_CACHE=off), so no row is helped by an earlier one's renders.

    .venv/bin/python benchmarks/hydrate_bench.py [--models 1000] [--skip-all] [--check]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plan_bench import generate, git  # noqa: E402
from benchmarks.repo_cache import checkout  # noqa: E402

ENVS = ("dev", "staging", "prod")


# a fresh wrapper process per row: RUSAGE_CHILDREN's ru_maxrss is the largest descendant it waited for, so
# each row's peak is its own (the hydrate process, or a kustomize it ran)
WRAPPER = ("import resource, subprocess, sys\n"
           "done = subprocess.run(sys.argv[1:])\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
           "sys.exit(done.returncode)\n")


def run(root: Path, *args: str) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, output) of one `reconciler hydrate` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(Path(sys.executable).parent / "reconciler"), "hydrate",
                           "--repo", str(root), "--branch-prefix", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "RECONCILER_CACHE": "off", "COLUMNS": "200"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"hydrate failed:\n{done.stdout}\n{done.stderr}")
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return wall, used, peak_kib / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--skip-all", action="store_true", help="leave out the all-changed row")
    parser.add_argument("--check", action="store_true", help="also hydrate --full and compare the trees")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hydrate-bench-") as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        checkout(root, args.models, 0, generate)  # cached under /var/tmp by its parameters
        rows.append(("cold: every model, 3 environments", *run(root, "rendered/")[:3]))
        spec = root / "models" / "model-0007" / "model.yaml"
        spec.write_text(spec.read_text().replace("maxReplicas: 4", "maxReplicas: 5"))
        git(root, "commit", "-qam", "one model")
        wall, used, rss, output = run(root, "rendered/")
        assert output.count("rendered 1 changed") == 3, output
        rows.append(("one model changed", wall, used, rss))
        rows.append(("nothing changed (same commit again)", *run(root, "rendered/")[:3]))
        if args.check:
            run(root, "full/", "--full")
            for env in ENVS:
                ours, full = (git(root, "rev-parse", f"{p}{env}:{env}").strip() for p in ("rendered/", "full/"))
                assert ours == full, f"{env}: incremental tree {ours} != full tree {full}"
            print("check: the incremental branches' trees equal a --full hydrate's")
        if not args.skip_all:
            env_file = root / "environments" / "dev" / "environment.yaml"
            env_file.write_text(env_file.read_text() + "# touched\n")
            git(root, "commit", "-qam", "overlay")
            rows.append(("all changed (an overlay edited: every environment whole)", *run(root, "rendered/")[:3]))
    print(f"\nreconciler hydrate --branch-prefix rendered/, {args.models} models x 3 environments "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'row':<58} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for label, wall, used, rss in rows:
        print(f"{label:<58} {wall:>8.2f} {used:>8.2f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
