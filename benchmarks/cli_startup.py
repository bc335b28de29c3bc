"""Start-up of the `reconciler` command as a user runs it: the console script as a process, CPU (user +
system, children included) and wall time, with the number of modules it imports.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5]

Rows: `reconciler --help`, `reconciler plan --help`, and `reconciler plan --no-check-artifacts` on a
fresh git copy of the example repository with one model changed (the PR job; the warm render cache is
the default folder, so the second and later runs are warm). Bytecode is compiled first (a normal install
has it; this machine sets PYTHONDONTWRITEBYTECODE=1, see ../shared/FIELD-NOTES.md).

    .venv/bin/python benchmarks/cli_startup.py --models 1000 [--against main~1] [--runs 9]

`--models N`: the warm one-model plan of a PR job at N models x 3 environments, as a command (a process, start-up
included) beside the same plan in-process: the generated repository of plan_bench.py (cached under /var/tmp by
repo_cache.py), one model's service.py changed in a commit, the base revision rendered into a render cache first
(heavy at 10,000: every model of the base through kustomize), then `reconciler plan --base HEAD~1 --head HEAD
--format markdown --no-check-artifacts` with that cache, run once untimed (it records the outcomes) and then
timed. `--against REV`: the same command from the code of another commit (`git archive REV`, put first on
sys.path), run alternately with this checkout's (A B, B A, ...) on the same repository and cache, with the
median of the paired differences: this machine's CPU figures move with its load, a pair sees the same load.
The render cache key covers render/, catalog/ and labels.py: REV with other code there renders its base once
more on its first, untimed, run.
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


def once(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(CPU, wall) seconds of one run; `args` a whole command when it starts with a path, else the script's."""
    command = args if args and args[0].startswith("/") else [str(SCRIPT), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=False, env=env)
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


def launcher(rev: str, folder: Path) -> Path:
    """A `reconciler` console script running the code of commit `rev` (its reconciler/ and pipelines/ first on
    sys.path, ahead of this checkout's editable install)."""
    code = folder / "code"
    code.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "reconciler", "pipelines"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    for package in ("reconciler", "pipelines"):
        compileall.compile_dir(str(code / package), quiet=1)
    script = folder / "reconciler"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(code)!r})\n"
                      "from reconciler.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


def warm_plan(models: int, broken: int, runs: int, against: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.plan_bench import generate, git
    from benchmarks.repo_cache import checkout
    from reconciler.desired.state import desired_at
    from reconciler.plan.revisions import plan_revisions
    from reconciler.render.cache import RenderCache
    from reconciler.report.plan import plan_markdown

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "repo", Path(tmp) / "cache"
        checkout(root, models, broken, generate)
        service = root / "models" / f"model-{min(7, models - 1):04d}" / "service.py"
        service.write_text(service.read_text() + "\n# tuned\n")
        git(root, "commit", "-qam", "change one model's code")
        start = cpu()
        desired_at(root, "HEAD~1", cache=RenderCache(cache))
        print(f"(setup) base rendered into the cache: {cpu() - start:.1f} s CPU")
        args = ["plan", "--repo", str(root), "--base", "HEAD~1", "--head", "HEAD", "--format", "markdown",
                "--no-check-artifacts"]
        env = {**os.environ, "RECONCILER_CACHE": str(cache)}
        scripts = {"this checkout": SCRIPT}
        if against is not None:
            scripts = {against: launcher(against, Path(tmp) / "against"), **scripts}
        outputs = {}
        for label, script in scripts.items():  # untimed: records the outcomes (and renders, for other code)
            done = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, check=False)
            assert done.returncode == (3 if broken else 0), (label, done.stderr[-3000:])
            outputs[label] = done.stdout
        if len(set(outputs.values())) != 1:
            print("NOTE: the two commits print different plans")
        samples: dict[str, list[float]] = {label: [] for label in scripts}
        load = os.getloadavg()[0]
        for i in range(runs):
            order = list(scripts) if i % 2 == 0 else list(reversed(scripts))
            for label in order:
                samples[label].append(once([str(scripts[label]), *args], root, env)[0])
        start = cpu()
        plan_markdown(plan_revisions(root, "HEAD~1", "HEAD", cache=RenderCache(cache), check_artifacts=False))
        in_process = cpu() - start
        print(f"models: {models} x 3 environments, warm one-model plan; {runs} runs each, alternating; "
              f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
        print(f"{'run':<60} {'CPU s':>7}")
        for label, values in samples.items():
            print(f"{'`reconciler plan` command, ' + label:<60} {statistics.median(values):7.3f}  "
                  f"(min {min(values):.3f}, max {max(values):.3f})")
        if against is not None:
            paired = [b - a for a, b in zip(*samples.values())]
            print(f"{'  paired difference, this checkout - ' + against:<60} {statistics.median(paired):+7.3f}")
        print(f"{'the same plan in-process (this checkout, imports loaded)':<60} {in_process:7.3f}")


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", type=int, default=0, help="the warm one-model plan at this many models")
    parser.add_argument("--broken", type=int, default=0, help="with --models: models with an invalid model.yaml")
    parser.add_argument("--against", help="with --models: alternate with the plan command of this commit")
    options = parser.parse_args()
    runs = options.runs
    compileall.compile_dir(str(ROOT / "reconciler"), quiet=1)
    compileall.compile_dir(str(ROOT / "pipelines"), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if options.models:
        warm_plan(options.models, options.broken, runs, options.against)
        return
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
