"""What every Argo Workflow of this repository carries: labels, annotations, the source checkout.

Labels make a workflow findable (`argo list -l gitops.ml/model=iris-classifier`, the Argo UI's
label filter); the `workflows.argoproj.io/title` and `description` annotations are what the Argo UI
list shows; `gitops.ml/commit-url` links the run back to the commit it built.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml

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
DVC_VERSION = "3.67.1"
REGISTER_REQUIREMENTS = (f"dvc=={DVC_VERSION}",)  # a local (path) remote; dvc_requirements() adds the remote's extra
DVC_CONFIG = ".dvc/config"  # the committed config (reconciler.build.artifacts.committed_remotes reads it)
# a DVC remote URL's scheme -> the dvc extra (its dvc-<name> plugin) `dvc push` needs for it, as dvc 3's
# own package declares them (Provides-Extra); http(s) is built in (dvc-http is a core dependency)
DVC_EXTRAS = {"s3": "s3", "gs": "gs", "gcs": "gs", "azure": "azure", "gdrive": "gdrive", "ssh": "ssh",
              "hdfs": "hdfs", "webhdfs": "webhdfs", "oss": "oss", "webdav": "webdav", "webdavs": "webdav",
              "http": None, "https": None, "file": None}

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


def web_url(repo_url: str) -> str | None:
    """https://host/org/repo for an https or ssh (git@host:org/repo) origin; None for anything else
    (a local path, file://, http://): those have no page to link to, and a path must never become a link."""
    url = repo_url.strip()
    ssh = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+)$", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    if not re.match(r"^https://[^/\s]+/\S+$", url):
        return None
    return url.rstrip("/").removesuffix(".git")


def commit_url(repo_url: str, commit: str) -> str | None:
    """https://host/org/repo/commit/<sha>, or None when the origin is not a web (https/ssh) URL."""
    base = web_url(repo_url)
    return f"{base}/commit/{commit}" if base else None


NO_LINK = f"{labels.DOMAIN}/no-commit-link"
GIT_COMMIT_KEY = "git-commit"  # label keys without a '.', so the Argo UI's ${metadata.labels.<key>} can name them
PR_KEY = "pr-number"
BRANCH_KEY = "branch"


@dataclass(frozen=True)
class RunContext:
    """Where a workflow was started from: a pull request (number, branch) or a branch; for labels and links."""

    pr_number: int | None = None
    branch: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "RunContext":
        """GitHub Actions: GITHUB_REF=refs/pull/<n>/merge and GITHUB_HEAD_REF on pull requests."""
        env = os.environ if environ is None else environ
        pr = re.match(r"^refs/pull/(\d+)/", env.get("GITHUB_REF", ""))
        branch = env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME") or None
        return cls(int(pr.group(1)) if pr else None, branch)


@dataclass(frozen=True)
class Operations:
    """What Argo operators expect on every workflow: garbage collection, a deadline, an identity."""

    service_account: str | None = None
    active_deadline_seconds: int = 4 * 3600
    ttl_after_success: int = 24 * 3600
    ttl_after_failure: int = 7 * 24 * 3600
    pod_gc: str = "OnPodSuccess"  # failed pods stay for `kubectl logs` until the workflow's TTL

    @classmethod
    def from_environment(cls, env) -> "Operations":
        """From an EnvironmentSpec's `pipelines:` (serviceAccountName, activeDeadlineSeconds, ttl...)."""
        p = env.pipelines
        return cls(service_account=p.service_account_name, active_deadline_seconds=p.active_deadline_seconds,
                   ttl_after_success=p.ttl_seconds_after_success, ttl_after_failure=p.ttl_seconds_after_failure)

    def workflow_fields(self, pod_labels: dict[str, str]) -> dict:
        """hera Workflow keyword arguments: podGC, ttlStrategy, activeDeadlineSeconds, serviceAccountName, podMetadata."""
        from hera.workflows import models as m

        return {
            "pod_gc": m.PodGC(strategy=self.pod_gc),
            "ttl_strategy": m.TTLStrategy(seconds_after_success=self.ttl_after_success,
                                          seconds_after_failure=self.ttl_after_failure,
                                          seconds_after_completion=max(self.ttl_after_success, self.ttl_after_failure)),
            "active_deadline_seconds": self.active_deadline_seconds,
            "service_account_name": self.service_account,
            "pod_metadata": m.Metadata(labels=dict(pod_labels)),
        }


def retry(limit: int = 2):
    """Retries with exponential backoff (30 s, 60 s, ... at most 10 min) for transient failures."""
    from hera.workflows import RetryStrategy
    from hera.workflows import models as m

    return RetryStrategy(limit=str(limit), retry_policy="Always",
                         backoff=m.Backoff(duration="30s", factor="2", max_duration="10m"))  # type: ignore[arg-type]


def links_configmap(repo_url: str, namespace: str = "argo") -> dict:
    """The workflow-controller ConfigMap's `links`: the Argo UI shows a clickable link to the commit (and
    the pull request) of every workflow of this repository. Raises ValueError for a non-web origin."""
    base = web_url(repo_url)
    if base is None:
        raise ValueError(f"the origin {'(a local path)' if '://' not in repo_url and '@' not in repo_url else repo_url!r} "
                         "is not an https URL, so the Argo UI has no page to link commits to: pass the repository's "
                         "https URL (e.g. --repo-url https://github.com/<org>/<repo>.git)")
    links = [
        {"name": "Commit", "scope": "workflow", "url": f"{base}/commit/${{metadata.labels.{GIT_COMMIT_KEY}}}"},
        {"name": "Pull request", "scope": "workflow", "url": f"{base}/pull/${{metadata.labels.{PR_KEY}}}"},
    ]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap", "namespace": namespace},
            "data": {"links": yaml.safe_dump(links, sort_keys=False)}}


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
             title: str, description: str, run: RunContext | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) for a workflow of this repository."""
    run = run or RunContext()
    workflow_labels = {
        labels.MANAGED_BY: labels.MANAGER,
        labels.MODEL: label_value(model),
        labels.MODEL_HASH: label_value(model_hash),
        labels.ENVIRONMENT: label_value(environment),
        labels.GIT_COMMIT: label_value(source.commit),
        GIT_COMMIT_KEY: label_value(source.commit),
        PIPELINE: pipeline,
    }
    if run.pr_number is not None:
        workflow_labels[PR_KEY] = str(run.pr_number)
    if run.branch:
        workflow_labels[BRANCH_KEY] = label_value(run.branch)
    annotations = {
        TITLE: title,
        DESCRIPTION: description,
        labels.MODEL_HASH: model_hash,
        labels.GIT_COMMIT: source.commit,
    }
    url = commit_url(source.repo_url, source.commit)
    if url:
        annotations[COMMIT_URL] = url
    else:
        annotations[NO_LINK] = "the origin is not an https URL: no commit link (set the origin to the repository's https URL)"
    return workflow_labels, annotations


def pod_labels(model: str, model_hash: str, environment: str, pool: str | None) -> dict[str, str]:
    """podMetadata labels of every step pod: cost attribution by model, hash, environment and pool."""
    result = {labels.MODEL: label_value(model), labels.MODEL_HASH: label_value(model_hash),
              labels.ENVIRONMENT: label_value(environment)}
    if pool:
        result[labels.POOL] = label_value(pool)
    return result


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


# --------------------------------------------------------------------------- DVC remotes


class DvcConfigError(ValueError):
    """The repository's DVC configuration cannot drive the register step; `fix` says what to change."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message}\n  fix: {fix}")
        self.message, self.fix = message, fix


def dvc_extra(name: str, url: str, remotes: dict[str, str] | None = None, _seen: frozenset[str] = frozenset()) -> str | None:
    """The dvc extra remote `name` (at `url`) needs, None for a local or http remote; raises DvcConfigError
    for a scheme DVC has no plugin for. `remote://other/path` is resolved through the remote it names."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme is None or re.match(r"^[A-Za-z]:[\\/]", url):  # a path (or a Windows drive): a local remote
        return None
    kind = scheme.group(1).lower()
    if kind == "remote":
        target = url[len("remote://"):].split("/", 1)[0]
        if remotes is not None and target in remotes and target not in _seen:
            return dvc_extra(target, remotes[target], remotes, _seen | {name})
        raise DvcConfigError(f"DVC remote {name!r} ({url}) refers to remote {target!r}, which {DVC_CONFIG} "
                             "does not declare (or which refers back to it)",
                             f"declare it: `dvc remote add {target} <url>`, or point {name!r} at a storage URL")
    if kind not in DVC_EXTRAS:
        known = ", ".join(sorted(k for k in DVC_EXTRAS if k != "file"))
        raise DvcConfigError(f"DVC remote {name!r} in {DVC_CONFIG} has the URL scheme {kind!r} ({url}), for which "
                             f"dvc {DVC_VERSION} has no plugin, so the register step could not push to it",
                             f"use one of the schemes dvc supports ({known}, or a path): "
                             f"`dvc remote modify {name} url <url>`")
    return DVC_EXTRAS[kind]


def dvc_requirements(remotes: dict[str, str]) -> tuple[str, ...]:
    """What the register step installs for `dvc push` to any of `remotes` (every remote of the committed
    config, so `-p dvc-remote=<another>` at submit works too): dvc pinned, with the extras their schemes
    need, e.g. `dvc[s3]==3.67.1` for S3/MinIO. Pure; raises DvcConfigError for an unsupported scheme."""
    extras = sorted({e for name, url in remotes.items() if (e := dvc_extra(name, url, remotes)) is not None})
    return (f"dvc[{','.join(extras)}]=={DVC_VERSION}",) if extras else REGISTER_REQUIREMENTS
