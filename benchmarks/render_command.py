"""`reconciler render ENV` as a user runs it: the whole command as a process (start-up, catalog load, hashing,
kustomize, validation, YAML output), its CPU split between the command's own process and its children (the
`kubectl kustomize` runs, and git), on an N-model repository (cached under /var/tmp by benchmarks/repo_cache.py).

    .venv/bin/python benchmarks/render_command.py [--models 1000] [--env prod] [--runs 1] [--phases]

The ratio printed is the command's whole CPU over its children's: the renderer's cost over kustomize's on the same
inputs, start-up included (issue 25's target: <= 1.1x). The render cache is off (RECONCILER_CACHE=off), bytecode
is compiled first (a normal install has it), and the load average is printed beside the wall time.
`--phases` adds one in-process run split by step (the command's steps, called as cli/render.py calls them): the
CPU of this process and of its children after each, so the command's own cost can be read per step.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plan_bench import generate  # noqa: E402
from benchmarks.repo_cache import checkout  # noqa: E402

# runs the console script in this process and reports its own CPU and its children's (RUSAGE_CHILDREN: the
# kustomize and git processes it waited for), and its peak RSS, as JSON on the descriptor named first
WRAPPER = ("import atexit, json, os, resource, runpy, sys\n"
           "out = os.fdopen(int(sys.argv[1]), 'w')\n"
           "def report():\n"
           "    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
           "    json.dump({'self': s.ru_utime + s.ru_stime, 'children': c.ru_utime + c.ru_stime,\n"
           "               'self_rss_kib': s.ru_maxrss, 'child_rss_kib': c.ru_maxrss}, out); out.flush()\n"
           "atexit.register(report)\n"
           "sys.argv = sys.argv[2:]\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def once(root: Path, env: str) -> dict:
    read, write = os.pipe()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(write), str(Path(sys.executable).with_name("reconciler")), "render",
                           env, "--repo", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          pass_fds=(write,), env={**os.environ, "RECONCILER_CACHE": "off"}, check=False)
    wall = time.perf_counter() - started
    os.close(write)
    with os.fdopen(read) as f:
        figures = json.loads(f.read() or "{}")
    if proc.returncode != 0 or not figures:
        raise SystemExit(f"render failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    return {"wall": wall, **figures}


def phases(root: Path, env: str) -> list[tuple[str, float, float, float]]:
    """(step, wall s, own CPU s, children CPU s) cumulative after each step of one in-process render (the
    render modules are imported before: the command's imports are in its own row above)."""
    import contextlib
    import resource

    from reconciler.catalog.load import load_catalog
    from reconciler.desired.state import DesiredState, render_state
    from reconciler.render.secrets import check_decryption
    from reconciler.source import git as source
    from reconciler.source.hashing import model_hashes

    started, rows = time.perf_counter(), []

    def mark(step: str) -> None:
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows.append((step, time.perf_counter() - started, time.process_time(), c.ru_utime + c.ru_stime))

    mark("(before)")
    root = source.toplevel(root)
    mark("locate the repository")
    with contextlib.ExitStack() as stack:
        tree = stack.enter_context(source.checkout(root, None, None))
        catalog = load_catalog(tree)
        mark("catalog load")
        entries = [catalog.models[m] for m in sorted(catalog.models)]
        state = DesiredState("worktree", catalog, model_hashes(root, None, entries, errors={}))
        mark("model hashes")
        render_state(state, [env])
        mark("render (kustomize, validation)")
        result = state.renders[env]
        check_decryption(result)
        text = result.to_yaml()
        mark(f"YAML output ({len(text) / 2**20:.1f} MiB)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--env", default="prod")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--phases", action="store_true", help="also one in-process run, split by step")
    args = parser.parse_args()
    for package in ("reconciler", "pipelines"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="render-command-") as tmp:
        root = Path(tmp) / "repo"
        checkout(root, args.models, 0, generate)
        print(f"reconciler render {args.env}, {args.models} models, render cache off")
        print(f"{'wall s':>8} {'load':>5} {'command CPU s':>14} {'own s':>7} {'children s':>11} {'ratio':>6} "
              f"{'own peak RSS MiB':>17}")
        for _ in range(args.runs):
            load = os.getloadavg()[0]
            r = once(root, args.env)
            total = r["self"] + r["children"]
            print(f"{r['wall']:8.2f} {load:5.1f} {total:14.2f} {r['self']:7.2f} {r['children']:11.2f} "
                  f"{total / r['children']:6.2f} {r['self_rss_kib'] / 1024:17.0f}")
        if args.phases:
            os.environ["RECONCILER_CACHE"] = "off"
            print(f"\nin process, by step (load {os.getloadavg()[0]:.1f})")
            print(f"{'step':34} {'wall s':>7} {'own CPU s':>10} {'children s':>11}")
            rows = phases(root, args.env)
            for (_, *last), (step, wall, own, children) in zip(rows, rows[1:]):
                print(f"{step:34} {wall - last[0]:7.2f} {own - last[1]:10.2f} {children - last[2]:11.2f}")


if __name__ == "__main__":
    main()
