"""One reconcile pass of one environment, top to bottom, and the one way its end is recorded.

`reconcile_pass` is the pass: `reconciler run` (the loop, reconciler.run.loop), `reconciler sync` and
`reconciler rollback` all run it. As kustomize-controller's ``reconcile()``, each step that can fail names its
stage (Flux's ArtifactFailed, BuildFailed, HealthCheckFailed), and a stage that fails for the whole environment
ends the pass before anything is written:

==========  =============================================================================================
source      the revision resolved to a commit sha, once; its signature verified (when a policy is set)
catalog     the environment's and the models' specs at that sha
render      the desired state at that sha: image lock, kustomize, schema validation (reconciler.desired.state)
target      the client talks to this environment's cluster (reconciler.cluster.identity)
secrets     SOPS Secrets decrypted in memory (a model whose Secret cannot be opened fails alone)
rollout     one canary tick per model with canaries on (a model whose rollout cannot be driven fails alone)
sync        server-side dry run, apply, prune, inventory (reconciler.sync.engine)
report      a canary that ended is reported where its change came from (never fails the pass)
==========  =============================================================================================

Plan and build run before a merge (the PR check, the merge build); the pass reads what they left behind: the
image lock the build committed. `record_pass` then writes the end of the pass where people look: the status
ConfigMap (with the failed stage), the history (a pass that applied something), the commit status and /metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from reconciler.catalog.effective import effective_canary
from reconciler.catalog.load import Catalog, unscraped_metrics
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.cluster.identity import verify_cluster
from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError, ReconcilerError, SecretError, SignatureError, SpecError
from reconciler.desired.state import desired_at
from reconciler.render.environment import EnvironmentRender
from reconciler.render.secrets import age_key, unseal
from reconciler.report.github import report_finished
from reconciler.results import ObjectRef
from reconciler.rollout.controller import RolloutResult, reconcile_rollout
from reconciler.rollout.outage import shared_outage
from reconciler.rollout.prometheus import PrometheusAnalysis, PrometheusClient
from reconciler.run.metrics import Metrics
from reconciler.run.events import record_event
from reconciler.run.history import Revision
from reconciler.run.record import Failure, Record, record_history, save_record
from reconciler.source import git as source
from reconciler.source.verify import verify_commit
from reconciler.sync.engine import SyncResult, sync_environment
from reconciler.sync.planner import SyncOptions


log = logging.getLogger("reconciler.run.reconcile")


class Stage(str, Enum):
    """Where a pass failed, in the order the pass runs them."""

    source = "source"
    catalog = "catalog"
    render = "render"
    target = "target"
    secrets = "secrets"
    rollout = "rollout"
    sync = "sync"
    report = "report"


class StageFailed(Exception):
    """Ends a pass: the stage that failed for the whole environment, and why."""

    def __init__(self, stage: Stage, error: ReconcilerError, namespace: str = "", commit: str | None = None) -> None:
        super().__init__(str(error))
        self.stage, self.error, self.namespace, self.commit = stage, error, namespace, commit


def reconcile_pass(kube: Cluster, repo: Path, rev: str | None, environment: str,
                   options: SyncOptions = SyncOptions(), *, environ: Mapping[str, str] | None = None) -> SyncResult:
    """Bring ``environment`` to revision ``rev`` of the repository: the whole pass, top to bottom.

    A stage that fails for the whole environment ends the pass with ``result.error`` and ``result.stage``
    set, before anything is written; models that fail alone (render, secrets, rollout) are skipped with
    their errors and the others go on. ``rev`` None is the working tree (no signature to verify)."""
    started = time.monotonic()
    try:
        result = _pass(kube, Path(repo), rev, environment, options, environ)
    except StageFailed as failed:
        result = SyncResult(environment, failed.namespace, dry_run=options.dry_run, error=failed.error,
                            commit=failed.commit, stage=failed.stage.value)
    result.duration = time.monotonic() - started
    return result


def _pass(kube: Cluster, repo: Path, rev: str | None, environment: str, options: SyncOptions,
          environ: Mapping[str, str] | None) -> SyncResult:
    # source: one sha for the whole pass; a commit not signed by a trusted key is not even rendered
    sha = _stage(Stage.source, lambda: resolve_revision(repo, rev, options.verify))
    # catalog + render: the desired state at that sha (an environment whose spec or overlay is broken fails whole)
    state = _stage(Stage.render, lambda: desired_at(repo, sha, [environment]), commit=sha)
    if environment in state.env_errors:
        error = state.env_errors[environment]
        raise StageFailed(Stage.catalog if isinstance(error, SpecError) else Stage.render, error, commit=state.revision)
    env = state.catalog.environments[environment]
    # target: before anything is written, the client must talk to this environment's cluster
    _stage(Stage.target, lambda: verify_cluster(kube, environment, env.cluster, options.target),
           namespace=env.namespace, commit=state.revision)
    desired = state.objects_by_model(environment)
    errors: dict[str, Any] = dict(state.errors_by_model(environment))
    failed_at = dict.fromkeys(errors, Stage.render)  # the stage each failed model failed at
    # secrets: each model's SOPS Secrets, decrypted in memory (a model fails alone)
    unseal_secrets(state.renders[environment], env, desired, errors)
    failed_at.update((model, Stage.secrets) for model in errors if model not in failed_at)
    # rollout: one canary tick per model with canaries on, before anything is applied (a model fails alone)
    rollouts: list[Any] = []
    protect: dict[ObjectRef, str] = {}
    if options.rollouts and env.canary and not options.dry_run:
        rollouts = canary_ticks(kube, state.catalog, env, desired, errors, protect, options)
    failed_at.update((model, Stage.rollout) for model in errors if model not in failed_at)
    # sync: validate, apply, prune, inventory, health (reconciler.sync.engine)
    result = sync_environment(kube, environment, env.namespace, desired, errors=errors, options=options,
                              protect=protect)
    result.commit = state.revision
    if result.error is not None:
        result.stage = Stage.sync.value
    elif environment_failure(result) is not None:  # every model failed: the pass fails at the first one's stage
        result.stage = failed_at.get(min(result.model_errors), Stage.sync).value
    result.rollouts = rollouts
    unscraped = unscraped_metrics(state.catalog, env)  # monitoring: none, while models read scraped metrics
    if unscraped is not None:
        result.notes.append(f"warning: {unscraped}")
    if options.rollouts and env.canary and options.dry_run:
        result.notes.append("dry run: canaries were not evaluated; a changed model would start a canary "
                            "rather than replace its stable version as shown")
    outage, messages = shared_outage(rollouts)  # one Prometheus for the environment: its outage is reported once
    if outage is not None:
        result.notes.append(outage.line())
    for rollout in rollouts:
        result.objects.extend(rollout.results)
        if messages.get(rollout.model):
            result.notes.append(f"canary {rollout.model}: {messages[rollout.model]}")
    # report: a canary that ended is reported to GitHub (RECONCILER_GITHUB_TOKEN + GITHUB_REPOSITORY set)
    if environ is not None and not options.dry_run:
        result.notes.extend(report_finished(result, environ, repo))
    return result


def _stage(stage: Stage, step: Callable[[], Any], *, namespace: str = "", commit: str | None = None) -> Any:
    try:
        return step()
    except ReconcilerError as exc:
        raise StageFailed(stage, exc, namespace, commit) from None


def resolve_revision(repo: Path, rev: str | None, policy: Any) -> str | None:
    """The commit sha of ``rev`` (None: the working tree), its signature verified when a policy is set."""
    if rev is None:
        if policy is not None and policy.enabled:
            raise SignatureError("the working tree has no signature to verify",
                                 fix="commit (signed) and sync that revision with --rev")
        return None
    sha = source.resolve_sha(repo, rev)
    if policy is not None and policy.enabled:
        verify_commit(source.toplevel(repo), sha, policy)
    return sha


def unseal_secrets(render: EnvironmentRender, env_spec: EnvironmentSpec, desired: dict[str, list[dict]], errors: dict[str, Any]) -> None:
    """Decrypt each model's SOPS Secrets in memory and add them to its desired objects.

    Fails closed per model: a missing or wrong key, ciphertext or an empty Secret moves the model to the
    errors (its objects are skipped, never pruned); the other models go on."""
    key: str | None = None
    for name, model in sorted(render.models.items()):
        if not model.secrets or name not in desired:
            continue
        try:
            key = key if key is not None else age_key(env_spec)
            secrets = [unseal(sealed, key, env_spec) for sealed in model.secrets]
        except SecretError as exc:
            errors[name] = str(exc)
            desired.pop(name)
            continue
        desired[name] = [*desired[name], *secrets]


def canary_ticks(kube: Cluster, catalog: Catalog, env: EnvironmentSpec, desired: dict[str, list[dict]],
                 errors: dict[str, Any], protect: dict[ObjectRef, str], options: SyncOptions) -> list[RolloutResult]:
    """One canary controller tick per model with canaries on, before the sync applies anything.

    The tick writes nothing: it returns the model's objects for this pass (rendered ones as the
    rollout needs them, plus the canary Deployment/Service, the route and the rollout-state
    ConfigMap), which replace ``desired[model]``, and the owned objects it holds back (the stable
    Deployment on its revision, the old pool of a cross-pool move), which are protected from
    pruning. A model whose rollout cannot be driven is not synced at all: syncing it would replace
    the stable version without analysis.
    """
    results: list[RolloutResult] = []
    if kube.get(ObjectRef("v1", "Namespace", None, env.namespace)) is None:
        return results  # nothing is live yet: a first deployment has no stable version to protect
    prometheus = PrometheusClient(options.prometheus_url, deadline=options.prometheus_deadline) if options.prometheus_url else None
    try:
        for model in sorted(desired):
            rollout = _canary_tick(kube, catalog, env, model, desired, errors, prometheus)
            if rollout is not None:
                # the rollout's objects (canary Deployment/Service, route, state ConfigMap) replace the
                # model's rendered ones: validated, applied, owned and pruned like every other object
                desired[model] = rollout.objects
                protect.update(rollout.protect)
                results.append(rollout)
    finally:
        if prometheus is not None:
            prometheus.close()
    return results


def _canary_tick(kube: Cluster, catalog: Catalog, env: EnvironmentSpec, model: str, desired: dict[str, list[dict]],
                 errors: dict[str, Any], prometheus: PrometheusClient | None) -> RolloutResult | None:
    """The rollout of one model, or None when it has canaries off, errors, or its rollout failed (recorded in errors)."""
    entry = catalog.models.get(model)
    if entry is None or model in errors:
        return None
    cfg = effective_canary(entry.spec, env)
    if not cfg.enabled:
        return None
    analysis = PrometheusAnalysis(prometheus, queries=cfg.queries) if prometheus is not None else None
    try:
        return reconcile_rollout(kube, entry, env, desired[model], time.time(), pools=catalog.pools, analysis=analysis)
    except (ReconcilerError, KubeError) as exc:
        errors[model] = [f"canary: {exc}"]
        return None


# -- the end of a pass, where people look ----------------------------------------------------------

APPLIED = frozenset({"created", "configured", "unchanged", "pruned"})


def environment_failure(result: SyncResult) -> str | None:
    """Why nothing of the commit was applied to the environment, or None when some of it was. Pure.

    Either the environment failed as a whole (a stage of the pass), or every model failed (typically a
    broken overlay patch): then nothing of that commit runs, so it must not be recorded as applied.
    """
    if result.error is not None:
        return str(result.error)
    if result.model_errors and not any(r.action.value in APPLIED for r in result.objects):
        first = sorted(result.model_errors.items())
        lines = [f"every model failed; {name}: {errors[0] if errors else 'failed'}" for name, errors in first[:1]]
        more = f" (and {len(first) - 1} more models)" if len(first) > 1 else ""
        return lines[0] + more
    return None


def next_record(recorded: Record | None, commit: str, result: SyncResult, stamp: str, *,
                handles_request: bool = True, pinned_head: str = "", policy: str | None = None) -> Record:
    """The environment's status after a pass of ``commit``. Pure.

    A pass that applied nothing (environment_failure) keeps the applied commit and records the failure with
    its stage; any other pass records ``commit`` as applied. ``handles_request``: the pass answers a pending
    `reconciler reconcile ENV` (the loop's passes do; a manual sync does not). ``pinned_head``: the rollback
    pin to keep (the loop keeps it while it re-syncs the pinned commit; any other pass ends it). ``policy``:
    how `run` syncs (record.sync_policy); None keeps the recorded one (a manual sync)."""
    error = environment_failure(result)
    requested = recorded.requested if recorded else ""
    handled = requested if handles_request else (recorded.handled if recorded else "")
    policy = policy if policy is not None else (recorded.policy if recorded else "")
    if error is not None:
        applied = recorded if recorded is not None else Record("", False)
        return Record(applied.commit, applied.ok, applied.time, applied.summary,
                      Failure(commit, error, stamp, result.stage or Stage.sync.value), applied.pinned_head,
                      requested, handled, policy)
    return Record(commit, result.ok, stamp, str(result.summary()), pinned_head=pinned_head, requested=requested,
                  handled=handled, policy=policy)


def record_pass(kube: Cluster, environment: str, state_namespace: str, commit: str, result: SyncResult,
                recorded: Record | None, *, now: datetime, action: str = "sync", handles_request: bool = True,
                pinned_head: str = "", policy: str | None = None, by: str = "`reconciler run`", reason: str = "",
                metrics: Metrics | None = None, notify: Any = None) -> tuple[Record, Revision | None]:
    """Write the end of a pass where people look, the same way for `run` and `sync`: the status ConfigMap
    (the applied commit, or the failure with its stage, which never replaces the applied commit), the history
    (a pass that applied something), an Event (reconciler events ENV), /metrics and the commit status. Best effort: a write that fails is
    logged, never raised (the pass is over). Returns the new record and the history entry (None: none written)."""
    record = next_record(recorded, commit, result, now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         handles_request=handles_request, pinned_head=pinned_head, policy=policy)
    failed = environment_failure(result) is not None
    if metrics is not None:
        metrics.observe(result)
        metrics.record(environment, record, now.timestamp())
    try:
        save_record(kube, environment, state_namespace, record)
    except KubeError as exc:
        log.warning("%s: could not record the pass of %s: %s", environment, commit[:12], exc)
    entry = None if failed else record_history(kube, environment, state_namespace, record, action)
    why = f" ({reason})" if reason else ""
    if failed and record.failure is not None:
        record_event(kube, environment, state_namespace, "SyncFailed",
                     f"{by} could not sync {commit[:12]}{why}: {record.failure.describe()}", warning=True, now=now)
    else:
        record_event(kube, environment, state_namespace, "Synced" if result.ok else "SyncedWithProblems",
                     f"{by} synced {commit[:12]}{why}: {record.summary}", warning=not result.ok, now=now)
    if notify is not None:
        notify.finished(environment, commit, result, record.failure.describe() if failed and record.failure else None)
    return record, entry
