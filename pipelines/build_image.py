"""Build a model's serving image on the cluster from its exported bento, push it, output the digest.

There is no container engine on a laptop or a CI runner here, so images are built by an Argo
Workflow with rootless BuildKit (`moby/buildkit:*-rootless`, `buildctl-daemonless.sh`): the bento
(`bentoml export`) is the build context and its `env/docker/Dockerfile` the Dockerfile. For a model
served from an Inferentia pool the workflow first exports the model's layers and compiles them with
torch-neuronx (memoized, pipelines/neuron_compile.py), and puts `model.neuron.pt` into the bento's `src/`
before building.

Outputs (of the workflow's `build` task, also exported as global parameters):
  digest  sha256:... of the pushed image (from BuildKit's metadata file)
  image   <registry>/<model>@<digest>, what `render_environment(images=...)` takes
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from reconciler import labels
from reconciler.catalog import images
from reconciler.catalog.pools import Pool

from . import common
from .neuron import COMPILED_FILE
from .serving import VERSION_FILE
from .neuron_compile import NeuronOptions, neuron_tasks, neuron_templates, requires_neuron

DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:v0.17.3-rootless"
DEFAULT_REGISTRY_SECRET = "registry-credentials"  # a kubernetes.io/dockerconfigjson Secret
CONTEXT_DIR = "/work/context"
BENTO_PATH = "/work/bento.bento"
NEURON_PATH = "/work/neuron/" + COMPILED_FILE


@dataclass(frozen=True)
class BuildOptions:
    buildkit_image: str = DEFAULT_BUILDKIT_IMAGE
    registry_secret: str | None = DEFAULT_REGISTRY_SECRET  # None: push without credentials
    service_account: str | None = None
    cpu: str = "1"
    memory: str = "2Gi"


def image_tag(model_hash: str, pool: Pool | None, kind_digest: str) -> str:
    """The image tag for the pool's kind (reconciler.catalog.images): `<image12>`, `<image12>-cuda`, `<image12>-neuron`;
    `kind_digest`: what the kind's build adds (reconciler.catalog.image_inputs), so it is the tag `reconciler build`
    and the render name."""
    return images.image_tag(model_hash, pool.kind if pool is not None else None, kind_digest)


image_repository = images.image_repository


def _build_script(with_neuron: bool, cache_ref: str | None = None) -> str:
    lines = [
        "set -eu",
        "IMAGE='{{workflow.parameters.image-ref}}'",
        f"mkdir -p {CONTEXT_DIR}",
        f"tar -xf {BENTO_PATH} -C {CONTEXT_DIR}",
    ]
    if with_neuron:
        lines.append(f"cp {NEURON_PATH} {CONTEXT_DIR}/src/{COMPILED_FILE}")
    lines += [
        # the commit the bento was built from (its gitops-version.json, what X-Model-Version says) becomes an
        # image label, which `reconciler build` records in images.lock.json when it finds the digest
        f"COMMIT=$(sed -n 's/.*\"git_commit\": *\"\\([0-9a-f]\\{{40,64\\}}\\)\".*/\\1/p' "
        f"{CONTEXT_DIR}/src/{VERSION_FILE} 2>/dev/null | head -n 1)",
        f'LABEL=""; [ -z "$COMMIT" ] || LABEL="--opt label:{labels.GIT_COMMIT}=$COMMIT"',
        "buildctl-daemonless.sh build --frontend dockerfile.v0"
        f" --local context={CONTEXT_DIR} --local dockerfile={CONTEXT_DIR}/env/docker $LABEL"
        ' --output "type=image,name=$IMAGE,push=true"'
        + (f" --export-cache type=registry,ref={cache_ref},mode=max --import-cache type=registry,ref={cache_ref}"
           if cache_ref else "")
        + " --metadata-file /work/metadata.json",
        # the metadata file is JSON with "containerimage.digest": "sha256:..."; no jq in the image
        "tr -d '\\n ' < /work/metadata.json"
        " | sed -n 's/.*\"containerimage.digest\":\"\\(sha256:[0-9a-f]*\\)\".*/\\1/p' > /work/digest",
        'test -s /work/digest || { echo "no containerimage.digest in /work/metadata.json" >&2; exit 1; }',
        'printf "%s@%s" "${IMAGE%:*}" "$(cat /work/digest)" > /work/image',
        'echo "pushed $(cat /work/image)"',
    ]
    return "\n".join(lines)


def build_template(*, with_neuron: bool, options: BuildOptions, name: str = "build", cache_ref: str | None = None):
    """The BuildKit template: pushes the workflow parameter `image-ref`, outputs `digest` and `image`.

    `cache_ref`: a registry reference BuildKit exports its layer cache to and imports it from
    (`<repository>:buildcache-<kind>`), so a rebuild of a changed model reuses the unchanged layers."""
    from hera.workflows import Artifact, Container, EmptyDirVolume, Env, Parameter, Resources, SecretVolume
    from hera.workflows import models as m

    inputs: list = [common.bento_artifact(BENTO_PATH)]
    if with_neuron:
        inputs.append(Artifact(name="neuron-model", path=NEURON_PATH))
    volumes: list = [
        EmptyDirVolume(name="work", mount_path="/work"),
        EmptyDirVolume(name="buildkitd", mount_path="/home/user/.local/share/buildkit"),
    ]
    if options.registry_secret:
        volumes.append(SecretVolume(name="registry-auth", secret_name=options.registry_secret,
                                    mount_path="/home/user/.docker",
                                    items=[m.KeyToPath(key=".dockerconfigjson", path="config.json")]))
    return Container(
        name=name,
        image=options.buildkit_image,
        command=["sh", "-c"],
        args=[_build_script(with_neuron, cache_ref)],
        retry_strategy=common.retry(),
        env=[Env(name="BUILDKITD_FLAGS", value="--oci-worker-no-process-sandbox")],
        inputs=inputs,
        outputs=[
            Parameter(name="digest", value_from=m.ValueFrom(path="/work/digest"), global_name="digest"),
            Parameter(name="image", value_from=m.ValueFrom(path="/work/image"), global_name="image"),
        ],
        volumes=volumes,
        resources=Resources(cpu_request=options.cpu, memory_request=options.memory, memory_limit=options.memory),
        # rootless BuildKit: an unprivileged user, no seccomp/AppArmor filtering of its user namespaces
        security_context=m.SecurityContext(
            run_as_user=1000, run_as_group=1000,
            seccomp_profile=m.SeccompProfile(type="Unconfined"),
            app_armor_profile=m.AppArmorProfile(type="Unconfined"),
        ),
    )


def build_image_workflow(
    *,
    model: str,
    model_hash: str,
    kind_digest: str,
    commit: str,
    repo_url: str,
    registry: str,
    bento_url: str,
    environment: str,
    pool: Pool | None = None,
    namespace: str | None = None,
    options: BuildOptions = BuildOptions(),
    neuron: NeuronOptions = NeuronOptions(),
    operations: common.Operations = common.Operations(),
    run: common.RunContext = common.RunContext(),
):
    """The image-build Workflow for one model at one commit (a hera `Workflow`; `.to_yaml()` to commit it).

    - `model_hash`: the model's content hash (reconciler.source.hashing); with `kind_digest` (the pool kind's
      build inputs, reconciler.catalog.image_inputs) it tags the image and names the workflow, so a second submit
      of the same image is refused as already existing; it keys the Neuron cache.
    - `bento_url`: where the exported bento can be downloaded (a workflow parameter, overridable at submit).
    - `pool`: the pool the image will be served from; an inferentia pool adds the memoized
      `neuron-compile` task, scheduled on that pool's nodes, and tags the image `<image12>-neuron`.
    """
    from hera.workflows import DAG, Parameter, Task, Workflow

    source = common.Source(repo_url=repo_url, commit=commit)
    with_neuron = requires_neuron(pool)
    tag = image_tag(model_hash, pool, kind_digest)
    image_ref = f"{image_repository(registry, model)}:{tag}"
    target = f"{pool.name} ({pool.kind.value})" if pool is not None else "any pool"
    workflow_labels, annotations = common.metadata(
        pipeline="build-image", model=model, model_hash=model_hash, environment=environment, source=source,
        title=f"build {model} {tag}", run=run,
        description=f"Build and push {image_ref} for {environment}, served from {target}, "
                    f"from the bento of commit {commit[:12]}"
                    + (" (Neuron-compiled for Inferentia)" if with_neuron else ""),
    )
    # one workflow per (image repository, tag): resubmitting the same build is a 409 / "already
    # submitted", while the same hash pushed to another registry is a build of its own
    registry_id = hashlib.sha256(image_repository(registry, model).encode()).hexdigest()[:6]
    with Workflow(
        name=common.dns_name("build", model[:63 - len(f"build--{tag}-{registry_id}")], tag, registry_id),
        namespace=namespace,
        labels=workflow_labels,
        annotations=annotations,
        entrypoint="main",
        **{**operations.workflow_fields(common.pod_labels(model, model_hash, environment, pool.name if pool else None)),
           "service_account_name": options.service_account or operations.service_account},
        arguments=[Parameter(name=common.BENTO_URL_PARAMETER, value=bento_url),
                   Parameter(name="image-ref", value=image_ref)],
    ) as workflow:
        kind = pool.kind.value if pool is not None else "cpu"
        build = build_template(with_neuron=with_neuron, options=options,
                               cache_ref=f"{image_repository(registry, model)}:buildcache-{kind}")
        compile_ = None
        if with_neuron:
            assert pool is not None
            compile_ = neuron_templates(pool, source, neuron)
        with DAG(name="main"):
            if compile_ is not None:
                compiled = neuron_tasks(compile_, model_hash, neuron)
                built = Task(name="build", template=build,
                             arguments=[compiled.get_artifact("neuron-model").with_name("neuron-model")])
                compiled >> built
            else:
                Task(name="build", template=build)
    return workflow
