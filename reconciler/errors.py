"""The reconciler's own error hierarchy.

Every adapter (git, DVC, BentoML, kustomize, Kubernetes, Prometheus, Argo) catches the
exceptions of the library it wraps and raises one of these instead, so callers never have to
know which third-party package sits behind a step. Each error carries enough to act on:
the file, the field (or line), and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a person most likely meant by `name`: the same name in other case (`Iris` ->
    `iris`), else the closest spelling (difflib), else None. Pure."""
    names = [k for k in known if isinstance(k, str)]
    folded = {k.lower(): k for k in names}
    if name.lower() in folded and folded[name.lower()] != name:
        return folded[name.lower()]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6) or \
        difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)
    if not close:
        return None
    return folded.get(close[0], close[0])


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a close known name, '' otherwise: to append to a message or a fix."""
    match = closest(name, known)
    return f" (did you mean {match!r}?)" if match and match != name else ""


class ReconcilerError(Exception):
    """Base class of every error the reconciler raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


@dataclass(frozen=True)
class SpecProblem:
    """One problem in one file: where it is and what to do about it."""

    file: str
    message: str
    field: str | None = None
    line: int | None = None
    fix: str | None = None

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f" (field '{self.field}')"
        return where

    def __str__(self) -> str:
        text = f"{self.location()}: {self.message}"
        return f"{text}\n  fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "field": self.field, "line": self.line,
                "message": self.message, "fix": self.fix}


class SpecError(ReconcilerError):
    """A model, environment or pool file is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return self.message

    @classmethod
    def single(cls, file: str | Path, message: str, *, field: str | None = None,
               line: int | None = None, fix: str | None = None) -> "SpecError":
        return cls([SpecProblem(str(file), message, field=field, line=line, fix=fix)])


class UnsafeSourceError(ReconcilerError):
    """A kustomization or symlink would make rendering read outside the repository."""


class UnsafePathError(SpecError, UnsafeSourceError):
    """A file the reconciler was asked to read is (or goes through) a symlink leaving the repository,
    a path that escapes it, or not a regular file. Names the in-repository path, never outside content."""


class LimitError(SpecError):
    """An input exceeds a configured bound (file size, tree size or file count, YAML alias expansion)."""


class SourceError(ReconcilerError):
    """Git could not give us the revision or files asked for."""


class SignatureError(SourceError):
    """A commit is not signed by a trusted key, so it is never applied."""


class SecretError(ReconcilerError):
    """A SOPS secret cannot be decrypted or is not fit to apply: its model fails closed."""


class RenderError(ReconcilerError):
    """kustomize (or the manifest generator) failed for a model."""


class ValidationError(ReconcilerError):
    """Rendered manifests failed schema validation."""

    def __init__(self, message: str, errors: list[str], *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.errors = errors

    def __str__(self) -> str:
        text = self.message + "".join(f"\n  - {e}" for e in self.errors)
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class ArtifactError(ReconcilerError):
    """DVC could not read or fetch a model's tracked artifacts."""


class BuildError(ReconcilerError):
    """Building a Bento or an image failed."""


class ArgoError(ReconcilerError):
    """The Argo server refused or failed a request."""


class RegistryError(ReconcilerError):
    """The container registry refused or failed a request."""


@dataclass
class KubeError(ReconcilerError):
    """The Kubernetes API refused or failed a request.

    Raised as one of the subclasses below, by meaning (as kopf's ``APINotFoundError``...): callers catch
    ``NotFound`` or ``Invalid`` instead of comparing status codes. ``payload`` is the server's
    ``metav1.Status`` body when it sent one. Only the transient kinds (``TooManyRequests``,
    ``ServerError``, ``Unreachable``) are ``retryable``; everything else fails the same way when repeated.
    """

    message: str
    status: int | None = None
    reason: str | None = None
    retry_after: float | None = None
    causes: list[str] = field(default_factory=list)
    fix: str | None = None
    payload: dict | None = None

    transient: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__init__(self.message, fix=self.fix)

    @property
    def retryable(self) -> bool:
        return self.transient

    def __str__(self) -> str:
        text = self.message + "".join(f"\n  - {c}" for c in self.causes)
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class NoKindMatch(KubeError):
    """The server does not serve this apiVersion/kind (a CRD not installed, a typo in apiVersion)."""


class Conflict(KubeError):
    """409: AlreadyExists, a stale resourceVersion, or a server-side apply field-manager conflict."""


class Invalid(KubeError):
    """The object itself was refused: 400 BadRequest, 422 Invalid, or a 500 the server answers for a
    schema error (see ``VALIDATION_500`` in reconciler/cluster/kube.py). Resending it cannot help."""


class Unauthorized(KubeError):
    """401: the credentials were rejected."""


class Forbidden(KubeError):
    """403: RBAC does not grant this verb on this resource, or admission refused it."""


class TooManyRequests(KubeError):
    """429: the server is throttling (API Priority and Fairness); honour Retry-After."""

    transient = True


class ServerError(KubeError):
    """5xx that is not a validation answer: the server (or etcd, or a webhook) is failing."""

    transient = True


class Unreachable(KubeError):
    """No HTTP answer: connection refused or dropped, timeout."""

    transient = True


class ClusterIdentityError(ReconcilerError):
    """The cluster a command would act on is not the environment's (context or API server identity)."""


class MetricsError(ReconcilerError):
    """Prometheus could not answer a query."""
