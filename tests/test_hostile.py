"""Hostile input never leaks, hangs or crashes (issue #14: each finding measured on main has a test here).

A repository is input from every contributor, a pull request from a fork included. These tests build
such repositories for real (git, symlinks, FIFOs, kustomize) and run the real command line.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.catalog.load import load_catalog
from reconciler.cli import app
from reconciler.errors import LimitError, UnsafeSourceError
from reconciler.render import kustomize
from reconciler.render.environment import render_environment
from reconciler.source import guard
from tests.conftest import TEMPLATE_MODELS, commit_all

IMAGES = {m: f"registry.example.com/{m}:abc" for m in TEMPLATE_MODELS}  # an image for every model of the template
SECRET = "TOP-SECRET-VALUE-42"


def cli(repo: Path, *args: str, env: dict | None = None):
    result = CliRunner().invoke(app, [*args, "--repo", str(repo)], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the repository with content that must never be printed."""
    target = tmp_path / "outside" / "kubeconfig"
    target.parent.mkdir()
    target.write_text(f"pools:\n  stolen:\n    kind: cpu\n    hourlyPrice: 1\n    nodeSelector: {{leak: {SECRET}}}\n"
                      f"token: {SECRET}\n")
    return target


# --------------------------------------------------------------------------- 1. one read guard


def render_with_link(repo: Path, rel: str, target: Path, rev: str | None):
    """Replace a repository file by a committed symlink to `target`, then `reconciler render dev`."""
    path = repo / rel
    path.unlink()
    path.symlink_to(target)
    commit_all(git.Repo(repo), f"{rel} -> outside")
    return cli(repo, "render", "dev", *(["--rev", rev] if rev else []))


@pytest.mark.parametrize("rev", [None, "HEAD"])
def test_a_symlinked_pools_file_never_reads_outside_the_repository(template_repo, outside, rev):
    result, text = render_with_link(template_repo, "environments/pools.yaml", outside, rev)
    assert SECRET not in text and "stolen" not in text
    assert "environments/pools.yaml" in text and "outside the repository" in text
    assert result.exit_code == 1


@pytest.mark.parametrize("rev", [None, "HEAD"])
def test_a_model_file_linked_to_a_kubeconfig_is_refused_and_the_other_models_render(template_repo, outside, rev):
    result, text = render_with_link(template_repo, "models/iris-classifier/model.yaml", outside, rev)
    assert SECRET not in text and "token" not in text
    assert "models/iris-classifier/model.yaml" in text and "symlink" in text
    assert "name: digits-classifier" in result.stdout  # the healthy model still renders
    assert result.exit_code != 0


def test_a_relative_symlink_climbing_out_and_a_linked_folder_are_refused(template_repo, outside):
    link = template_repo / "environments" / "dev" / "patches" / "deployment.yaml"
    link.unlink()
    link.symlink_to(os.path.relpath(outside, link.parent))
    (template_repo / "models" / "stolen").symlink_to(outside.parent, target_is_directory=True)
    catalog = load_catalog(template_repo)
    assert "stolen" in catalog.errors and SECRET not in str(catalog.errors["stolen"])
    with pytest.raises(UnsafeSourceError, match="environments/dev/patches/deployment.yaml") as caught:
        render_environment(catalog, "dev", images=IMAGES)
    assert SECRET not in str(caught.value)


def test_model_file_references_cannot_escape_the_model_folder(template_repo, outside):
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("bentofile: bentofile.yaml", "") +
                    f"bentofile: {os.path.relpath(outside, spec.parent)}\n")
    catalog = load_catalog(template_repo)
    assert "leaves the repository" in str(catalog.errors["iris-classifier"])
    assert "digits-classifier" in catalog.models


def test_a_fifo_is_refused_instead_of_hanging_the_read(template_repo):
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    spec.unlink()
    os.mkfifo(spec)
    catalog = load_catalog(template_repo)
    assert "not a regular file" in str(catalog.errors["iris-classifier"])
    assert "digits-classifier" in catalog.models


def test_guard_names_the_link_not_the_content(tmp_path, outside):
    root = tmp_path / "repo"
    (root / "a").mkdir(parents=True)
    (root / "a" / "inner").symlink_to(outside.parent, target_is_directory=True)
    (root / "ok").symlink_to(root / "a", target_is_directory=True)  # a link inside the repository is fine
    with pytest.raises(UnsafeSourceError) as caught:
        guard.read_text(root, root / "a" / "inner" / "kubeconfig")
    assert "a/inner/kubeconfig: goes through a/inner, a symlink to" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(UnsafeSourceError, match="leaves the repository"):
        guard.read_text(root, root / ".." / "outside" / "kubeconfig")
    (root / "a" / "f.yaml").write_text("x: 1\n")
    assert guard.read_text(root, root / "ok" / "f.yaml") == "x: 1\n"


# --------------------------------------------------------------------------- 2. kustomizations by allow-list


@pytest.mark.parametrize("reference", [
    "HTTPS://example.com/x.yaml", "Http://example.com/x.yaml", "https://github.com/acme/base//deploy?ref=v1",
    "git::https://github.com/acme/base", "git@github.com:acme/base.git", "ssh://git@github.com/acme/base",
    "SSH://git@example.com/base", "github.com/acme/base/deploy", "example.com:8443/x.yaml", "oci://ghcr.io/acme/chart",
    "file:///etc/passwd", "//fileserver/share/x.yaml", "/etc/passwd", "../../../../etc", "base?ref=main",
])
def test_remote_and_escaping_references_are_refused_naming_the_field(template_repo, reference):
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text() + f"resources:\n  - {reference}\n")
    with pytest.raises(UnsafeSourceError, match=r"environments/dev/kustomization.yaml \(field 'resources.0'\)"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


@pytest.mark.parametrize("snippet, field", [
    ("helmCharts:\n  - name: x\n    repo: https://charts.example.com\n", "helmCharts"),
    ("transformers:\n  - t.yaml\n", "transformers"),
    ("validators:\n  - v.yaml\n", "validators"),
    ("unknownField: 1\n", "unknownField"),
    ("configMapGenerator:\n  - name: c\n    files:\n      - k=../../../etc/passwd\n", "configMapGenerator.0.files.0"),
    ("configMapGenerator:\n  - name: c\n    envs:\n      - /etc/environment\n", "configMapGenerator.0.envs.0"),
    ("secretGenerator:\n  - name: s\n    env: HTTPS://example.com/env\n", "secretGenerator.0.env"),
    ("replacements:\n  - path: https://example.com/r.yaml\n", "replacements.0.path"),
    ("openapi:\n  path: https://example.com/schema.json\n", "openapi.path"),
])
def test_fields_outside_the_allow_list_and_generator_files_outside_are_refused(template_repo, snippet, field):
    kfile = template_repo / "environments" / "staging" / "kustomization.yaml"
    kfile.write_text(kfile.read_text() + snippet)
    with pytest.raises(UnsafeSourceError, match=rf"\(field '{field}'\)"):
        render_environment(load_catalog(template_repo), "staging", images=IMAGES)


def test_a_referenced_component_two_levels_away_is_checked_too(template_repo):
    nested = template_repo / "environments" / "shared" / "deep"
    nested.mkdir(parents=True)
    (nested / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                               "resources:\n  - HTTPS://example.com/x.yaml\n")
    (nested.parent / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                                      "components:\n  - deep\n")
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text() + "components:\n  - ../shared\n")
    with pytest.raises(UnsafeSourceError, match=r"environments/shared/deep/kustomization.yaml \(field 'resources.0'\)"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


def test_kustomize_itself_runs_without_network(tmp_path):
    """The second wall: a remote resource that got past the allow-list meets an unreachable proxy."""
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - https://example.invalid/x.yaml\n")
    with pytest.raises(Exception) as caught:
        kustomize.run_kustomize(tmp_path, timeout=60)
    assert "127.0.0.1:9" in str(caught.value)


# --------------------------------------------------------------------------- 3. bounds


def test_a_200mb_model_file_is_refused_before_parsing_and_the_others_render(template_repo):
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    with spec.open("r+b") as f:  # sparse: 200 MB on paper, nothing on disk, and nothing read
        f.truncate(200 * 1024 * 1024)
    result, text = cli(template_repo, "render", "dev")
    assert "models/iris-classifier/model.yaml" in text and "max_file_bytes" in text
    assert "name: digits-classifier" in result.stdout
    assert result.exit_code != 0


def test_yaml_alias_expansion_is_bounded(template_repo, monkeypatch):
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    spec.write_text(spec.read_text() + "x-bomb:\n" + textwrap.indent("\n".join(laughs), "  ") + "\n")
    catalog = load_catalog(template_repo)
    error = catalog.errors["iris-classifier"]
    assert isinstance(error, LimitError) and "max_yaml_nodes" in str(error)
    assert "models/iris-classifier/model.yaml" in str(error) and "digits-classifier" in catalog.models


def test_tree_bounds_per_model_name_the_folder_and_the_limit(template_repo, monkeypatch):
    folder = template_repo / "models" / "iris-classifier"
    for i in range(5):
        (folder / f"extra-{i}.txt").write_text("x" * 100)
    monkeypatch.setenv("RECONCILER_MAX_TREE_FILES", str(sum(1 for p in folder.rglob("*") if p.is_file()) - 1))
    result, text = cli(template_repo, "render", "dev")
    assert "models/iris-classifier" in text and "max_tree_files" in text
    assert "name: digits-classifier" in result.stdout and result.exit_code != 0
    monkeypatch.delenv("RECONCILER_MAX_TREE_FILES")
    monkeypatch.setenv("RECONCILER_MAX_TREE_BYTES", "300")
    result, text = cli(template_repo, "render", "dev")
    assert "max_tree_bytes" in text and result.exit_code != 0


def test_environment_tree_bound(template_repo, monkeypatch):
    monkeypatch.setenv("RECONCILER_MAX_TREE_FILES", "1")
    with pytest.raises(LimitError, match=r"environments/dev.*max_tree_files"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


def test_limits_come_from_the_environment_and_bad_values_are_named():
    assert guard.Limits.from_env({}) == guard.Limits()
    assert guard.Limits.from_env({"RECONCILER_KUSTOMIZE_TIMEOUT": "2.5"}).kustomize_timeout == 2.5
    with pytest.raises(LimitError, match="RECONCILER_MAX_FILE_BYTES"):
        guard.Limits.from_env({"RECONCILER_MAX_FILE_BYTES": "-1"})


FAKE_KUBECTL = """#!{python}
import os, subprocess, sys, time
folder = sys.argv[-1]
log = os.environ["FAKE_LOG"]
text = open(os.path.join(folder, "objects.yaml")).read()
names = sorted({{n for n in os.environ["FAKE_MODELS"].split(",") if '"' + n + '-' in text}})
with open(log, "a") as f:
    f.write(",".join(names) + "\\n")
if os.environ["FAKE_HANG"] == "*" or os.environ["FAKE_HANG"] in names:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(log + ".pids", "a") as f:
        f.write(f"{{child.pid}}\\n")
    time.sleep(600)
os.execv(os.environ["REAL_KUBECTL"], [os.environ["REAL_KUBECTL"], *sys.argv[1:]])
"""


@pytest.fixture
def eight_models(template_repo):
    src = template_repo / "models" / "iris-classifier"
    names = []
    for i in range(8):
        name = f"m{i}-classifier"
        shutil.copytree(src, template_repo / "models" / name)
        spec = template_repo / "models" / name / "model.yaml"
        spec.write_text(spec.read_text().replace("name: iris-classifier", f"name: {name}"))
        bentofile = template_repo / "models" / name / "bentofile.yaml"  # it names the model too
        bentofile.write_text(bentofile.read_text().replace("iris-classifier", name))
        names.append(name)
    for folder in (template_repo / "models").iterdir():  # the eight, and no model of the template
        if folder.name not in names:
            shutil.rmtree(folder)
    return template_repo, names


def _fake_kubectl(tmp_path, monkeypatch, names, hang):
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "runs.log"
    monkeypatch.setenv("REAL_KUBECTL", kustomize.kubectl_binary())
    monkeypatch.setenv("RECONCILER_KUBECTL", str(script))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_MODELS", ",".join(names))
    monkeypatch.setenv("FAKE_HANG", hang)
    monkeypatch.setenv("RECONCILER_KUSTOMIZE_TIMEOUT", "3")
    return log


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_one_hanging_model_costs_a_bisection_not_a_timeout_per_model(eight_models, tmp_path, monkeypatch):
    repo, names = eight_models
    log = _fake_kubectl(tmp_path, monkeypatch, names, hang=names[2])
    result = render_environment(load_catalog(repo), "dev", images={n: f"r.example.com/{n}:1" for n in names})
    assert set(result.errors) == {names[2]} and set(result.models) == set(names) - {names[2]}
    assert "kustomize_timeout" in str(result.errors[names[2]])
    runs = log.read_text().splitlines()
    hung = [r for r in runs if names[2] in r.split(",")]
    assert len(hung) == 4  # 8 -> 4 -> 2 -> 1 models: log2(8) + 1 timeouts, not 1 + 8 (a retry per model)
    assert len(runs) == 7
    for pid in map(int, (tmp_path / "runs.log.pids").read_text().split()):
        assert not _pid_alive(pid), "the hung kustomize's child was left running"


def test_an_overlay_that_hangs_every_run_stops_after_the_first_split(eight_models, tmp_path, monkeypatch):
    repo, names = eight_models
    log = _fake_kubectl(tmp_path, monkeypatch, names, hang="*")
    result = render_environment(load_catalog(repo), "dev", images={n: f"r.example.com/{n}:1" for n in names})
    assert set(result.errors) == set(names) and not result.models
    assert len(log.read_text().splitlines()) == 3  # the chunk, then its two halves: both hang, so it is not one model's


# --------------------------------------------------------------------------- 4. patches must match, known kinds


def test_a_patch_target_that_matches_nothing_is_an_environment_error(template_repo):
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace("target: {kind: Deployment}", "target: {kind: Deploymnet}"))
    result, text = cli(template_repo, "render", "dev")
    assert "environments/dev/kustomization.yaml (field 'patches.0.target')" in text
    assert "matches no object" in text and result.exit_code != 0
    with pytest.raises(Exception, match="Deploymnet"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


@pytest.mark.parametrize("target", ["{kind: Deployment, name: nope-.*}", "{kind: Deployment, labelSelector: 'tier in (x)'}",
                                    "{group: apps, version: v2, kind: Deployment}"])
def test_target_selectors_are_checked_as_kustomize_reads_them(template_repo, target):
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace("target: {kind: Deployment}", f"target: {target}"))
    with pytest.raises(Exception, match="matches no object"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


def test_matching_selectors_by_regex_and_labels_still_render(template_repo):
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace(
        "target: {kind: Deployment}", "target: {kind: Deploy.*, labelSelector: 'app.kubernetes.io/name,!nope'}"))
    result = render_environment(load_catalog(template_repo), "dev", images=IMAGES)
    assert result.ok and set(result.models) == set(IMAGES)


def test_an_unknown_kind_in_a_built_in_group_fails_at_render(template_repo):
    extra = template_repo / "environments" / "dev" / "typo.yaml"
    extra.write_text("apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: typo\n"
                     "  labels: {reconciler.example.com/model: iris-classifier}\n")
    kfile = template_repo / "environments" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text() + "resources:\n  - typo.yaml\n")
    from reconciler import labels as L
    extra.write_text(extra.read_text().replace("reconciler.example.com/model", L.MODEL))
    result = render_environment(load_catalog(template_repo), "dev", images=IMAGES)
    assert "Deploymnet" in str(result.errors["iris-classifier"]) and "digits-classifier" in result.models
