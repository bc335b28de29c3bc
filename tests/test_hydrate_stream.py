"""A whole-environment hydrate streams: each model's render goes to a sink as its chunk is done and is not
kept, its files go to git as blobs (source.branches.BranchWriter) and only their ids stay in memory; the
branch written is the one a kept render writes, and an environment with a failing model is not written."""

from __future__ import annotations

import gc
import weakref

import git
import pytest
from typer.testing import CliRunner

from reconciler.catalog.load import load_catalog
from reconciler.cli.main import app
from reconciler.errors import SourceError, SpecError
from reconciler.render import environment
from reconciler.render.environment import ModelRender, render_environment
from reconciler.render.hydrate import EnvironmentBranch, hydrate_branch
from reconciler.source import branches
from tests.conftest import TEMPLATE_MODELS, commit_all, copy_template

IMAGES = {m: f"registry.test/{m}:abc" for m in TEMPLATE_MODELS}
runner = CliRunner()


@pytest.fixture
def repo(tmp_path):
    root = copy_template(tmp_path / "repo")
    commit_all(git.Repo.init(root, initial_branch="main"), "template")
    return root


def test_a_streamed_render_hands_every_model_to_the_sink_and_keeps_none(repo, monkeypatch):
    monkeypatch.setattr(environment, "CHUNK", 1)  # a chunk per model: several chunks, each handed over when done
    catalog = load_catalog(repo)
    kept = render_environment(catalog, "prod", images=IMAGES)
    seen: dict[str, list[dict]] = {}
    alive: list[weakref.ref] = []

    def sink(render: ModelRender) -> None:
        seen[render.model] = render.objects
        alive.append(weakref.ref(render))

    streamed = render_environment(catalog, "prod", images=IMAGES, sink=sink)
    assert kept.ok and streamed.ok and set(kept.models) == set(IMAGES)
    assert streamed.models == {} and sorted(streamed.streamed) == sorted(IMAGES)
    assert seen == {name: m.objects for name, m in kept.models.items()}  # the same objects, content hashes included
    seen.clear()
    gc.collect()
    assert alive and all(ref() is None for ref in alive), "the render kept a model's render after handing it over"


def test_a_streamed_render_does_not_add_to_the_validation_memo(repo, monkeypatch):
    """The per-process memo of validated contents serves a plan's two revisions; a streamed render (nothing
    renders its objects again) reads it without growing it, so a cold hydrate's memory does not grow with it."""
    memo: dict[str, list[str]] = {}
    monkeypatch.setattr(environment, "_VALIDATED", memo)
    catalog = load_catalog(repo)
    assert render_environment(catalog, "dev", images=IMAGES, sink=lambda render: None).ok
    assert memo == {}
    kept = render_environment(catalog, "dev", images=IMAGES)
    assert kept.ok and len(memo) == sum(len(m.objects) for m in kept.models.values())


@pytest.mark.parametrize("target", ["{kind: Deploymnet}", "{kind: Deployment, name: nope-.*}",
                                    "{kind: Deployment, labelSelector: 'tier in (x)'}", "{kind: Deployment, name: '('}",
                                    "{kind: Deployment, labelSelector: 'a b c'}", "{kind: Deployment, nme: x}"])
def test_patch_targets_are_checked_the_same_when_streaming(repo, target):
    """The streamed render checks patch targets on a first pass that keeps no object: the same errors."""
    kfile = repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace("target: {kind: Deployment}", f"target: {target}"))
    catalog = load_catalog(repo)
    errors = []
    for sink in (None, lambda render: None):
        with pytest.raises(SpecError) as caught:
            render_environment(catalog, "dev", images=IMAGES, sink=sink)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "environments/dev/kustomization.yaml" in errors[0]


def test_a_partial_render_checks_only_kinds_when_streaming(repo):
    """Rendering one model, a target naming another model's Deployment is not an error (identity only)."""
    other, one = sorted(IMAGES)[:2]
    kfile = repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace("target: {kind: Deployment}", f"target: {{kind: Deployment, name: {other}}}"))
    got: list[str] = []
    result = render_environment(load_catalog(repo), "dev", images=IMAGES, models={one}, sink=lambda r: got.append(r.model))
    assert result.ok and got == [one] == result.streamed


def test_the_branch_writer_commits_ids_and_an_abort_writes_nothing(repo):
    with branches.BranchWriter(repo, "out", parent=None) as writer:
        writer.blob(b"never committed\n")
    assert branches.branch_tip(repo, "refs/heads/out") is None
    with branches.BranchWriter(repo, "out", parent=None) as writer:
        first = writer.commit({"a/x.yaml": writer.blob(b"x\n"), "a/y.yaml": writer.blob(b"y\n")}, message="m")
    assert first is not None and git.Repo(repo).git.show(f"{first}:a/y.yaml") == "y"
    existing = branches.entries_under(repo, first, "a/")
    with branches.BranchWriter(repo, "out", parent=first, existing=existing) as writer:
        assert writer.commit({"a/x.yaml": writer.blob(b"x\n")}, message="same") is None  # nothing would change
        assert writer._proc is None  # a blob the branch holds is not sent: no git process at all
    with branches.BranchWriter(repo, "out", parent=first, existing=existing) as writer:
        second = writer.commit({"a/x.yaml": writer.blob(b"x2\n")}, drop=["a/y.yaml"], message="change")
    assert git.Repo(repo).git.ls_tree("-r", "--name-only", second).split() == ["a/x.yaml"]


def test_a_branch_moved_while_streaming_is_refused(repo):
    catalog = load_catalog(repo)
    hydrate_branch(repo, render_environment(catalog, "dev", images=IMAGES), "a" * 40)
    stream = EnvironmentBranch(repo, "dev")
    render = render_environment(catalog, "dev", images=IMAGES, sink=stream)
    hydrate_branch(repo, render_environment(load_catalog(repo), "dev", images=IMAGES), "b" * 40)  # another writer
    with stream, pytest.raises(SourceError, match="rendered/dev"):
        stream.commit(render, "c" * 40)


def test_a_streamed_hydrate_writes_what_a_kept_render_writes(repo):
    catalog = load_catalog(repo)
    for layout in ("plain", "kustomize"):
        kept = hydrate_branch(repo, render_environment(catalog, "prod", images=IMAGES), "d" * 40,
                              prefix=f"kept-{layout}/", layout=layout)
        with EnvironmentBranch(repo, "prod", prefix=f"streamed-{layout}/") as stream:
            streamed = stream.commit(render_environment(catalog, "prod", images=IMAGES, sink=stream), "d" * 40,
                                     layout=layout)
        assert kept.files == streamed.files == len(IMAGES)
        trees = [git.Repo(repo).git.rev_parse(f"{r.committed}^{{tree}}") for r in (kept, streamed)]
        assert trees[0] == trees[1], layout


def test_an_environment_with_a_failing_model_is_not_written_and_the_others_are(repo):
    patch = repo / "environments/staging/patches/deployment.yaml"
    patch.write_text(patch.read_text().replace("terminationGracePeriodSeconds: 60",
                                               "terminationGracePeriodSeconds: 60\n      restartPolice: Always"))
    commit_all(git.Repo(repo), "a broken staging patch")
    result = runner.invoke(app, ["hydrate", "--repo", str(repo), "--branch-prefix", "rendered/"])
    assert result.exit_code != 0 and "staging: not written" in result.output, result.output
    assert branches.branch_tip(repo, "refs/heads/rendered/staging") is None
    for env in ("dev", "prod"):
        names = git.Repo(repo).git.ls_tree("-r", "--name-only", f"rendered/{env}", env).split()
        assert {f"{env}/{m}.model.yaml" for m in TEMPLATE_MODELS} <= set(names), names
