"""One commit renders the same bytes on every machine: image references come from the commit only."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from reconciler.catalog.image_lock import IMAGES_LOCK, ImageStore, digests_of, tagged_image
from reconciler.catalog.load import load_catalog
from reconciler.desired.state import desired_at
from reconciler.source.hashing import model_hashes
from reconciler.render.hydrate import hydrate_folder
from tests.conftest import commit_all

MODEL = "digits-classifier"
ENVIRONMENTS = ["dev", "prod"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _render(root: Path, rev: str, out: Path) -> dict[str, bytes]:
    state = desired_at(root, rev, ENVIRONMENTS)
    assert not state.env_errors, state.env_errors
    hydrate_folder(state.renders, out, state.revision)
    return _files(out)


def test_one_commit_renders_byte_identical_under_three_local_states(template_repo: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    repo = git.Repo(template_repo)
    catalog = load_catalog(template_repo)
    hashes = model_hashes(template_repo, "HEAD", [catalog.models[MODEL]])
    kinds = digests_of(catalog)
    spec = catalog.models[MODEL].spec
    prod_tag, neuron_tag, dev_tag = (
        tagged_image(catalog.environments[env].registry, MODEL, hashes[MODEL], kind, kinds.of(spec, kind))
        for env, kind in (("prod", "cpu"), ("prod", "inferentia"), ("dev", "cpu")))
    lock = ImageStore(template_repo / IMAGES_LOCK)  # what the merge workflow commits back
    lock.record(prod_tag, "sha256:" + "a" * 64)
    built_from = repo.head.commit.hexsha  # the commit the Neuron image's bento was built from
    lock.record(neuron_tag, "sha256:" + "e" * 64, built_from)  # the Neuron-compiled variant for inf2 pools
    sha = commit_all(repo, "record image digests")

    # 1. no image store at all: an empty Bento store, nothing else on the machine
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("RECONCILER_IMAGES_FILE", raising=False)
    fresh = tmp_path / "fresh-clone"
    git.Repo.clone_from(str(template_repo), fresh)
    bare = _render(fresh, sha, tmp_path / "out-bare")

    # 2. a builder's machine: Bentos built, other digests in its local store and an uncommitted,
    #    newer lock in its working tree (a build that ran after the commit)
    home = tmp_path / "builder-home"
    (home / "bentos" / MODEL).mkdir(parents=True)
    (home / "reconciler-images.json").write_text(json.dumps({"images": {prod_tag: "sha256:" + "b" * 64}}))
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(home / "reconciler-images.json"))
    newer = ImageStore.read(template_repo / IMAGES_LOCK)
    newer.record(prod_tag, "sha256:" + "c" * 64, "f" * 40)
    newer.record(neuron_tag, "sha256:" + "e" * 64, "d" * 40)  # a rebuild of the same image elsewhere
    assert repo.is_dirty()
    builder = _render(template_repo, sha, tmp_path / "out-builder")

    # 3. the in-cluster reconciler: its own mirror of the remote in an emptyDir, a fresh image store
    from reconciler.source.git import GitMirror

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "pod-emptydir" / "bentoml"))
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "pod-emptydir" / "images.json"))
    mirror = GitMirror(str(template_repo), "main", tmp_path / "pod-emptydir" / "repo")
    assert mirror.fetch() == sha
    in_cluster = _render(mirror.path, sha, tmp_path / "out-cluster")

    assert bare == builder == in_cluster
    prod = bare[f"prod/{MODEL}.model.yaml"].decode()  # inf2 pools only: the Neuron variant, pinned by the lock
    assert f"image: {prod_tag.rsplit(':', 1)[0]}@sha256:{'e' * 64}" in prod
    assert "b" * 64 not in prod and "c" * 64 not in prod  # the machine's digests never leak in
    # the pods say which commit their image was built from (the X-Model-Version `commit=`), from the commit's lock
    assert f"gitops.ml/git-commit: {built_from}" in prod and "d" * 40 not in prod and "f" * 40 not in prod
    assert built_from != sha  # not the rendering commit
    # where the lock names no digest (dev pushes to another registry), the tag, the same everywhere
    assert f"image: {dev_tag}\n" in bare[f"dev/{MODEL}.model.yaml"].decode()


@pytest.mark.parametrize("content, wanted", [
    ("{not json", "not valid JSON"),
    ('{"images": []}', "expected"),
    ('{"images": {"r/m:abc": "sha256:short"}}', "sha256 digest"),
    ('{"images": {}, "commits": []}', "commits"),
    ('{"images": {"r/m:abc": "sha256:%s"}, "commits": {"r/m:abc": "main"}}' % ("a" * 64), "build commit"),
    ('{"images": {}, "commits": {"r/m:abc": "%s"}}' % ("a" * 40), "not a locked image"),
])
def test_a_malformed_lock_fails_the_environment_naming_the_file(template_repo: Path, content: str,
                                                                wanted: str) -> None:
    (template_repo / IMAGES_LOCK).write_text(content)
    state = desired_at(template_repo, None, ["dev"])
    assert "dev" in state.env_errors and not state.renders
    message = str(state.env_errors["dev"])
    assert IMAGES_LOCK in message and wanted in message
