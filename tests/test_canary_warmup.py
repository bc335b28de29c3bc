"""The canary's warm-up comes from the model (issue 21): its declared canary.warmup, else its rendered
Deployment's readiness and startup probes; a cold start is not a regression, a canary slow past its warm-up is."""

from __future__ import annotations

import pytest

from reconciler.catalog.effective import effective_canary
from reconciler.rollout.warmup import default_warmup, model_warmup, warmup_from_deployment

from tests.test_autoscaling import entry, env_spec, render


@pytest.mark.parametrize(("pool", "serving", "seconds"), [
    ("cpu-general", {"replicas": 1}, 15),                     # readiness every 5 s x 3; startup 2m / 10 = 12 s
    ("gpu-a10g", {"replicas": 1}, 60),                        # the GPU kind's 10m startup budget / 10
    ("inf2", {"replicas": 1}, 60),
    ("cpu-general", {"replicas": 1, "startup": "5m"}, 30),    # serving.startup: a slow loader warms longer
])
def test_the_warmup_is_derived_from_the_rendered_probes(pool, serving, seconds):
    deployment = render(entry(serving), env_spec(), pool)["Deployment"]
    assert warmup_from_deployment(deployment) == seconds
    assert model_warmup(None, [deployment]) == (seconds, "the model's readiness and startup probes")


def test_a_declared_warmup_wins_and_is_none_when_not_declared():
    deployment = render(entry({"replicas": 1}), env_spec(), "cpu-general")["Deployment"]
    assert model_warmup(90, [deployment]) == (90, "canary.warmup")
    assert effective_canary(entry({"replicas": 1}).spec, env_spec()).warmup_seconds is None
    declared = env_spec(defaults={"canary": {"warmup": "45s"}})
    assert effective_canary(entry({"replicas": 1}).spec, declared).warmup_seconds == 45


def test_without_probes_the_fallback_is_a_minute_and_says_so():
    assert warmup_from_deployment({"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}) is None
    assert model_warmup(None, [{"kind": "Deployment"}]) == (60, "no probes to derive it from")


def test_the_longest_of_the_models_deployments_wins():
    cpu = render(entry({"replicas": 1}), env_spec(), "cpu-general")["Deployment"]
    gpu = render(entry({"replicas": 1}), env_spec(), "gpu-a10g")["Deployment"]
    assert model_warmup(None, [cpu, gpu])[0] == 60
    assert default_warmup(5, 0) == 15
