"""Health of custom resources whose controllers report little or nothing (pure)."""

from __future__ import annotations

from reconciler.sync.health import HealthStatus, health_of


def _route(parents=None, generation=2):
    obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "m", "namespace": "n", "generation": generation}}
    if parents is not None:
        obj["status"] = {"parents": parents}
    return obj


def _parent(*conditions):
    return {"parentRef": {"name": "models"}, "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
            "conditions": [dict(c) for c in conditions]}


def test_a_podmonitor_without_status_is_healthy_once_it_exists():
    """prometheus-operator writes no status on PodMonitors by default: `sync --wait` must not wait for one."""
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "m", "generation": 1}}
    assert health_of(monitor).status is HealthStatus.healthy
    # a controller that does report is still waited for, and believed
    reporting = {**monitor, "status": {"observedGeneration": 0, "conditions": [{"type": "Ready", "status": "True"}]}}
    assert health_of(reporting).status is HealthStatus.progressing
    failed = {**monitor, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False",
                                                                             "reason": "Invalid"}]}}
    assert health_of(failed).status is HealthStatus.degraded


def test_route_health_reads_each_parent_gateway():
    assert health_of(_route()).status is HealthStatus.healthy  # no Gateway controller has reported
    accepted = _parent({"type": "Accepted", "status": "True", "observedGeneration": 2},
                       {"type": "ResolvedRefs", "status": "True", "observedGeneration": 2})
    assert health_of(_route([accepted])).status is HealthStatus.healthy
    stale = _parent({"type": "Accepted", "status": "True", "observedGeneration": 1})
    assert health_of(_route([stale])).status is HealthStatus.progressing
    refused = _parent({"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
                       "message": "no listener allows routes from this namespace", "observedGeneration": 2})
    health = health_of(_route([accepted, refused]))
    assert health.status is HealthStatus.degraded
    assert "Gateway models: Accepted=False (NotAllowedByListeners)" in health.message
    unresolved = _parent({"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "observedGeneration": 2})
    assert health_of(_route([unresolved])).status is HealthStatus.degraded
