"""The reconciler's Prometheus metrics (served on /metrics by reconciler.run.webhook)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from reconciler.run.record import Record


class Metrics:
    """Prometheus metrics of one reconciler process (own registry: several can live in one test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter("reconciler_reconcile_total", "Reconcile passes by environment and result",
                                  ["environment", "result"], registry=self.registry)
        self.failures = Counter("reconciler_reconcile_failures_total", "Passes that failed for the whole environment, "
                                "by the stage that failed them (reconciler.run.reconcile.Stage)",
                                ["environment", "stage"], registry=self.registry)
        self.objects = Counter("reconciler_objects_total", "Objects by environment and action",
                               ["environment", "action"], registry=self.registry)
        self.duration = Histogram("reconciler_reconcile_duration_seconds", "Duration of one sync pass",
                                  ["environment"], registry=self.registry,
                                  buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "Unix time of the last fully successful pass", ["environment"],
                                  registry=self.registry)
        self.leader = Gauge("reconciler_leader", "1 while this replica holds the Lease", registry=self.registry)
        self.webhooks = Counter("reconciler_webhook_requests_total", "Webhook deliveries by outcome",
                                ["outcome"], registry=self.registry)
        self.polls = Counter("reconciler_git_fetch_total", "git fetches by result", ["result"],
                             registry=self.registry)
        self.ready = Gauge("reconciler_environment_ready", "1 when the environment's newest commit is applied, "
                           "0 while its last pass failed for the whole environment", ["environment"],
                           registry=self.registry)
        self.last_failure = Gauge("reconciler_last_failure_timestamp_seconds",
                                  "Unix time of the last whole-environment failure", ["environment"],
                                  registry=self.registry)
        self.failure = Gauge("reconciler_environment_failure_info", "The environment's current failure "
                             "(one series per environment, removed when a pass completes)",
                             ["environment", "commit", "error"], registry=self.registry)
        self.applied = Gauge("reconciler_applied_commit_info", "The commit last applied to the environment",
                             ["environment", "commit"], registry=self.registry)
        self._failure_labels: dict[str, tuple[str, str]] = {}
        self._applied_labels: dict[str, str] = {}

    def observe(self, result: Any) -> str:
        outcome = "failed" if result.failed else ("success" if result.ok else "degraded")
        self.reconciles.labels(result.environment, outcome).inc()
        if result.stage:
            self.failures.labels(result.environment, result.stage).inc()
        self.duration.labels(result.environment).observe(result.duration)
        for action, n in result.summary().counts.items():
            self.objects.labels(result.environment, action.value).inc(n)
        if outcome == "success":
            self.last_success.labels(result.environment).set(time.time())
        return outcome

    def record(self, environment: str, record: Record, at: float) -> None:
        """Mirror the environment's status (applied commit, current failure) in gauges."""
        failure = record.failure
        old = self._failure_labels.pop(environment, None)
        if old is not None:
            self.failure.remove(environment, *old)
        if failure is not None:
            labels_ = (failure.commit, failure.error.strip().splitlines()[0][:200] if failure.error.strip() else "")
            self.failure.labels(environment, *labels_).set(1)
            self._failure_labels[environment] = labels_
            self.last_failure.labels(environment).set(at)
        self.ready.labels(environment).set(0 if failure is not None else 1)
        if record.commit and self._applied_labels.get(environment) != record.commit:
            if environment in self._applied_labels:
                self.applied.remove(environment, self._applied_labels[environment])
            self.applied.labels(environment, record.commit).set(1)
            self._applied_labels[environment] = record.commit

    def exposition(self) -> tuple[str, bytes]:
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)
