"""environments/reconciler/: the manifests that run the reconciler render, validate, and grant every
verb the reconciler really uses (measured on the real API server under the ServiceAccount's own token
during full reconcile passes) and nothing it does not use."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.run.loop import Reconciler, RunConfig
from reconciler.run.reconcile import reconcile_pass
from reconciler.sync.planner import SyncOptions
from reconciler.results import ObjectRef
from tests.conftest import PROJECT, commit_all
from tests.envtest import wait_for

MANIFESTS = PROJECT / "environments" / "reconciler"
KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_manifests_render_and_validate_strictly(rendered, tmp_path):
    import kubernetes_validate

    for obj in rendered:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert ("Deployment", "model-gitops-reconciler") in kinds and ("ServiceAccount", "model-gitops-reconciler") in kinds
    dep = next(o for o in rendered if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "model-gitops-reconciler"
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run"


def granted(rendered: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for obj in rendered:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], "no wildcards"
                for res in rule["resources"]:
                    out.setdefault(res, set()).update(rule["verbs"])
    return out


# granted although a given scenario may not exercise it: any rendered kind leaves git when a model (or a
# declared PriorityClass) is retired, and prune deletes it (exercised here for Deployments and Services)
PRUNE = {"delete"}
# used by the operator commands (reconciler/cli/rollout.py: pause, resume, promote replace the rollout
# state ConfigMap with its resourceVersion), not by sync/run
OPERATOR_COMMANDS = {"configmaps": {"update"}}


def install_reconciler_rbac(plane, rendered: list[dict], renames: dict[str, str]) -> None:
    """Apply environments/reconciler's ServiceAccount, RBAC and namespaces as an admin would
    (`kubectl apply -k`), with every namespace and cluster-scoped name renamed per ``renames``
    (a shared test server). The reconciler's own Deployment is left out: the test runs its code."""
    admin = plane.client()
    for obj in rendered:
        if obj["kind"] in ("Deployment", "Service"):
            continue
        text = yaml.safe_dump(obj)
        for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
        admin.apply(yaml.safe_load(text), field_manager="kubectl")


def test_rbac_covers_exactly_what_a_reconcile_pass_uses(rendered, envtest_repo, envtest, sim_nodes, tmp_path,
                                                        monkeypatch):
    """sync + run under the reconciler's own ServiceAccount token, with exactly the RBAC of
    environments/reconciler/rbac.yaml, on the real API server: no request is refused (a 403 fails the
    pass), and every granted resource and verb is one the code uses."""
    root, namespaces = envtest_repo.root, envtest_repo.namespaces
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    # staging exercises everything a canary environment adds: PodMonitors (the template's `monitoring: pod-monitor`)
    # and Gateway API routing,
    staging = root / "environments" / "staging" / "environment.yaml"
    assert "\nmonitoring: pod-monitor\n" in staging.read_text()
    # ... and a spot pool (iris lands on it by kind): its PodDisruptionBudget
    staging.write_text(staging.read_text().replace("failureThreshold: 2}", "failureThreshold: 2, router: gateway-api}")
                       .replace("pools: [cpu-general, gpu-a10g, inf2]", "pools: [cpu-general, gpu-a10g-spot, gpu-a10g, inf2]"))
    # ... and dev gives iris a SOPS-encrypted Secret (decrypted in memory, applied with the model's objects)
    from tests.test_secrets import encrypt, identity, secret

    private, public = identity()
    sealed = root / "environments/dev/secrets/iris-classifier/db.yaml"
    sealed.parent.mkdir(parents=True)
    sealed.write_text(encrypt(secret(namespaces["dev"], "rbac-test-password"), public))
    dev = root / "environments" / "dev" / "environment.yaml"
    dev.write_text(dev.read_text() + "secrets: {ageKeyEnv: RBAC_TEST_AGE_KEY}\n")
    monkeypatch.setenv("RBAC_TEST_AGE_KEY", private)
    # ... and keeps iris running when idle in dev, so that one model autoscales with an HPA on CPU (the others
    # get KEDA ScaledObjects: scale to zero in dev, request-based on staging's accelerator pools)
    iris_spec = root / "models" / "iris-classifier" / "model.yaml"
    iris_spec.write_text(iris_spec.read_text().replace("\nserving:\n", "\nserving:\n  scaleToZero: false\n", 1))
    work = git.Repo(root)
    commit_all(work, "staging: pod monitors, gateway api, spot; dev: a sealed secret")
    suffix = namespaces["dev"].rsplit("-", 1)[1]
    state_ns = f"model-gitops-{suffix}"
    renames = {"model-gitops": state_ns, **{f"models-{env}": ns for env, ns in namespaces.items()},
               **{o["metadata"]["name"]: f"{o['metadata']['name']}-{suffix}" for o in rendered
                  if o["kind"] in ("ClusterRole", "ClusterRoleBinding")}}
    install_reconciler_rbac(envtest, rendered, renames)
    # cluster-scoped and shared by the tests of this server: start without it, so the pass creates it
    envtest.client().delete(ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, "model-serving"))
    sa_config = envtest.service_account_kubeconfig("model-gitops-reconciler", state_ns, tmp_path / "sa.kubeconfig")
    sa_user = f"system:serviceaccount:{state_ns}:model-gitops-reconciler"

    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    work.create_remote("origin", str(bare))
    work.git.push("origin", "main")
    kube = KubeClient.from_kubeconfig(sa_config, retry=RetryPolicy(attempts=1))
    rec = Reconciler(kube, RunConfig(repo_url=str(bare), branch="main", workdir=tmp_path / "mirror",
                                     environments=["dev", "staging"], state_namespace=state_ns, listen=None,
                                     identity="a"))
    mark = envtest.audit.mark()
    with sim_nodes.running(namespaces["dev"], namespaces["staging"]):
        first = [r.result for r in rec.tick()]  # create everything
        assert all(r.ok for r in first), [r.as_dict() for r in first]
        shutil.rmtree(root / "models" / "digits-classifier")
        iris = root / "models" / "iris-classifier" / "model.yaml"
        iris.write_text(iris.read_text().replace("memory: 1Gi", "memory: 2Gi"))
        service = root / "models" / "iris-classifier" / "service.py"
        service.write_text(service.read_text() + "\n# new version: a canary in staging\n")
        commit_all(work, "retire digits, new iris")
        work.git.push("origin", "main")
        dev, staging_pass = (r.result for r in rec.tick())
        assert dev.ok and {"configured", "pruned"} <= set(dev.summary().as_dict()), dev.as_dict()
        assert staging_pass.ok, staging_pass.as_dict()
        # a later pass finds the canary's pods ready and routes its first traffic step through an HTTPRoute
        wait_for(lambda: reconcile_pass(kube, root, "HEAD", "staging", SyncOptions()).ok and envtest.client().list(
            "gateway.networking.k8s.io/v1", "HTTPRoute", namespaces["staging"]), what="the canary's first step")
    assert envtest.client().list("monitoring.coreos.com/v1", "PodMonitor", namespaces["staging"])
    assert envtest.client().get(ObjectRef("v1", "Secret", namespaces["dev"], "db"))
    rec.lease.release()

    events = envtest.audit.since(mark, user=sa_user)
    refused = sorted({(e.verb, e.resource, e.uri) for e in events if e.code == 403})
    assert not refused, f"the reconciler's ServiceAccount was refused: {refused}"
    used: dict[str, set[str]] = {}
    for e in events:
        if not e.resource:
            continue  # discovery: allowed to every authenticated user
        verbs = used.setdefault(e.resource + (f"/{e.subresource}" if e.subresource else ""), set())
        verbs.add(e.verb)
        if e.verb == "patch" and e.code == 201:  # a server-side apply that created: RBAC checked `create` too
            verbs.add("create")
    rules = granted(rendered)
    for resource, verbs in used.items():
        assert verbs <= rules.get(resource, set()), f"{resource}: uses {sorted(verbs)}, granted {sorted(rules.get(resource, set()))}"
    prunable = {res for res in rules if res not in ("namespaces", "leases")}
    unused = {res: sorted(verbs - used.get(res, set()) - (PRUNE if res in prunable else set())
                          - OPERATOR_COMMANDS.get(res, set()))
              for res, verbs in rules.items()}
    unused = {res: verbs for res, verbs in unused.items() if verbs}
    assert not unused, f"granted but never used: {unused}"
