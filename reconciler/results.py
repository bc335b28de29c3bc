"""Typed result vocabulary shared by plan, sync, build and report.

One word per outcome, the same word everywhere (the CLI, JSON output, PR comments, metrics):
created / configured / unchanged / pruned / skipped / failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Action(str, Enum):
    created = "created"
    configured = "configured"
    unchanged = "unchanged"
    pruned = "pruned"
    skipped = "skipped"
    failed = "failed"

    @property
    def writes(self) -> bool:
        return self in (Action.created, Action.configured, Action.pruned)


@dataclass(frozen=True)
class ObjectRef:
    """Identifies one Kubernetes object."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, obj: dict) -> "ObjectRef":
        meta = obj.get("metadata", {})
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


@dataclass(frozen=True)
class ObjectResult:
    ref: ObjectRef
    action: Action
    model: str | None = None
    message: str = ""
    diff: str = ""
    refused: bool = False  # skipped by a safety check (mass prune, protected kind): the sync is partial
    error: Exception | None = None  # the typed error of a failed write (a KubeError); .message is its text

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.ref.kind, "apiVersion": self.ref.api_version, "namespace": self.ref.namespace,
                "name": self.ref.name, "action": self.action.value, "model": self.model,
                "message": self.message, **({"diff": self.diff} if self.diff else {}),
                **({"refused": True} if self.refused else {})}


@dataclass
class Summary:
    """Counts of actions, e.g. for one model or one environment."""

    counts: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, items: Iterable[Any]) -> Summary:
        """The one aggregation: counts of ``item.action`` over anything that has one (ObjectResult,
        PlannedAction, ModelBuild...)."""
        summary = cls()
        for item in items:
            summary.add(item.action)
        return summary

    def add(self, action: Action) -> None:
        self.counts[action] += 1

    @property
    def changed(self) -> bool:
        return any(self.counts[a] for a in Action if a.writes)

    def as_dict(self) -> dict[str, int]:
        return {a.value: self.counts[a] for a in Action if self.counts[a]}

    def __str__(self) -> str:
        return ", ".join(f"{n} {a.value}" for a, n in self.counts.items() if n) or "nothing"

    def would(self) -> str:
        """The summary of a dry run: 'would create 11, would prune 1, 3 unchanged'."""
        verbs = {Action.created: "create", Action.configured: "configure", Action.pruned: "prune"}
        parts = [f"would {verbs[a]} {n}" if a in verbs else f"{n} {a.value}" for a, n in self.counts.items() if n]
        return "dry run: " + (", ".join(parts) if parts else "nothing to do")
