"""Render overhead and hydrated-output build time, at N models, side by side in one run.

1. `render_environment` for prod: the CPU of this process (generating, writing, parsing, hashing,
   validating) plus its children, which are only the `kubectl kustomize` runs on the chunks.
   The ratio total / kustomize is the renderer's overhead over kustomize on the same inputs.
2. The hydrated environment, built with the tool a GitOps controller runs on it:
   - plain layout (default), as Argo CD reads a directory source: no kustomize; the YAML stream is
     decoded (timed with kubectl's own decoder: `kubectl create --dry-run=client -o name -f`, which
     needs an API server for the REST mapping: the envtest one when available, else skipped);
   - plain layout, as Flux reads a plain folder: kustomize-controller generates a kustomization
     listing the files and builds it (`kubectl kustomize`);
   - kustomize layout (`--layout kustomize`): `kubectl kustomize` on its kustomization.yaml.

    .venv/bin/python benchmarks/render_overhead.py [--models 1000] [--skip-kustomize-layout]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.render_bench import generate  # noqa: E402
from reconciler.catalog.load import load_catalog  # noqa: E402
from reconciler.render.environment import render_environment  # noqa: E402
from reconciler.render.hydrate import write_environment  # noqa: E402
from reconciler.render.kustomize import kubectl_binary  # noqa: E402


def usage() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    wall, (_, kids) = time.perf_counter(), usage()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - wall, usage()[1] - kids, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--env", default="prod")
    parser.add_argument("--skip-kustomize-layout", action="store_true", help="it takes minutes at 1,000 models")
    parser.add_argument("--skip-flux", action="store_true", help="the Flux path is a kustomize build of every resource too")
    args = parser.parse_args()
    kubectl = kubectl_binary()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        generate(root, args.models)
        catalog = load_catalog(root)
        images = {m: f"registry.test/{m}:0123456789ab" for m in catalog.models}
        wall, (own, kids) = time.perf_counter(), usage()
        render = render_environment(catalog, args.env, images=images)
        wall = time.perf_counter() - wall
        own, kids = usage()[0] - own, usage()[1] - kids
        assert not render.errors, render.errors
        objects = len(render.objects())
        print(f"models: {args.models}, objects: {objects}, environment: {args.env}")
        print(f"render:        wall {wall:6.2f} s, CPU {own + kids:6.2f} s = kustomize {kids:6.2f} s "
              f"+ Python {own:5.2f} s -> {(own + kids) / kids:.2f}x the CPU of kustomize")

        plain = Path(tmp) / "plain" / args.env
        write_environment(render, plain, "bench")
        flux = Path(tmp) / "flux" / args.env
        shutil.copytree(plain, flux)
        (flux / "kustomization.yaml").write_text(  # what kustomize-controller generates for a plain folder
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [manifest.yaml]\n")
        if not args.skip_flux:
            w, c, proc = timed([kubectl, "kustomize", str(flux)])
            assert proc.returncode == 0, proc.stderr
            print(f"hydrated, plain layout, Flux (kustomize of the generated kustomization): wall {w:6.2f} s, "
                  f"CPU {c:6.2f} s")
        try:
            from tests.envtest import ControlPlane, find_assets

            assets = find_assets()
        except Exception:  # no envtest here
            assets = None
        if assets is not None:
            with ControlPlane.start(Path(tmp) / "envtest", assets) as plane:
                w, c, proc = timed([kubectl, "--kubeconfig", str(plane.kubeconfig), "create", "--dry-run=client",
                                    "-o", "name", "--validate=false", "-f", str(plain / "manifest.yaml")])
                assert proc.returncode == 0, proc.stderr
                print(f"hydrated, plain layout, Argo CD directory (decode, kubectl create --dry-run=client): "
                      f"wall {w:6.2f} s, CPU {c:6.2f} s, {proc.stdout.count(chr(10))} objects")
        else:
            print("hydrated, plain layout, Argo CD directory: skipped (set KUBEBUILDER_ASSETS for an API server)")
        if not args.skip_kustomize_layout:
            layout = Path(tmp) / "kustomize" / args.env
            write_environment(render, layout, "bench", "kustomize")
            w, c, proc = timed([kubectl, "kustomize", str(layout)])
            assert proc.returncode == 0, proc.stderr
            print(f"hydrated, kustomize layout (kubectl kustomize, {args.models + 1} files): "
                  f"wall {w:6.2f} s, CPU {c:6.2f} s")


if __name__ == "__main__":
    main()
