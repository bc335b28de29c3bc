"""An in-memory stand-in for the Kubernetes API server, serving real HTTP to real clients.

BEING RETIRED: a real kube-apiserver now runs in the suite (tests/envtest.py, fixtures in
tests/envtest_fixtures.py), and the sync, RBAC, canary-sync and environment tests run there; faults come
from tests/fault_proxy.py in front of the real server. Still on this stand-in, not yet ported (no reason a
real server could not do them): test_canary_cli, test_canary_controller, test_canary_routers, test_loop,
test_sync_cli, test_kube_client, and benchmarks/sync_bench.py's side-by-side run. New cluster tests must
use envtest. What it was: a threaded HTTP/1.1 server
on 127.0.0.1 (ephemeral port) that the official ``kubernetes`` client (typed APIs,
``CustomObjectsApi``, ``DynamicClient``, ``watch.Watch``) and kubeconfig loading work against.

Quick use::

    from tests.kubeapi import KubeApiServer, Fault
    with KubeApiServer(with_common_crds=True) as server:
        server.url, server.stats.snapshot(), server.objects(kind="Deployment")
        server.inject(Fault(path="/deployments/", method="PATCH", status=429, retry_after=1))
        server.set_rollout_behaviour("stuck", name="my-model")

or the pytest fixtures ``kube_api`` / ``kube_api_factory`` from :mod:`tests.kubeapi.fixtures`.

Faithful: discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>/<v>``); CRUD
with Status errors (NotFound, AlreadyExists, Conflict, Invalid with causes, BadRequest) shaped
and worded like the apiserver's; a global monotonically increasing resourceVersion; uid,
creationTimestamp; generation bumped on spec (non-metadata, non-status) changes only; no-op
writes do not bump resourceVersion; namespace must exist; DNS-1123 names and label syntax;
resourceVersion preconditions (409); merge / JSON patch; server-side apply with managedFields,
conflicts, ``force`` and removal of fields the applier stopped applying; ``dryRun=All``;
``fieldValidation`` Strict/Warn/Ignore for unknown top-level fields of built-ins; label and field
selectors; pagination; watch; status and scale subresources; finalizers; CRDs served after they
are created; defaulting of Deployment/pod template/Service/Secret/Namespace fields.

Simplified (know these limits when a test passes here):

* Storage is one in-memory dict per (group, resource) shared by all served versions; "conversion"
  only rewrites ``apiVersion``. Watch history is bounded (older resourceVersions get 410).
* No authentication, authorization, admission webhooks, quotas, TLS, protobuf or CBOR; JSON only.
  No aggregated discovery (legacy discovery documents only), no OpenAPI (``/openapi/v2``).
* Validation: metadata rules for all types, plus Deployment rules (selector required and
  matching template labels, immutable selector, containers with name and image, replicas >= 0);
  other built-ins and custom resources are not schema-validated. Unknown-field checks cover
  top-level fields only. Add rules with ``server.add_validator(group, kind, fn)``.
* Missing ``apiVersion``/``kind`` in a request body is a 422 here; the real server defaults them
  from the URL on create/update (server-side apply requires them there too).
* Strategic merge patch is an approximation: merge patch plus element-wise merging of keyed
  lists from a fixed table (containers, env, ports, volumes, volumeMounts, ...). Not allowed on
  custom resources (415), as upstream.
* Server-side apply: field ownership as sets of leaf paths in real ``fieldsV1`` notation, but
  associative lists come from the same fixed table (single key, e.g. container ports by
  ``containerPort``); everything else, and every list of a custom resource, is atomic; owning a
  map does not conflict with owning its sub-fields. Apply to subresources is not supported.
  Client-sent ``managedFields`` are ignored.
* Deployments have no ReplicaSets/Pods: a rollout simulation writes the final status in the same
  write that changed the generation (see :mod:`tests.kubeapi.rollout`).
* Deletion is immediate unless finalizers are set; Background and Foreground both delete
  dependents (``ownerReferences``) at once, Orphan leaves them; deleting a Namespace deletes its
  contents at once (no Terminating phase). No garbage collection otherwise, no controllers
  besides the Deployment status simulation, no Service endpoints.
* Field selectors: ``metadata.name`` and ``metadata.namespace`` only. Watches send no bookmarks.
"""

from tests.kubeapi.errors import ApiError, Cause
from tests.kubeapi.instrumentation import Fault, Stats
from tests.kubeapi.server import KubeApiServer, write_kubeconfig

__all__ = ["ApiError", "Cause", "Fault", "KubeApiServer", "Stats", "write_kubeconfig"]
