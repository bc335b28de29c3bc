"""Every model Deployment runs hardened, in every environment and pool (Kubernetes' "restricted" Pod Security
Standard): non-root as BentoML's image user, no privilege escalation, every capability dropped (a pool adds back
only its device's), seccomp RuntimeDefault, a read-only root filesystem with BentoML's writable home on an
emptyDir. tests/test_e2e_node.py runs the real Bento images under it on a real node."""

from __future__ import annotations

from reconciler.catalog.load import load_catalog
from reconciler.render.environment import render_environment
from tests.conftest import TEMPLATE_MODELS

IMAGES = {m: f"registry.test/{m}:abc" for m in TEMPLATE_MODELS}  # an image for every model of the template


def test_every_model_deployment_is_hardened_and_a_pool_adds_only_its_capabilities(template_repo):
    catalog = load_catalog(template_repo)
    seen = 0
    for env in ("dev", "staging", "prod"):
        result = render_environment(catalog, env, images=IMAGES)
        assert result.errors == {}
        for model in result.models.values():
            for deploy in (o for o in model.objects if o["kind"] == "Deployment"):
                seen += 1
                pod = deploy["spec"]["template"]["spec"]
                (c,) = pod["containers"]
                assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1034, "runAsGroup": 1034,
                                                  "fsGroup": 1034, "seccompProfile": {"type": "RuntimeDefault"}}
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert set(sc["capabilities"].get("add", [])) <= {"IPC_LOCK"}  # inf2's, declared in pools.yaml
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert {"name": mounts["/tmp"], "emptyDir": {}} in pod["volumes"]
                home = next(e["value"] for e in c["env"] if e["name"] == "BENTOML_HOME")
                assert home.startswith("/tmp/"), "BentoML writes its home at start: it must be on the emptyDir"
    assert seen >= 6
