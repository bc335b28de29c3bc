"""Sync a git revision: render the environment at that commit (reconciler.plan.desired), run the
executor, and drive the canary rollout of each changed model in a canary environment.

This is where sync meets the stages below it (plan, render, rollout); the executor itself
(reconciler.sync.engine) only knows desired objects.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from reconciler.rollout.outage import shared_outage
from reconciler.sync.engine import SyncResult, sync_environment
from reconciler.sync.planner import SyncOptions
from reconciler.catalog.effective import effective_canary
from reconciler.cluster.identity import verify_cluster
from reconciler.errors import ReconcilerError
from reconciler.errors import SecretError
from reconciler.errors import SignatureError
from reconciler.plan.desired import desired_at
from reconciler.render.secrets import age_key, unseal
from reconciler.rollout.controller import reconcile_rollout
from reconciler.rollout.prometheus import PrometheusAnalysis
from reconciler.rollout.prometheus import PrometheusClient
from reconciler.source import git as source
from reconciler.source.verify import verify_commit


def sync_commit(kube: Cluster, repo_root: Any, rev: str | None, environment: str,
                options: SyncOptions = SyncOptions()) -> SyncResult:
    """Render ``environment`` at git revision ``rev`` of the repository and sync it.

    An environment that cannot be rendered at all (its spec or overlay is broken) is an
    environment-wide error; models that fail to render are skipped with their errors."""

    started = time.monotonic()
    try:  # first of all: a commit that is not signed by a trusted key is not even rendered
        verified = _verified_commit(repo_root, rev, options.verify)
    except ReconcilerError as exc:
        return SyncResult(environment, "", dry_run=options.dry_run, error=exc,
                          duration=time.monotonic() - started)
    if verified is not None:
        rev = verified
    try:
        state = desired_at(repo_root, rev, [environment])
    except ReconcilerError as exc:
        return SyncResult(environment, "", dry_run=options.dry_run, error=exc,
                          duration=time.monotonic() - started)
    if environment in state.env_errors:
        return SyncResult(environment, "", dry_run=options.dry_run, error=state.env_errors[environment],
                          duration=time.monotonic() - started)
    env_spec = state.catalog.environments[environment]
    try:  # before anything is written: the client must talk to this environment's cluster
        verify_cluster(kube, environment, env_spec.cluster, options.target)
    except ReconcilerError as exc:
        return SyncResult(environment, env_spec.namespace, dry_run=options.dry_run, error=exc,
                          duration=time.monotonic() - started, commit=state.revision)
    desired = state.objects_by_model(environment)
    errors: dict[str, Any] = dict(state.errors_by_model(environment))
    _unseal_secrets(state.renders[environment], env_spec, desired, errors)
    rollouts = []
    protect: dict[ObjectRef, str] = {}
    if options.rollouts and env_spec.canary and not options.dry_run:
        rollouts = _canary_ticks(kube, state.catalog, env_spec, desired, errors, protect, options)
    result = sync_environment(kube, environment, env_spec.namespace, desired, errors=errors, options=options,
                              protect=protect)
    result.commit = state.revision
    result.rollouts = rollouts
    if options.rollouts and env_spec.canary and options.dry_run:
        result.notes.append("dry run: canaries were not evaluated; a changed model would start a canary "
                            "rather than replace its stable version as shown")
    outage, messages = shared_outage(rollouts)  # one Prometheus for the environment: its outage is reported once
    if outage is not None:
        result.notes.append(outage.line())
    for rollout in rollouts:
        result.objects.extend(rollout.results)
        if messages.get(rollout.model):
            result.notes.append(f"canary {rollout.model}: {messages[rollout.model]}")
    return result


def _verified_commit(repo_root: Any, rev: str | None, policy: Any) -> str | None:
    """The commit sha of `rev` once its signature is verified; None when verification is off."""

    if policy is None or not policy.enabled:
        return None
    if rev is None:
        raise SignatureError("the working tree has no signature to verify",
                             fix="commit (signed) and sync that revision with --rev")
    repo = source.open_repo(repo_root)
    sha = source.resolve(repo, rev)
    verify_commit(Path(repo.working_dir), sha, policy)
    return sha


def _unseal_secrets(render: Any, env_spec: Any, desired: dict[str, list[dict]], errors: dict[str, Any]) -> None:
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


def _canary_ticks(kube: Cluster, catalog: Any, env: Any, desired: dict[str, list[dict]], errors: dict[str, Any],
                  protect: dict[ObjectRef, str], options: SyncOptions) -> list[Any]:
    """One canary controller tick per model with canaries on, before the sync applies anything.

    The tick writes nothing: it returns the model's objects for this pass (rendered ones as the
    rollout needs them, plus the canary Deployment/Service, the route and the rollout-state
    ConfigMap), which replace ``desired[model]``, and the owned objects it holds back (the stable
    Deployment on its revision, the old pool of a cross-pool move), which are protected from
    pruning. A model whose rollout cannot be driven is not synced at all: syncing it would replace
    the stable version without analysis.
    """

    results: list[Any] = []
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


def _canary_tick(kube: Cluster, catalog: Any, env: Any, model: str, desired: dict[str, list[dict]],
                 errors: dict[str, Any], prometheus: Any) -> Any:
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

