"""Plan at monorepo scale: a one-model change in an N-model repository, x 3 environments.

Generates a git repository with N copies of the iris example (real DVC pointer, metrics, bentofile),
commits it, changes one model's service.py in a second commit, then measures, side by side in one
run, `plan_revisions(base=HEAD~1, head=HEAD)`:

- full:        every model rendered at both revisions (`full=True`, the old behaviour);
- incremental, cold:  an empty render cache: nothing is recorded about the models the change does
                      not touch, so the head is read and rendered whole once (the base from the cache);
- incremental, base cached: the cache holds the base revision's render and its models' outcomes (what
                      the merge of the base commit leaves behind: `reconciler hydrate` with the cache on);
- the `reconciler plan --format markdown` command itself (a new process: imports included), base cached.

`--broken K` (default 3) models have an invalid model.yaml at both revisions, untouched by the change:
the plan must report them (as the full plan does), reading only them. It checks that the incremental
plan is identical to the full one, and prints wall and CPU (this process + its kustomize children) for each.

    .venv/bin/python benchmarks/plan_bench.py [--models 1000] [--broken 3] [--skip-full]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import render_bench  # noqa: E402
from benchmarks.repo_cache import checkout  # noqa: E402
from reconciler.desired.state import desired_at  # noqa: E402
from reconciler.plan.revisions import plan_revisions  # noqa: E402
from reconciler.render.cache import RenderCache  # noqa: E402
from reconciler.report.plan import plan_json  # noqa: E402


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@x"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def generate(dest: Path, models: int, broken: int = 0) -> None:
    render_bench.generate(dest, models)
    template = ROOT / "models" / "iris-classifier"
    for i in range(models):  # with evaluation metrics, as a trained model has
        shutil.copy2(template / "metrics.json", dest / "models" / f"model-{i:04d}" / "metrics.json")
    for i in range(broken):  # pre-existing errors in models no change of the benchmark touches
        spec = dest / "models" / f"model-{models - 1 - i:04d}" / "model.yaml"
        spec.write_text(spec.read_text().replace("owner:", "ownr:", 1))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "generated")


def measure(label: str, fn, rows: list) -> object:
    wall, used = time.perf_counter(), cpu()
    result = fn()
    rows.append((label, time.perf_counter() - wall, cpu() - used))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--broken", type=int, default=3, help="untouched models with an invalid model.yaml "
                        "(0 adds the row of a plan with an empty cache whose base was hydrated)")
    parser.add_argument("--skip-full", action="store_true", help="do not time the full render (minutes at 1,000)")
    parser.add_argument("--command-runs", type=int, default=5, help="time the plan command this many more times")
    args = parser.parse_args()
    for package in ("reconciler", "pipelines"):  # bytecode, as a normal install has it (../shared/FIELD-NOTES.md)
        compileall.compile_dir(str(ROOT / package), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        checkout(root, args.models, args.broken, generate)  # cached under /var/tmp by its parameters
        service = root / "models" / f"model-{min(7, args.models - 1):04d}" / "service.py"
        service.write_text(service.read_text() + "\n# tuned\n")
        git(root, "commit", "-qam", "change one model's code")
        cold = RenderCache(Path(tmp) / "cache-cold")
        warm_dir = Path(tmp) / "cache-warm"
        incremental = measure("incremental plan, cold cache", lambda: plan_revisions(
            root, "HEAD~1", "HEAD", cache=cold), rows)
        measure("(setup) render the base revision into a cache", lambda: desired_at(
            root, "HEAD~1", cache=RenderCache(warm_dir)), rows)
        warm = measure("incremental plan, base cached", lambda: plan_revisions(
            root, "HEAD~1", "HEAD", cache=RenderCache(warm_dir)), rows)
        env = {**os.environ, "RECONCILER_CACHE": str(warm_dir)}
        cli = [str(Path(sys.executable).parent / "reconciler"), "plan", "--repo", str(root), "--base", "HEAD~1",
               "--head", "HEAD", "--format", "markdown", "--no-check-artifacts"]  # no DVC remote here
        proc = measure("`reconciler plan` command, base cached", lambda: subprocess.run(
            cli, env=env, capture_output=True, text=True, check=False), rows)  # CPU: the child's, once waited for
        if args.command_runs > 1:  # the same command again (the first run left the outcome set behind): median
            again = []
            for _ in range(args.command_runs):
                measure("", lambda: subprocess.run(cli, env=env, capture_output=True, text=True, check=False), again)
            walls, cpus = sorted(r[1] for r in again), sorted(r[2] for r in again)
            rows.append((f"  the command again, median of {args.command_runs}", walls[len(walls) // 2],
                         cpus[len(cpus) // 2]))
        # 3: the plan holds model errors (the --broken models), which it reports
        assert proc.returncode == (3 if args.broken else 0), (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
        same = plan_json(incremental) == plan_json(warm)
        if not args.broken:  # hydrate writes only clean environments: with broken models it proves nothing
            base_sha = git(root, "rev-parse", "HEAD~1").strip()
            hydrate = [str(Path(sys.executable).parent / "reconciler"), "hydrate", "--repo", str(root),
                       "--branch-prefix", "rendered/", "--rev", base_sha]
            done = measure("(setup) hydrate the base to rendered/<env> branches", lambda: subprocess.run(
                hydrate, env={**os.environ, "RECONCILER_CACHE": "off"}, capture_output=True, text=True, check=False), rows)
            assert done.returncode == 0, done.stderr[-3000:]
            hydrated = measure("incremental plan, cold cache, base hydrated", lambda: plan_revisions(
                root, "HEAD~1", "HEAD", cache=RenderCache(Path(tmp) / "cache-cold-hydrated")), rows)
            same = same and plan_json(hydrated) == plan_json(incremental)
        if not args.skip_full:
            full = measure("full render of both revisions", lambda: plan_revisions(
                root, "HEAD~1", "HEAD", full=True), rows)
            same = same and plan_json(full) == plan_json(incremental)
        changed = {env: e.changed_models for env, e in incremental.environments.items()}
        errors = {env: sorted(n for n, m in e.models.items() if m.error) for env, e in warm.environments.items()}
    print(f"models: {args.models}, environments: 3, change: one model's service.py (load {os.getloadavg()[0]:.1f})")
    print(f"{'run':<48} {'wall':>8} {'CPU':>8}")
    for label, wall, used in rows:
        print(f"{label:<48} {wall:7.2f}s {used:7.2f}s")
    print(f"changed or failing models per environment: {json.dumps(changed)}")
    print(f"models with errors (base cached): {json.dumps(errors)}")
    print(f"incremental plans identical to {'the full-render plan' if not args.skip_full else 'each other'}: {same}")


if __name__ == "__main__":
    main()
