"""Render at scale: N models x 1 environment through real kustomize and strict schema validation.

Generates a repository with N copies of the iris example (one Deployment, two Services and an HPA
each), then times loading the catalog and `render_environment` for prod, and a re-render to show
it is byte-identical.

    .venv/bin/python benchmarks/render_bench.py [--models 1000] [--env prod]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.catalog.scaffold import Rename, class_name, service_class  # noqa: E402
from reconciler.catalog.load import load_catalog  # noqa: E402
from reconciler.render.environment import render_environment  # noqa: E402


def generate(dest: Path, models: int) -> None:
    shutil.copytree(ROOT / "environments", dest / "environments")
    template = ROOT / "models" / "iris-classifier"
    texts = {f: (template / f).read_text() for f in ("service.py", "bentofile.yaml", "model.yaml")}
    old_class = service_class(texts["model.yaml"]) or class_name("iris-classifier")
    for i in range(models):
        name = f"model-{i:04d}"
        folder = dest / "models" / name
        folder.mkdir(parents=True)
        shutil.copy2(template / "model.pkl.dvc", folder / "model.pkl.dvc")  # same weights: the pointer is kept
        rename = Rename("iris-classifier", name, old_class, class_name(name))  # as `reconciler model new` does
        for f, text in texts.items():
            (folder / f).write_text(rename.apply(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--env", default="prod")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.models)
        started = time.perf_counter()
        catalog = load_catalog(root)
        loaded = time.perf_counter()
        images = {m: f"registry.test/{m}:0123456789ab" for m in catalog.models}
        first = render_environment(catalog, args.env, images=images)
        rendered = time.perf_counter()
        again = render_environment(catalog, args.env, images=images, validate=False)
        unvalidated = time.perf_counter()
        assert not first.errors and not catalog.errors, (first.errors, catalog.errors)
        objects = len(first.objects())
        print(f"models: {args.models}, objects: {objects}, environment: {args.env}")
        print(f"load catalog:                {loaded - started:7.2f} s")
        print(f"render + strict validation:  {rendered - loaded:7.2f} s")
        print(f"render without validation:   {unvalidated - rendered:7.2f} s")
        print(f"byte-identical re-render:    {first.to_yaml() == again.to_yaml()}")


if __name__ == "__main__":
    main()
