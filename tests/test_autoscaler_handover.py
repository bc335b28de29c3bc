"""A model's autoscaler turning from an HPA into a KEDA ScaledObject and back, synced to the real API server with
KEDA's admission rule in front of it.

It happens to every cpu model with a replica range when its environment turns scale to zero on (dev's default
since issue 23: an existing dev had HPAs), or when the model moves to request metrics on the same pool. KEDA's
admission webhook (on by default since KEDA 2.12) refuses a ScaledObject whose workload an HPA already scales,
dry runs included: "the workload '<name>' of type 'apps/v1/Deployment' is already managed by the hpa '<hpa>'".

The stand-in, and why: KEDA's webhook cannot run here (no KEDA image, no container runtime for the control
plane). ``KedaRule`` restates that one rule as an HTTPS admission webhook, registered with a real
ValidatingWebhookConfiguration (scoped to the test's namespace), so the API server, its admission chain and the
dry-run semantics are real; only the rule's code is ours.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.catalog.effective import effective_serving
from reconciler.render.environment import with_content_hash
from reconciler.render.manifests import model_objects
from reconciler.results import Action, ObjectRef
from reconciler.sync.engine import sync_environment
from reconciler.sync.planner import SyncOptions
from tests.envtest import ControlPlane, wait_for
from tests.test_autoscaling import KEDA, POOLS, WAKE, dev_env, entry, env_spec


class KedaRule:
    """KEDA's admission rule for ScaledObjects, over HTTPS on 127.0.0.1 (a self-signed certificate)."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.cert, key = workdir / "webhook.crt", workdir / "webhook.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(self.cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.seen: list[str] = []
        rule = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": rule.decide(review["request"])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.plane = plane
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def decide(self, request: dict) -> dict:
        obj, ns = request["object"], request["namespace"]
        self.seen.append(f"{request['operation']} {obj['metadata']['name']}" + (" (dry run)" if request.get("dryRun")
                                                                                  else ""))
        target = obj["spec"]["scaleTargetRef"]
        status, hpas = self.plane.raw("GET", f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers")
        assert status == 200, hpas
        for hpa in hpas["items"]:
            ref = hpa["spec"]["scaleTargetRef"]
            owners = {o.get("kind") for o in hpa["metadata"].get("ownerReferences") or []}
            if ref["name"] == target["name"] and ref.get("kind") == target.get("kind", "Deployment") \
                    and "ScaledObject" not in owners:
                return {"uid": request["uid"], "allowed": False, "status": {"code": 403, "message": (
                    f"the workload '{target['name']}' of type 'apps/v1/Deployment' is already managed by the hpa "
                    f"'{hpa['metadata']['name']}'")}}
        return {"uid": request["uid"], "allowed": True}

    def register(self, namespace: str) -> str:
        self.thread.start()
        name = f"keda-rule-{uuid.uuid4().hex[:8]}"
        status, body = self.plane.raw("POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "vscaledobject.keda.sh", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 10,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "clientConfig": {"url": f"https://127.0.0.1:{self.server.server_address[1]}/validate",
                                 "caBundle": base64.b64encode(self.cert.read_bytes()).decode()},
                "rules": [{"apiGroups": ["keda.sh"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                           "resources": ["scaledobjects"]}]}]})
        assert status == 201, body
        return name

    def close(self, name: str) -> None:
        self.plane.raw("DELETE", f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}")
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keda_rule(envtest, namespace, tmp_path):
    rule = KedaRule(envtest, tmp_path)
    name = rule.register(namespace)
    # the API server picks a new webhook configuration up within a moment: wait until it calls the rule
    probe = {"apiVersion": KEDA, "kind": "ScaledObject", "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"scaleTargetRef": {"name": "probe"}, "triggers": [{"type": "cpu", "metadata": {"value": "1"}}]}}
    wait_for(lambda: envtest.raw("POST", f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects?dryRun=All",
                                 probe)[0] in (200, 201) and rule.seen, timeout=30, what="the webhook to be called")
    yield rule
    rule.close(name)


def rendered(env, namespace: str) -> list[dict]:
    model = entry({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}, "concurrency": 4}, name="iris")
    objects = model_objects(model, env, [POOLS["cpu-general"]], effective_serving(model.spec, env),
                            {"cpu-general": "r.example/m/iris:1"})
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return [with_content_hash(o) for o in objects]


def test_an_hpa_is_handed_over_to_the_scaled_object_replacing_it_and_back(envtest, kube, namespace, keda_rule):
    hpa = ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "iris-cpu-general")
    scaled = ObjectRef(KEDA, "ScaledObject", namespace, "iris-cpu-general")

    def sync(env, **options):
        result = sync_environment(kube, "dev", namespace, {"iris": rendered(env, namespace)},
                                  options=SyncOptions(**options))
        assert result.error is None and not result.model_errors, (result.error, result.model_errors,
                                                                  keda_rule.seen)
        return result

    sync(env_spec("dev"))  # dev before scale to zero: a cpu model with a replica range has an HPA
    assert kube.get(hpa) is not None and kube.get(scaled) is None
    asleep = dev_env(wakeQuery=WAKE)  # dev with scale to zero: a ScaledObject for the same Deployment

    preview = sync(asleep, dry_run=True)
    assert any(str(hpa) in note and "pruned first" in note for note in preview.notes), preview.notes
    assert kube.get(hpa) is not None and kube.get(scaled) is None

    done = sync(asleep)
    actions = {(r.ref.kind, r.action) for r in done.objects}
    assert ("HorizontalPodAutoscaler", Action.pruned) in actions and ("ScaledObject", Action.created) in actions
    assert kube.get(hpa) is None and kube.get(scaled)["spec"]["minReplicaCount"] == 0
    assert "CREATE iris-cpu-general (dry run)" in keda_rule.seen and "CREATE iris-cpu-general" in keda_rule.seen

    back = sync(env_spec("dev"))  # and back: the ScaledObject goes first, the HPA returns
    assert {(r.ref.kind, r.action) for r in back.objects} >= {("ScaledObject", Action.pruned),
                                                               ("HorizontalPodAutoscaler", Action.created)}
    assert kube.get(scaled) is None and kube.get(hpa) is not None
    # the rule is real: a ScaledObject for a workload an HPA scales is refused
    status, body = envtest.raw("POST", f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects",
                               next(o for o in rendered(asleep, namespace) if o["kind"] == "ScaledObject"))
    assert status == 403 and "already managed by the hpa 'iris-cpu-general'" in json.dumps(body), (status, body)


def test_only_an_autoscaler_of_the_same_workload_and_model_is_handed_over():
    """The pure decision (sync.planner.handovers): which prunes run before validation."""
    from reconciler.sync.inventory import Inventory, InventoryEntry
    from reconciler.sync.planner import handovers, plan_sync

    ns = "models-dev"
    old = {o["kind"]: o for o in rendered(env_spec("dev"), ns)}
    new = rendered(dev_env(wakeQuery=WAKE), ns)
    hpa = ObjectRef.of(old["HorizontalPodAutoscaler"])
    other = {**old["HorizontalPodAutoscaler"], "metadata": {**old["HorizontalPodAutoscaler"]["metadata"],
                                                             "name": "digits-cpu-general"},
             "spec": {**old["HorizontalPodAutoscaler"]["spec"], "scaleTargetRef": {
                 "apiVersion": "apps/v1", "kind": "Deployment", "name": "digits-cpu-general"}}}
    inventory = Inventory("dev", ns, {hpa: InventoryEntry(hpa, "iris", "h"),
                                      ObjectRef.of(other): InventoryEntry(ObjectRef.of(other), "digits", "h")})
    live = {hpa: old["HorizontalPodAutoscaler"], ObjectRef.of(other): other}
    plan = plan_sync("dev", ns, {"iris": new, "digits": []}, inventory, live)
    assert [a.ref for a in handovers(plan, live)] == [hpa]  # digits' HPA is pruned in step 4, as before
    assert handovers(plan, {}) == []  # gone already: nothing to hand over
