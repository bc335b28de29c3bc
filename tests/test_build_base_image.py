"""The build machine's base image for CPU bentos (RECONCILER_BENTO_BASE_IMAGE / BuildOptions.base_image): set in
the staged bentofile's docker.base_image, over the model's own, for the cpu kind only (the CUDA and Neuron images
keep their bases). The real use, a podman build FROM a locally made base, is in tests/test_e2e_node.py."""

from __future__ import annotations

import yaml

from reconciler.build.bento import stage_context
from reconciler.build.builder import bentofile_overlay
from reconciler.catalog.pools import AcceleratorKind
from reconciler.catalog.specs import ModelSpec

SPEC = ModelSpec.model_validate({"name": "m", "owner": "o", "service": "service.py:M"})


def test_the_cpu_kind_gets_the_build_machines_base_and_the_other_kinds_keep_theirs():
    assert bentofile_overlay(SPEC, AcceleratorKind.cpu, "localhost/base:1")["docker"]["base_image"] == "localhost/base:1"
    assert "base_image" not in bentofile_overlay(SPEC, AcceleratorKind.gpu, "localhost/base:1").get("docker", {})
    assert "docker" not in bentofile_overlay(SPEC, AcceleratorKind.cpu)  # unset: the bentofile decides


def test_the_staged_bentofile_names_it_over_the_models_own(tmp_path):
    own = tmp_path / "bentofile.yaml"
    own.write_text(yaml.safe_dump({"service": "service.py:M", "docker": {"base_image": "python:3.11-slim",
                                                                        "system_packages": ["git"]}}))
    staged = stage_context({}, own, service="service.py:M", name="m", model_hash="0" * 64, shared=[],
                           dest=tmp_path / "ctx", overlay=bentofile_overlay(SPEC, AcceleratorKind.cpu, "localhost/b:2"))
    docker = yaml.safe_load(staged.read_text())["docker"]
    assert docker == {"base_image": "localhost/b:2", "system_packages": ["git"]}
