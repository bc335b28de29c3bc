"""`reconciler status [ENV]`: what runs in each environment, as `argocd app get` / `flux get kustomizations`.

Per environment: the deployed commit (recorded by `run`, `sync` or `rollback` in the state
ConfigMap), synced or out of sync against the branch head as the remote has it now (the checkout's
upstream, `git ls-remote`; the local HEAD when the branch has no upstream), the sync policy `run` recorded,
a suspension, a rollback pin, the last failure; per model: drift (the one comparison of
`reconciler.sync.server_diff.drift_of`), health (the owned live objects) and the canary phase; per object, as
`argocd app get` lists resources: its sync state (Synced, OutOfSync, Missing, Extra, Unknown) and health.

`gather` does the reads; `EnvironmentStatus.as_dict`, `to_markdown` and `to_text` are pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import labels
from reconciler.cluster.protocol import Cluster
from reconciler.errors import ReconcilerError
from reconciler.report import escape as esc
from reconciler.results import ObjectRef
from reconciler.desired.state import desired_at
from reconciler.rollout import store
from reconciler.run.record import Record, state_ref, suspended
from reconciler.source import git as source
from reconciler.sync.health import Health, HealthStatus, aggregate
from reconciler.sync.health import health_of, with_pods
from reconciler.sync.inventory import load_inventory
from reconciler.sync.server_diff import diff_environment


@dataclass
class ResourceStatus:
    """One object, as `argocd app get` lists resources: its sync state and its health (sync.health.health_of)."""

    object: str  # Kind/namespace/name
    sync: str = "Synced"  # Synced | OutOfSync | Missing | Extra (no longer in git: would be pruned) | Unknown
    health: str = "unknown"
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"object": self.object, "sync": self.sync, "health": self.health, "message": self.message or None}


@dataclass
class ModelStatus:
    name: str
    objects: int = 0
    drift: list[str] = field(default_factory=list)  # "Deployment/x: spec.replicas: 2 -> 3", "missing: ...", "extra: ..."
    health: str = "unknown"
    health_message: str = ""
    canary: str | None = None  # "progressing 25%" / "stable" / None (canaries off)
    error: str | None = None
    resources: dict[str, ResourceStatus] = field(default_factory=dict)  # by object

    @property
    def drifted(self) -> bool:
        return bool(self.drift)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "objects": self.objects, "drifted": self.drifted, "drift": self.drift,
                "health": self.health, "healthMessage": self.health_message or None, "canary": self.canary,
                "error": self.error, "resources": [r.as_dict() for _, r in sorted(self.resources.items())]}


@dataclass
class EnvironmentStatus:
    environment: str
    namespace: str
    head: str | None = None
    deployed: str | None = None
    deployed_at: str = ""
    ok: bool | None = None
    failure: str | None = None
    failed_commit: str | None = None
    pinned_head: str = ""
    local_head: str | None = None  # the checkout's HEAD (head is the remote's, when the branch has an upstream)
    source: str = ""  # where head comes from (source.git.UpstreamHead.describe)
    suspended: str | None = None  # when, by whom, why (`reconciler suspend`)
    policy: str = ""  # how `reconciler run` syncs it, as its last pass recorded ("": never synced by `run`)
    models: dict[str, ModelStatus] = field(default_factory=dict)
    error: str | None = None  # the status could not be read (no cluster, no state)

    @property
    def synced(self) -> bool:
        return self.deployed is not None and self.deployed == self.head and self.failure is None

    @property
    def drifted(self) -> bool:
        return any(m.drifted for m in self.models.values())

    @property
    def sync_state(self) -> str:
        if self.error is not None:
            return "unknown"
        if self.deployed is None:
            return "never synced"
        if self.failure is not None:
            return f"failed at {(self.failed_commit or '')[:12]}"
        if self.pinned_head and self.deployed != self.head:
            return "rolled back (auto-sync paused until a newer commit)"
        return "synced" if self.synced else "out of sync"

    @property
    def health(self) -> str:

        if not self.models:
            return "unknown"
        known = [Health(HealthStatus(m.health)) for m in self.models.values() if m.health in HealthStatus._value2member_map_]
        return aggregate(known).value if known else "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "namespace": self.namespace, "head": self.head,
                "deployed": self.deployed, "deployedAt": self.deployed_at or None, "sync": self.sync_state,
                "synced": self.synced, "drifted": self.drifted, "health": self.health, "ok": self.ok,
                "failure": self.failure, "failedCommit": self.failed_commit,
                "rollbackPinnedHead": self.pinned_head or None, "error": self.error,
                "localHead": self.local_head, "source": self.source or None, "suspended": self.suspended,
                "syncPolicy": self.policy or "manual",
                "models": [m.as_dict() for _, m in sorted(self.models.items())]}


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "-"


def to_markdown(statuses: list[EnvironmentStatus]) -> str:
    """One table of environments, one of models per environment. Pure."""
    cell, code = esc.plain, esc.cell_code  # names, errors and drift lines carry repository and cluster text

    lines = ["| environment | deployed | head | sync | drift | health |", "|---|---|---|---|---|---|"]
    for s in statuses:
        lines.append(f"| {code(s.environment)} | `{_short(s.deployed)}` | `{_short(s.head)}` | {cell(s.sync_state)} | "
                     f"{'yes' if s.drifted else 'no'} | {cell(s.health)} |")
    for s in statuses:
        if s.error:
            lines += ["", f"**{cell(s.environment)}**: {cell(s.error)}"]
            continue
        if not s.models:
            continue
        lines += ["", f"**{cell(s.environment)}** ({code(s.namespace)})", "",
                  "| model | objects | drift | health | canary |", "|---|---|---|---|---|"]
        for m in sorted(s.models.values(), key=lambda m: m.name):
            drift = "<br>".join(code(d) for d in m.drift) if m.drift else "no"
            lines.append(f"| {code(m.name)} | {m.objects} | {drift} | {cell(m.health)} | {cell(m.canary or '-')} |")
    return "\n".join(lines) + "\n"


def to_text(statuses: list[EnvironmentStatus]) -> list[str]:
    """Plain lines for a terminal. Pure."""
    out = []
    for s in statuses:
        head = f"{s.environment} ({s.namespace}): {s.sync_state}"
        if s.error:
            out += [head, f"  {s.error}"]
            continue
        out.append(f"{head}; deployed {_short(s.deployed)}{' at ' + s.deployed_at if s.deployed_at else ''}, "
                   f"head {_short(s.head)}; drift: {'yes' if s.drifted else 'no'}; health: {s.health}")
        if s.source:
            out.append(f"  source: {s.source}" + (f"; local checkout at {_short(s.local_head)}"
                                                  if s.local_head and s.local_head != s.head else ""))
        out.append(f"  sync policy: {s.policy or 'manual (no `reconciler run` pass recorded)'}"
                   + (f"; SUSPENDED {s.suspended} (`reconciler resume {s.environment}`)" if s.suspended else ""))
        if s.failure:
            out.append(f"  last failure: {s.failure.strip().splitlines()[0] if s.failure.strip() else ''}")
        for m in sorted(s.models.values(), key=lambda m: m.name):
            canary = f"; canary: {m.canary}" if m.canary else ""
            message = f" ({m.health_message})" if m.health_message and m.health != "healthy" else ""
            out.append(f"  {m.name}: {m.objects} objects; drift: {'yes' if m.drifted else 'no'}; "
                       f"health: {m.health}{message}{canary}")
            out.extend(f"      {d}" for d in m.drift)
            out.extend(f"      {r.object}  {r.sync}  {r.health}" + (f"  ({r.message})" if r.message else "")
                       for _, r in sorted(m.resources.items()))
            if m.error:
                out.append(f"      error: {m.error}")
    return out


# --------------------------------------------------------------------------- reads


def _canary(kube: Cluster, model: str, namespace: str) -> str | None:

    try:
        stored = store.load(kube, model, namespace)
    except ReconcilerError as exc:
        return f"unreadable ({exc.message})"
    if stored is None:
        return None
    state = stored.state
    return f"{state.phase.value} {state.canary_weight}%" if state.phase.active else state.phase.value


def gather(kube: Cluster, repo_root: Path, environment: str, *, state_namespace: str, head: str | None = None,
           field_manager: str = labels.MANAGER, upstream: Any = None) -> EnvironmentStatus:
    """Read one environment's status from the cluster and the repository. `head`: the revision 'synced' is
    measured against; None: the upstream branch's head as the remote has it now (`upstream`, a
    source.git.UpstreamHead, asked for when not given), else the checkout's HEAD."""

    root = source.toplevel(repo_root)
    head_state = desired_at(root, head or "HEAD", [environment])
    if environment in head_state.env_errors:
        raise head_state.env_errors[environment]
    namespace = head_state.catalog.environments[environment].namespace
    status = EnvironmentStatus(environment, namespace, head=head_state.revision, local_head=source.head_sha(root))
    if head is None:
        upstream = upstream if upstream is not None else source.upstream_head(root)
        status.source = upstream.describe()
        if upstream.revision is not None:
            status.head = upstream.revision
    else:
        status.source = f"--head {head}"
    state = kube.get(state_ref(environment, state_namespace))
    record = Record.of(state)
    status.suspended = suspended(state)
    if record is not None:
        status.policy = record.policy
        status.deployed = record.commit or None
        status.deployed_at, status.ok, status.pinned_head = record.time, record.ok, record.pinned_head
        if record.failure is not None:
            status.failure, status.failed_commit = record.failure.describe(), record.failure.commit
    inventory = load_inventory(kube, environment, namespace)
    owned: dict[str, list[ObjectRef]] = {}
    for ref, entry in inventory.entries.items():
        owned.setdefault(entry.model or "-", []).append(ref)
    for model, refs in sorted(owned.items()):
        live = {ref: kube.get(ref) for ref in sorted(refs, key=str)}
        # a progressing Deployment is looked at through its Pods: a crash loop or an image that cannot be
        # pulled is degraded now, with the container's reason, not at the progress deadline
        by_ref = with_pods(kube, {ref: health_of(obj) for ref, obj in live.items()},
                           {ref: obj for ref, obj in live.items() if obj is not None})
        healths = list(by_ref.values())
        worst = aggregate(healths)
        status.models[model] = ModelStatus(model, objects=len(refs), health=worst.value,
                                           health_message=next((h.message for h in healths if h.status is worst), ""),
                                           canary=_canary(kube, model, namespace),
                                           resources={str(r): ResourceStatus(str(r), health=h.status.value,
                                                                             message=h.message)
                                                      for r, h in by_ref.items()})
    if status.deployed:
        try:
            deployed = desired_at(root, status.deployed, [environment])
        except ReconcilerError as exc:
            status.error = (f"the deployed commit {status.deployed[:12]} cannot be rendered from this checkout "
                            f"({exc.message}); `git fetch` it to see drift")
            return status
        if environment in deployed.env_errors:
            return status
        diff = diff_environment(kube, deployed, environment, field_manager=field_manager)
        for obj in diff.objects:
            shown = status.models.setdefault(obj.model or "-", ModelStatus(obj.model or "-"))
            where = f"{obj.ref.kind}/{obj.ref.name}"
            resource = shown.resources.setdefault(str(obj.ref), ResourceStatus(
                str(obj.ref), health="missing" if obj.action == "create" else "unknown"))
            resource.sync = {"create": "Missing", "prune": "Extra", "error": "Unknown"}.get(
                obj.action, "OutOfSync" if obj.changes else "Synced")
            if obj.action == "create":
                shown.drift.append(f"{where}: missing in the cluster")
            elif obj.action == "prune":
                shown.drift.append(f"{where}: in the cluster, no longer in the deployed commit")
            elif obj.action == "error":
                shown.error = obj.error
            shown.drift.extend(f"{where}: {c}" for c in obj.changes)
        for name, error in diff.model_errors.items():
            status.models.setdefault(name, ModelStatus(name)).error = error
    return status
