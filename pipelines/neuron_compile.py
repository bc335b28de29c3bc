"""The Neuron compilation: export the model's layers, then trace them with torch-neuronx on an inf2 node.

Two steps, as real compile pipelines split them (export in the training environment, compile in the SDK
image): `neuron-export` runs in the ordinary step image with the training lock (pipelines/requirements.lock:
the scikit-learn and Python that wrote the pickle) and writes the framework-neutral `neuron-layers` artifact
(layers.npz + layers.json, pipelines.neuron.export_model); `neuron-compile` runs in the Neuron SDK image
(Python 3.10, torch-neuronx, numpy), installs nothing of the training lock (numpy 2.4 needs Python >= 3.11),
and traces those layers (pipelines.neuron.compile_model).

Compiling for Inferentia takes minutes and only depends on the weights, the Neuron SDK version, the input
shapes and the conversion (export + compile code, and the lock the export reads the pickle with), so the
compile step is memoized (Argo's ConfigMap cache) under
`pipelines.neuron.cache_key(model_hash, sdk, input_shapes, conversion_code_hash())` and writes its artifact
to a key derived from the same cache key in the artifact repository: a second workflow with the same key
skips the compile pod and hands the cached artifact to the image build.

The compile pod lands on the pool declared in environments/pools.yaml: its nodeSelector, the tolerations
of its taints, the device resource (aws.amazon.com/neuron), its 2Mi hugepages and IPC_LOCK. The export
needs no accelerator and runs on any node.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from reconciler.catalog.kinds import AcceleratorKind
from reconciler.catalog.pools import Pool

from . import common
from reconciler.catalog.accelerators import DEFAULT_NEURON_SDK, NeuronSDK, neuron_sdk

from .neuron import COMPILED_FILE, CONVERSION_FILES, cache_key, conversion_code_hash
from .train import lock_install

CACHE_CONFIGMAP = "neuron-compile-cache"
OUTPUT_DIR = "/work/neuron"
BENTO_PATH = "/work/bento.bento"
EXPORT_DIR = "/work/export"  # the neuron-layers artifact (layers.npz + layers.json), a directory
LAYERS_ARTIFACT = "neuron-layers"


@dataclass(frozen=True)
class NeuronOptions:
    """What a Neuron compilation depends on besides the weights. The compile image is derived from
    the SDK release (reconciler.catalog.accelerators.NEURON_SDKS), so the two cannot drift apart."""

    sdk_version: str = DEFAULT_NEURON_SDK
    input_shapes: tuple[tuple[int, ...], ...] = field(default=((1, 64),))
    architecture: str | None = None  # model.yaml's: the export checks the pickle is that
    # the compile recipe its architecture chose (reconciler.catalog.recipes, pipelines/recipes/<name>.yaml): the
    # module whose `export` / `compile` the two steps run, and the files of its cache key
    recipe: str = "torch-neuronx-dense"
    recipe_module: str = "pipelines.neuron"
    recipe_code: tuple[str, ...] = CONVERSION_FILES
    input_dtypes: tuple[str, ...] = ()  # one per input shape (images.inferentia.inputDtypes; empty: float32)
    artifact: str = "model.pkl"  # the trained artifact in the Bento's src/ (model.yaml's first `artifacts:` entry)
    lock: str = common.LOCK_FILE  # the model's lock: the export step installs it (pipelines/locks.py)
    lock_pins: tuple[tuple[str, str], ...] = ()  # its pins, for PyTorch's variant index (locks.index_options)
    export_image: str = common.DEFAULT_STEP_IMAGE  # the training environment's Python (the lock's)
    cache_configmap: str = CACHE_CONFIGMAP
    max_age: str = "4320h"  # 180 days: keys change with the weights, so old entries only age out
    cpu: str = "2"
    memory: str = "8Gi"

    @property
    def sdk(self) -> NeuronSDK:
        return neuron_sdk(self.sdk_version)

    @property
    def image(self) -> str:
        return self.sdk.compile_image

    def input_args(self) -> str:
        """`--input-shape 1,13 --input-dtype float32` per declared input: what both steps trace with."""
        dtypes = self.input_dtypes or ("float32",) * len(self.input_shapes)
        return " ".join(f"--input-shape {','.join(str(d) for d in shape)} --input-dtype {dtype}"
                        for shape, dtype in zip(self.input_shapes, dtypes))


def neuron_options_for(spec, default_shape: tuple[int, ...] | None = None, recipe=None, lock=None) -> NeuronOptions:
    """The compile options of a model: `images.inferentia` of its model.yaml (neuronSdk, inputShapes, inputDtypes),
    its first declared artifact, the compile recipe (a reconciler.catalog.recipes.CompileRecipe) its architecture
    chose, and its lock (a pipelines.locks.Lock) for the export step."""
    image = (getattr(spec, "images", None) or {}).get("inferentia")
    kw: dict = {}
    if recipe is not None:
        kw.update(recipe=recipe.name, recipe_module=recipe.module, recipe_code=tuple(recipe.code))
    if lock is not None:
        kw.update(lock=lock.path, lock_pins=tuple(sorted(lock.pins.items())))
    artifacts = getattr(spec, "artifacts", None) or []
    if artifacts:
        kw["artifact"] = artifacts[0].removesuffix(".dvc")
    if image is not None and getattr(image, "input_dtypes", None):
        kw["input_dtypes"] = tuple(image.input_dtypes)
    if getattr(spec, "architecture", None):
        kw["architecture"] = spec.architecture
    if image is not None and image.neuron_sdk:
        kw["sdk_version"] = image.neuron_sdk
    if image is not None and image.input_shapes:
        kw["input_shapes"] = tuple(tuple(s) for s in image.input_shapes)
    elif default_shape is not None:
        kw["input_shapes"] = (tuple(default_shape),)
    return NeuronOptions(**kw)


def requires_neuron(pool: Pool | None) -> bool:
    return pool is not None and pool.kind == AcceleratorKind.inferentia


def pool_placement(pool: Pool) -> dict:
    """node_selector / tolerations kwargs for a hera template that must run on `pool`'s nodes."""
    from hera.workflows.models import Toleration

    return {
        "node_selector": dict(pool.node_selector) or None,
        "tolerations": [Toleration(**t) for t in pool.tolerations] or None,
    }


def neuron_export_template(source: common.Source, options: NeuronOptions = NeuronOptions(), *,
                           name: str = "neuron-export"):
    """The export template (a hera Container): the recipe's `export` of the bento's trained artifact -> the
    `neuron-layers` artifact, in the step image with the model's lock (the versions that wrote the weights). No
    accelerator needed."""
    from hera.workflows import Artifact, Container, Resources

    script = "\n".join([
        "set -eu",
        "mkdir -p /work/bento",
        f"tar -xf {BENTO_PATH} -C /work/bento",
        lock_install(options.lock, dict(options.lock_pins)),
        f"cd {common.SOURCE_PATH}",
        f"python -m {options.recipe_module} export --bento-src /work/bento/src --artifact {shlex.quote(options.artifact)} "
        f"--output-dir {EXPORT_DIR} {options.input_args()}"
        + (f" --architecture {shlex.quote(options.architecture)}" if options.architecture else ""),
    ])
    return Container(
        name=name, image=options.export_image, command=["sh", "-c"], args=[script],
        inputs=[common.bento_artifact(BENTO_PATH), common.source_artifact(source)],
        outputs=[Artifact(name=LAYERS_ARTIFACT, path=EXPORT_DIR)],
        retry_strategy=common.retry(),
        resources=Resources(cpu_request="500m", memory_request="1Gi", memory_limit="1Gi"),
    )


def neuron_compile_template(pool: Pool, source: common.Source, options: NeuronOptions = NeuronOptions(), *,
                            name: str = "neuron-compile"):
    """The memoized compile template (a hera Container) for `pool`, in the Neuron SDK image.

    Inputs: the `cache-key` parameter, the `neuron-layers` artifact of the export and the repository at the
    workflow's commit (for pipelines/neuron.py). Output: the `neuron-model` artifact. It installs nothing: the
    SDK image brings torch-neuronx, neuronx-cc and numpy of its release, and the step reads the layers with
    numpy alone.
    """
    from hera.workflows import Artifact, Container, NoneArchiveStrategy, Parameter, Resources, S3Artifact
    from hera.workflows import models as m

    if not requires_neuron(pool):
        raise ValueError(f"pool {pool.name!r} is a {pool.kind.value} pool: Neuron compilation needs an "
                         "inferentia pool (kind: inferentia in environments/pools.yaml)")
    assert pool.device is not None  # guaranteed by Pool validation for inferentia pools
    custom = {"limits": {"hugepages-2Mi": pool.hugepages_2mi}} if pool.hugepages_2mi else None
    script = "\n".join([
        "set -eu",
        f"cd {common.SOURCE_PATH}",
        f"python -m {options.recipe_module} compile --export-dir {EXPORT_DIR} --output {OUTPUT_DIR}/{COMPILED_FILE} "
        f"{options.input_args()}",
    ])
    return Container(
        name=name,
        image=options.image,
        command=["sh", "-c"],
        args=[script],
        inputs=[
            Parameter(name="cache-key"),
            Artifact(name=LAYERS_ARTIFACT, path=EXPORT_DIR),
            common.source_artifact(source),
        ],
        outputs=[
            S3Artifact(name="neuron-model", path=f"{OUTPUT_DIR}/{COMPILED_FILE}",
                       key=f"neuron-cache/{{{{inputs.parameters.cache-key}}}}/{COMPILED_FILE}",
                       archive=NoneArchiveStrategy()),
        ],
        retry_strategy=common.retry(),
        memoize=m.Memoize(key="{{inputs.parameters.cache-key}}", max_age=options.max_age,
                          cache=m.Cache(config_map=m.LocalObjectReference(name=options.cache_configmap))),
        resources=Resources(cpu_request=options.cpu, memory_request=options.memory, memory_limit=options.memory,
                            gpus=pool.device.count, gpu_flag=pool.device.resource, custom_resources=custom),
        security_context=m.SecurityContext(capabilities=m.Capabilities(add=list(pool.capabilities)))
        if pool.capabilities else None,
        **pool_placement(pool),
    )


def neuron_templates(pool: Pool, source: common.Source, options: NeuronOptions = NeuronOptions()):
    """(export, compile) templates; create them in the Workflow context, then `neuron_tasks` in the DAG."""
    return neuron_export_template(source, options), neuron_compile_template(pool, source, options)


def neuron_tasks(templates, model_hash: str, options: NeuronOptions = NeuronOptions()):
    """The `neuron-export` -> `neuron-compile` tasks (inside a DAG context), the layers artifact wired from one
    to the other; returns the compile task, whose `neuron-model` artifact the build takes."""
    from hera.workflows import Parameter, Task

    export_t, compile_t = templates
    exported = Task(name="neuron-export", template=export_t)
    compiled = Task(name="neuron-compile", template=compile_t,
                    arguments=[Parameter(name="cache-key", value=compile_cache_key(model_hash, options)),
                               exported.get_artifact(LAYERS_ARTIFACT).with_name(LAYERS_ARTIFACT)])
    exported >> compiled
    return compiled


def compile_cache_key(model_hash: str, options: NeuronOptions = NeuronOptions()) -> str:
    return cache_key(model_hash, options.sdk, options.input_shapes, conversion_code_hash(files=options.recipe_code),
                     options.input_dtypes)


def neuron_compile_workflow(*, model: str, model_hash: str, commit: str, repo_url: str, bento_url: str,
                            environment: str, pool: Pool, namespace: str | None = None,
                            options: NeuronOptions = NeuronOptions(),
                            operations: common.Operations = common.Operations(),
                            run: common.RunContext = common.RunContext()):
    """Export + compile alone (`pipeline render neuron-compile`): warms the Neuron cache for a model, or
    checks on an inf2 node that it compiles, without building an image. Memoized like the build's task."""
    from hera.workflows import DAG, Parameter, Workflow

    source = common.Source(repo_url=repo_url, commit=commit)
    key = compile_cache_key(model_hash, options)
    workflow_labels, annotations = common.metadata(
        pipeline="neuron-compile", model=model, model_hash=model_hash, environment=environment, source=source,
        title=f"neuron-compile {model} {common.short_hash(model_hash)}", run=run,
        description=f"Compile {model} for Inferentia ({pool.name}) with Neuron SDK {options.sdk_version}; cache key {key}")
    with Workflow(
        generate_name=common.dns_name("neuron-compile", model, limit=56) + "-",
        namespace=namespace, labels=workflow_labels, annotations=annotations, entrypoint="main",
        **operations.workflow_fields(common.pod_labels(model, model_hash, environment, pool.name)),
        arguments=[Parameter(name=common.BENTO_URL_PARAMETER, value=bento_url)],
    ) as workflow:
        templates = neuron_templates(pool, source, options)
        with DAG(name="main"):
            neuron_tasks(templates, model_hash, options)
    return workflow
