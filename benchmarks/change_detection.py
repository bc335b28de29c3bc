"""Change detection at scale: content hashes of 1,000 models between two git revisions.

Generates a repository with N models (default 1,000), each with a service, a bentofile, a model.yaml
and a DVC pointer (so N DVC pointers), plus a shared package that every tenth model imports. Then it
commits (a) one model's service edited, (b) one model's DVC md5 changed, and (c) an unrelated file,
and times `model_hashes` + `changed_models` for each pair of revisions, cold (fresh process caches)
and warm (the blob-keyed parse caches filled by an earlier revision, as in `reconciler plan`).

    .venv/bin/python benchmarks/change_detection.py [--models 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import git

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.source import facts
from reconciler.source.hashing import changed_models, model_hashes
from reconciler.catalog.specs import ModelSpec


class Entry:
    def __init__(self, root: Path, name: str) -> None:
        self.name, self.path = name, root / "models" / name
        self.spec = ModelSpec(name=name, owner="bench@example.com", service="service.py:Svc",
                              artifacts=["model.pkl.dvc"])


def pointer(md5: str) -> str:
    return f"outs:\n- md5: {md5}\n  size: 1234\n  hash: md5\n  path: model.pkl\n"


def generate(root: Path, n: int) -> tuple[git.Repo, list[Entry]]:
    repo = git.Repo.init(root)
    repo.git.config("user.email", "bench@example.com")
    repo.git.config("user.name", "bench")
    (root / "common").mkdir()
    (root / "common/__init__.py").write_text("")
    (root / "common/features.py").write_text("import numpy\ndef scale(x):\n    return x\n")
    for i in range(n):
        name = f"model-{i:04d}"
        d = root / "models" / name
        d.mkdir(parents=True)
        shared = "from common.features import scale\n" if i % 10 == 0 else ""
        (d / "model.yaml").write_text(f"name: {name}\nowner: bench@example.com\nservice: service.py:Svc\n"
                                      "artifacts: [model.pkl.dvc]\n")
        (d / "service.py").write_text(f"import bentoml\n{shared}\nclass Svc:\n    ident = {i}\n")
        (d / "bentofile.yaml").write_text("service: service.py:Svc\npython: {lock_packages: false}\n")
        (d / "model.pkl.dvc").write_text(pointer(f"{i:032x}"))
        (d / ".gitignore").write_text("/model.pkl\n")
    repo.git.add(A=True)
    repo.git.commit("-q", "-m", "1,000 models")
    return repo, [Entry(root, f"model-{i:04d}") for i in range(n)]


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        facts.IMPORT_CACHE.clear()
        facts.DVC_CACHE.clear()
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="generate the repository here and keep it")
    args = parser.parse_args()
    tmp = None
    if args.keep:
        root = args.keep
        root.mkdir(parents=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="change-detection-")
        root = Path(tmp.name)
    t0 = time.perf_counter()
    repo, entries = generate(root, args.models)
    base = repo.head.commit.hexsha
    (root / "models/model-0500/service.py").write_text("import bentoml\n\nclass Svc:\n    ident = -1\n")
    repo.git.commit("-q", "-am", "edit one model's code")
    code_rev = repo.head.commit.hexsha
    (root / "models/model-0501/model.pkl.dvc").write_text(pointer("f" * 32))
    repo.git.commit("-q", "-am", "new weights for one model")
    data_rev = repo.head.commit.hexsha
    (root / "README.md").write_text("unrelated\n")
    repo.git.add("README.md")
    repo.git.commit("-q", "-m", "unrelated change")
    noop_rev = repo.head.commit.hexsha
    print(f"generated {args.models} models, {args.models} DVC pointers, 4 commits in {time.perf_counter() - t0:.1f} s")

    def compare(old: str, new: str) -> dict:
        return changed_models(model_hashes(root, old, entries), model_hashes(root, new, entries))

    rows = []
    for label, old, new, expect in [
        ("one model's code changed", base, code_rev, ["model-0500"]),
        ("one model's DVC md5 changed", code_rev, data_rev, ["model-0501"]),
        ("nothing changed (unrelated file)", data_rev, noop_rev, []),
    ]:
        cold, diff = timed(lambda o=old, n=new: compare(o, n))
        assert sorted(diff) == expect, (label, sorted(diff))
        # warm: the caches hold the parses of the old revision's blobs (what plan sees in a long-lived process)
        facts.IMPORT_CACHE.clear()
        facts.DVC_CACHE.clear()
        model_hashes(root, old, entries)
        start = time.perf_counter()
        model_hashes(root, new, entries)
        warm = time.perf_counter() - start
        rows.append((label, cold, warm, ", ".join(sorted(diff)) or "-"))

    one_rev, _ = timed(lambda: model_hashes(root, noop_rev, entries))
    worktree, _ = timed(lambda: model_hashes(root, None, entries))

    print(f"\n{'scenario':36} {'two revisions':>14} {'new rev, warm':>14}  changed")
    for label, cold, warm, changed in rows:
        print(f"{label:36} {cold * 1000:11.0f} ms {warm * 1000:11.0f} ms  {changed}")
    print(f"\nhash all {args.models} models at one revision:  {one_rev * 1000:.0f} ms")
    print(f"hash all {args.models} models in the working tree: {worktree * 1000:.0f} ms")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
