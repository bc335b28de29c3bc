"""Hydrate at monorepo scale: `reconciler hydrate --branch-prefix rendered/` as a user runs it (a process,
start-up included), on an N-model repository x 3 environments.

Rows, one run, one after the other:
- cold: no rendered/* branches yet: every model of every environment rendered and committed;
- one model changed: a second commit edits one model's model.yaml; the branches hold the first commit's
  render, so only that model is rendered and one file per environment is written;
- nothing changed: the same commit again;
- with `--plan`, before the one-model hydrate: `reconciler plan --base HEAD~1 --head HEAD` of that commit as a
  process, with an EMPTY render cache and the base hydrated by the cold row (what a fresh PR runner pays: the
  plan reads the base's rendered/<env> branches instead of rendering every model);
- all changed (an environment overlay edited): every model rendered again (`--skip-all` leaves it out);
- with `--check`, a `--full` hydrate of the one-model commit to other branches, and the trees compared.

Wall time, CPU (the command and its kustomize children) and the peak RSS of the command's process tree
(the largest child: ru_maxrss of RUSAGE_CHILDREN) are printed per row. The render cache is off
(RECONCILER_CACHE=off), so no row is helped by an earlier one's renders.

    .venv/bin/python benchmarks/hydrate_bench.py [--models 1000] [--skip-all] [--check] [--plan]
"""

from __future__ import annotations

import argparse
import json
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


def command(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, output) of one reconciler process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(Path(sys.executable).parent / "reconciler"), *argv],
                          capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200", **env})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in ok:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return wall, used, peak_kib / 1024, done.stdout


def run(root: Path, *args: str) -> tuple[float, float, float, str]:
    """One `reconciler hydrate` process, the render cache off."""
    return command(["hydrate", "--repo", str(root), "--branch-prefix", *args], {"RECONCILER_CACHE": "off"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--skip-all", action="store_true", help="leave out the all-changed row")
    parser.add_argument("--check", action="store_true", help="also hydrate --full and compare the trees")
    parser.add_argument("--plan", action="store_true", help="also time a one-model plan, empty cache, base hydrated")
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
        if args.plan:  # the cold row hydrated HEAD~1: the plan's base
            cache = Path(tmp) / "empty-cache"
            wall, used, rss, output = command(["plan", "--repo", str(root), "--base", "HEAD~1", "--head", "HEAD",
                                               "--format", "json", "--no-check-artifacts"],
                                              {"RECONCILER_CACHE": str(cache)})
            changed = {env: e["changedModels"] for env, e in json.loads(output)["environments"].items()}
            assert set().union(*changed.values()) == {"model-0007"}, changed  # (dev caps maxReplicas: no change)
            rows.append(("plan (command), empty cache, base hydrated", wall, used, rss))
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
