"""What every Argo Workflow of this repository carries: labels, annotations, the source checkout.

Labels make a workflow findable (`argo list -l gitops.ml/model=iris-classifier`, the Argo UI's
label filter); the `workflows.argoproj.io/title` and `description` annotations are what the Argo UI
list shows; `gitops.ml/commit-url` links the run back to the commit it built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler import labels
from reconciler.catalog.images import short_hash  # noqa: F401 - re-exported: names and tags use one hash prefix

TITLE = "workflows.argoproj.io/title"
DESCRIPTION = "workflows.argoproj.io/description"
COMMIT_URL = f"{labels.DOMAIN}/commit-url"
PIPELINE = f"{labels.DOMAIN}/pipeline"

SOURCE_PATH = "/src"  # where the repository is checked out (git input artifact) in every step pod
DEFAULT_STEP_IMAGE = "python:3.11-slim"
# what a step pod installs before running `python -m pipelines.steps`: the pinned training stack of
# pipelines/requirements.lock, read from the checkout (`-r`), so the pod trains at exactly the versions
# the laptop and the committed DVC pointers used; register adds dvc. Kept in one place so the step
# image can be pre-baked with exactly this list.
LOCK_FILE = "pipelines/requirements.lock"
STEP_REQUIREMENTS = ("-r", f"{SOURCE_PATH}/{LOCK_FILE}")
REGISTER_REQUIREMENTS = ("dvc==3.67.1",)

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")
_HEX = re.compile(r"^[0-9a-f]{7,64}$")


def label_value(value: str) -> str:
    """Make any string a valid Kubernetes label value: [A-Za-z0-9._-], at most 63, alphanumeric ends.

    `sha256:<64 hex>` becomes `sha256-<56 hex>` (truncated to 63 characters).
    """
    text = _LABEL_VALUE.sub("-", value)[:63]
    return text.strip("-._")


def dns_name(*parts: str, limit: int = 63) -> str:
    """Join parts into a DNS-1123 label (lowercase alphanumerics and '-'), cut to `limit`."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return text[:limit].rstrip("-")


def commit_url(repo_url: str, commit: str) -> str:
    """https://host/org/repo(.git) or git@host:org/repo(.git) -> https://host/org/repo/commit/<sha>."""
    url = repo_url.strip()
    ssh = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+)$", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    url = url.rstrip("/").removesuffix(".git")
    return f"{url}/commit/{commit}"


@dataclass(frozen=True)
class Source:
    """Where the repository is and which commit a workflow runs: every step checks it out at /src."""

    repo_url: str
    commit: str

    def __post_init__(self) -> None:
        if not _HEX.match(self.commit):
            raise ValueError(f"commit {self.commit!r} is not a git SHA (7 to 64 lowercase hex digits): "
                             "pass the full commit the workflow builds, e.g. `git rev-parse HEAD`")


def metadata(*, pipeline: str, model: str, model_hash: str, environment: str, source: Source,
             title: str, description: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) for a workflow of this repository."""
    workflow_labels = {
        labels.MANAGED_BY: labels.MANAGER,
        labels.MODEL: label_value(model),
        labels.MODEL_HASH: label_value(model_hash),
        labels.ENVIRONMENT: label_value(environment),
        labels.GIT_COMMIT: label_value(source.commit),
        PIPELINE: pipeline,
    }
    annotations = {
        TITLE: title,
        DESCRIPTION: description,
        COMMIT_URL: commit_url(source.repo_url, source.commit),
        labels.MODEL_HASH: model_hash,
        labels.GIT_COMMIT: source.commit,
    }
    return workflow_labels, annotations


def source_artifact(source: Source):  # -> hera.workflows.GitArtifact
    """The repository at the workflow's commit, as an input artifact at /src."""
    from hera.workflows import GitArtifact

    return GitArtifact(name="source", path=SOURCE_PATH, repo=source.repo_url, revision=source.commit)


BENTO_URL_PARAMETER = "bento-url"


def bento_artifact(path: str):  # -> hera.workflows.HTTPArtifact
    """The exported bento (`bentoml export`), fetched from the workflow parameter `bento-url`.

    Export as `.bento` (xz tar) or `.tar.gz`: `archive: none` makes Argo keep the download as the
    file at `path` (instead of unpacking gzip tarballs into a directory), and the step untars it.
    """
    from hera.workflows import HTTPArtifact, NoneArchiveStrategy

    return HTTPArtifact(name="bento", path=path, archive=NoneArchiveStrategy(),
                        url=f"{{{{workflow.parameters.{BENTO_URL_PARAMETER}}}}}")
