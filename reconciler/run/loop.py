"""The long-running reconciler behind `reconciler run` (the commands are in reconciler.cli.run / .sync).

The loop is thin; the decisions are pure and tested on their own:

* :func:`next_step` decides what to reconcile for one environment, given the status recorded in the
  cluster and the branch's head: nothing (up to date) or the head itself, never the intermediate
  merges (as kustomize-controller reconciles the source's latest revision);
* :func:`reconcile_once` runs the pass (reconciler.run.reconcile.reconcile_pass) and records the applied
  commit, or the failure (commit, stage, error, time), with record_pass: the ConfigMap
  ``reconciler-state-<env>``, the history, ``/metrics`` and the commit status;
* :func:`run` polls the git remote (GitPython fetch) every ``interval`` seconds, or at once when a
  signed GitHub push webhook arrives, holds a Lease so only one replica acts, and serves
  ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol


from reconciler.cluster.protocol import Cluster
from reconciler import labels
from reconciler.errors import KubeError, ReconcilerError, SourceError
from reconciler.source.git import GitMirror
from reconciler.run.metrics import Metrics
from reconciler.run.reconcile import environment_failure, reconcile_pass, record_pass
from reconciler.run.record import Record, state_ref, suspended, sync_policy
from reconciler.run.health import HealthServer
from reconciler.run.lease import LeaderGuard, LeaseKeeper, LeaseLock
from reconciler.run.webhook import ReconcilerHTTPServer
from reconciler.sync.planner import SyncOptions

log = logging.getLogger("reconciler.run.loop")

# -- git history -------------------------------------------------------------------------------

class History(Protocol):
    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...

    def between(self, base: str, head: str) -> list[str]:
        """First-parent commits after ``base`` up to ``head``, oldest first."""
        ...


# -- decisions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    commit: str
    reason: str


def next_step(recorded: Record | None, head: str, history: History, *, resync: bool = False) -> Step | None:
    """What to reconcile for one environment: the newest commit of the branch, or nothing. Pure.

    Intermediate merges are never replayed (the desired state is the head; history is for reports), so
    a broken commit followed by its fix costs one failed pass, not a stuck environment. A failed head
    is retried on every pass until a newer commit supersedes it.
    """
    if recorded is not None and recorded.pinned_head and recorded.commit:
        holds, pinned = rolled_back_step(recorded, head, history)
        if holds:
            return pinned
    if recorded is not None and recorded.on_demand:
        return Step(head, f"on-demand reconcile requested at {recorded.requested}")
    if recorded is not None and recorded.failure is not None and recorded.failure.commit == head:
        return Step(head, f"retrying {head[:12]}: the environment failed at {recorded.failure.time}")
    if recorded is None or not recorded.commit:
        return Step(head, "first reconcile of this environment")
    if recorded.commit == head:
        if not recorded.ok:
            return Step(head, "retrying: the last pass of this commit did not fully succeed")
        return Step(head, "periodic resync") if resync else None
    superseded = (f"; supersedes failed {recorded.failure.commit[:12]}" if recorded.failure is not None else "")
    if not history.is_ancestor(recorded.commit, head):
        return Step(head, f"history rewritten (force-push): {recorded.commit[:12]} is not an ancestor of "
                          f"{head[:12]}; reconciling the head fully{superseded}")
    behind = len(history.between(recorded.commit, head))
    skipped = f" ({behind - 1} intermediate commits not replayed)" if behind > 1 else ""
    return Step(head, f"newest commit of the branch, {behind} after {recorded.commit[:12]}{skipped}{superseded}")


def rolled_back_step(recorded: Record, head: str, history: History) -> tuple[bool, Step | None]:
    """After `reconciler rollback`: stay at the rolled-back commit (re-sync it on request or after a
    failed pass) until the branch has a commit newer than the one rolled back from. Pure.
    Returns (whether the pin still holds, the step while it holds)."""
    if head != recorded.pinned_head and not history.is_ancestor(head, recorded.pinned_head):
        return False, None
    if recorded.on_demand or not recorded.ok or (recorded.failure is not None and recorded.failure.commit == recorded.commit):
        return True, Step(recorded.commit, f"rolled back to {recorded.commit[:12]}: re-syncing it (auto-sync waits "
                                           f"for a commit newer than {recorded.pinned_head[:12]})")
    return True, None


# -- one pass ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    environment: str
    commit: str
    reason: str
    result: Any  # SyncResult

    def as_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "reason": self.reason, **self.result.as_dict()}


SyncFn = Callable[[Cluster, Path, str, str, Any], Any]  # (kube, repo, commit, environment, options) -> SyncResult

def _default_sync(kube: Cluster, repo: Path, commit: str, environment: str, options: Any) -> Any:
    return reconcile_pass(kube, repo, commit, environment, options)


def reconcile_once(kube: Cluster, repo: Path, head: str, history: History, environments: Iterable[str], *,
                   state_namespace: str, options: Any = None, sync: SyncFn = _default_sync,
                   resync: Callable[[str], bool] = lambda env: False, metrics: Metrics | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                   notify: Any = None) -> list[Outcome]:
    """Bring every environment to ``head``, the newest commit of the watched branch, and record the result.

    A pass that fails for the whole environment (unrenderable, refused commit, API unavailable) keeps
    the applied commit and records the failure (commit, error, time) in the status ConfigMap and the
    metrics; the next pass retries it, or tries a newer head as soon as one arrives. A pass where only
    some models failed is recorded as applied with ok=false (retried at the same head).
    """

    options = options or SyncOptions()
    policy = sync_policy(options)
    outcomes: list[Outcome] = []
    for env in environments:
        try:
            state = kube.get(state_ref(env, state_namespace))
        except KubeError as exc:
            log.warning("cannot read the state of %s: %s", env, exc)
            continue
        if suspended(state):
            log.info("%s is suspended (%s): not reconciled until `reconciler resume %s`", env, suspended(state), env)
            continue
        recorded = Record.of(state)
        step = next_step(recorded, head, history, resync=resync(env))
        if step is None:
            continue
        log.info("%s: reconciling %s (%s)", env, step.commit[:12], step.reason)
        if notify is not None:
            notify.started(env, step.commit)
        result = sync(kube, repo, step.commit, env, options)
        outcomes.append(Outcome(env, step.commit, step.reason, result))
        error = environment_failure(result)
        if error is not None:
            log.warning("%s at %s failed at %s: %s", env, step.commit[:12], result.stage or "sync", error)
        keep_pin = recorded is not None and recorded.pinned_head and recorded.commit == step.commit
        record_pass(kube, env, state_namespace, step.commit, result, recorded, now=now(), action="sync",
                    pinned_head=recorded.pinned_head if keep_pin and recorded else "", policy=policy,
                    by="`reconciler run`", reason=step.reason, metrics=metrics, notify=notify)
    return outcomes


# -- the loop ------------------------------------------------------------------------------------

@dataclass
class RunConfig:
    repo_url: str
    branch: str
    workdir: Path
    environments: list[str]
    state_namespace: str
    interval: float = 60.0
    resync_every: float = 600.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_name: str = "model-gitops-reconciler"
    lease_duration: int = 15
    listen: tuple[str, int] | None = ("127.0.0.1", 8080)  # the in-cluster manifest binds 0.0.0.0
    probe_listen: tuple[str, int] | None = None  # /healthz and /readyz apart from webhooks (`run`: 127.0.0.1:8081)
    webhook_secret: bytes | None = None
    metrics_token: str | None = None  # when set, /metrics wants Authorization: Bearer <token>


class Reconciler:
    """The running reconciler: git mirror + lease + HTTP endpoint + the loop. ``stop()`` ends it."""

    def __init__(self, kube: Cluster, config: RunConfig, options: Any = None, *, sync: SyncFn = _default_sync,
                 notify: Any = None) -> None:
        self.kube = kube
        self.notify = notify  # reconciler.run.notify.Notifier: commit statuses and webhook messages
        self.config = config
        self.options = options
        self.sync = sync
        self.metrics = Metrics()
        self.mirror = GitMirror(config.repo_url, config.branch, config.workdir)
        self.lease = LeaseLock(kube, config.lease_name, config.state_namespace, config.identity,
                               duration=config.lease_duration)
        self.keeper = LeaseKeeper(self.lease)
        self.guarded = LeaderGuard(kube, self.lease)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_pass: float | None = None
        self.last_resync: dict[str, float] = {}
        self.outcomes: list[Outcome] = []
        self.http = None
        self.probes: Any = None  # reconciler.run.health.HealthServer

    def on_push(self, push: Any) -> None:
        self.wake.set()

    def health(self) -> tuple[bool, str]:
        # alive as long as the loop keeps turning (a follower turns too, it just does not write)
        stale = self.last_pass is not None and time.monotonic() - self.last_pass > 3 * self.config.interval + 60
        return (not stale, "stale: the loop has not run recently" if stale else
                f"ok ({'leader' if self.lease.held else 'follower'})")

    def ready(self) -> tuple[bool, str]:
        """Ready once the loop has started turning, and as long as it is alive."""
        if self.last_pass is None:
            return False, "starting: the loop has not turned yet"
        return self.health()

    def start_http(self) -> Any:
        """The webhook/metrics endpoint, and the probe endpoint on its own port (reconciler.run.health)."""

        if self.config.probe_listen is not None:
            self.probes = HealthServer(self.config.probe_listen, live=self.health, ready=self.ready).start()
        if self.config.listen is None:
            return None
        self.http = ReconcilerHTTPServer(self.config.listen, secret=self.config.webhook_secret,
                                         branch=self.config.branch, on_push=self.on_push,
                                         metrics=self.metrics.exposition, health=self.health,
                                         count=lambda o: self.metrics.webhooks.labels(o).inc(),
                                         metrics_token=self.config.metrics_token).start()
        return self.http

    def _resync_due(self, env: str) -> bool:
        last = self.last_resync.get(env)
        return last is None or time.monotonic() - last >= self.config.resync_every

    def tick(self) -> list[Outcome]:
        """One turn: renew/acquire the lease, fetch, reconcile if leader."""
        leader = self.lease.try_acquire_or_renew()
        self.metrics.leader.set(1 if leader else 0)
        self.last_pass = time.monotonic()
        if not leader:
            return []
        try:
            head = self.mirror.fetch()
            self.metrics.polls.labels("ok").inc()
        except SourceError as exc:
            self.metrics.polls.labels("failed").inc()
            log.warning("%s", exc)
            return []
        due = {env for env in self.config.environments if self._resync_due(env)}
        outcomes = reconcile_once(self.guarded, self.mirror.path, head, self.mirror, self.config.environments,
                                  state_namespace=self.config.state_namespace, options=self.options,
                                  sync=self.sync, resync=lambda env: env in due, metrics=self.metrics,
                                  notify=self.notify)
        for env in due:
            self.last_resync[env] = time.monotonic()
        self.outcomes.extend(outcomes)
        return outcomes

    def watch_requests(self, every: float = 5.0) -> None:
        """Wake the loop when `reconciler reconcile ENV` annotates a state ConfigMap (until stop()).

        One labelled list of the state ConfigMaps every `every` seconds: a cheap read, so a request
        is acted on within seconds instead of at the next poll of git."""
        selector = f"{labels.DOMAIN}/role=state"
        while not self.stopping.is_set():
            try:
                items = self.kube.list("v1", "ConfigMap", self.config.state_namespace, label_selector=selector)
                if any((record := Record.of(item)) is not None and record.on_demand for item in items):
                    self.wake.set()
            except ReconcilerError as exc:
                log.debug("reading reconcile requests failed: %s", exc)
            self.stopping.wait(every)

    def run(self, max_ticks: int | None = None, *, watch_requests: bool = True) -> None:
        self.keeper.start()
        if watch_requests:
            threading.Thread(target=self.watch_requests, name="reconcile-requests", daemon=True).start()
        ticks = 0
        try:
            while not self.stopping.is_set():
                try:
                    self.tick()
                except ReconcilerError as exc:  # KubeError, SourceError...: log, retry next turn
                    log.warning("reconcile pass failed: %s", exc)
                ticks += 1
                if max_ticks is not None and ticks >= max_ticks:
                    break
                self.wake.wait(self.config.interval)
                self.wake.clear()
        finally:
            self.keeper.stop(release=True)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def stop_http(self) -> None:
        for server in (self.http, self.probes):
            if server is not None:
                server.stop()
