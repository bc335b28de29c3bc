"""The kubelet's probe endpoints of a model's pods, and the PromQL matcher that leaves them out of its traffic.

The renderer probes each model container on these paths (render/manifests.py: startup and liveness on
``/livez``, readiness on ``/readyz``); BentoML serves them and ``/healthz`` (its older liveness alias). BentoML
1.4 counts EVERY HTTP request but ``/metrics`` in ``bentoml_service_request_total``, the
``bentoml_service_request_duration_seconds`` histogram and ``bentoml_service_request_in_progress``, the
probes too: readiness every 5 s and liveness every 10 s are 0.3 requests per second per pod, fast, and a 503
from ``/readyz`` while a pod is not ready. Every query the reconciler writes over those metrics, the request
autoscaler's (render/autoscaling.py) and the canary's defaults (rollout/prometheus.py), selects ``NOT_PROBES``
so it reads the model's own requests; a user's own ``canary.queries`` stay as written.
"""

from __future__ import annotations

import re

LIVENESS = "/livez"    # the startupProbe and the livenessProbe: answers once the server is up (the service loaded)
READINESS = "/readyz"  # the readinessProbe
HEALTH = "/healthz"    # BentoML's liveness alias: not probed by the template, never a prediction either
PATHS = (LIVENESS, READINESS, HEALTH)
# a label matcher for {...}: every series but the probes' (PromQL regexes are anchored, RE2 syntax)
NOT_PROBES = 'endpoint!~"' + "|".join(re.escape(p) for p in PATHS) + '"'
