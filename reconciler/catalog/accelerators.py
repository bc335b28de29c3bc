"""What each pool kind needs inside a model image, and which models can be compiled for Inferentia.

Pure data and functions (no torch, no bentoml): the build stages a bentofile overlay per pool kind
from here, the image-build workflow picks its compile image from here, and the catalog checks, at
plan time, that every model placed on an Inferentia pool has a compile recipe that accepts it.

- `NeuronSDK`: ONE Neuron SDK release, from which the compile image, the runtime package and the
  torch-neuronx / neuronx-cc pins are all derived (so the compile image and the serving image can
  never be on different SDKs, and the compile cache key names the release once).
- `recipe_for` / `compile_problem`: the compile recipe (reconciler.catalog.recipes, the registry in
  pipelines/recipes/) a model's declared architecture chooses for a pool kind, or why there is none.
- `cpu_overlay` / `cuda_overlay` / `neuron_overlay`: the bentofile overlays of the pool kinds (the kinds'
  profiles in reconciler.catalog.kinds name them; `kinds.kind_overlay(kind)` picks one) (cpu: none; gpu: CUDA; inferentia:
  the Neuron package index, torch-neuronx, the Neuron runtime and the compiled artifact's path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.catalog.recipes import RECIPES_DIR, CompileRecipe

COMPILED_FILE = "model.neuron.pt"  # the compiled TorchScript module, in the bento's src/ (next to service.py)
NEURON_PIP_INDEX = "https://pip.repos.neuron.amazonaws.com"
NEURON_APT_REPO = "https://apt.repos.neuron.amazonaws.com"
CUDA_VERSION = "12.1.1"  # BentoML's `docker.cuda_version`: an nvidia/cuda base image
ARTIFACT_ENV = "MODEL_ACCELERATOR_ARTIFACT"  # where the service finds the compiled artifact
KIND_ENV = "MODEL_ACCELERATOR_KIND"  # which kind the image was built for (cpu / gpu / inferentia)
# how the service finds the kind's device on its node: comma-separated globs under /dev (the kind's device_probe,
# catalog/kinds.py), set by kinds.kind_overlay; pipelines/serving.py reads it (it cannot import the catalog)
DEVICE_ENV = "MODEL_DEVICE_GLOBS"


@dataclass(frozen=True)
class NeuronSDK:
    """One AWS Neuron SDK release and the component versions it ships (its release-content page)."""

    version: str
    torch_neuronx: str
    neuronx_cc: str
    runtime_lib: str
    collectives: str
    torch: str  # the PyTorch minor torch-neuronx is built for, e.g. 2.1.2
    python: str = "py310"
    ubuntu: str = "ubuntu20.04"

    @property
    def compile_image(self) -> str:
        """The Neuron deep-learning container the compile step runs in: same release, by construction."""
        return (f"public.ecr.aws/neuron/pytorch-inference-neuronx:{self.torch}-neuronx-{self.python}"
                f"-sdk{self.version}-{self.ubuntu}")

    @property
    def python_version(self) -> str:
        """'py310' -> '3.10': the Python of the serving image (bentofile docker.python_version); torch-neuronx
        has wheels for its supported Pythons only, so the image cannot take the build machine's."""
        digits = self.python.removeprefix("py")
        return f"{digits[0]}.{digits[1:]}"

    @property
    def python_packages(self) -> list[str]:
        return [f"torch-neuronx=={self.torch_neuronx}", f"neuronx-cc=={self.neuronx_cc}"]

    @property
    def system_packages(self) -> list[str]:
        return [f"aws-neuronx-runtime-lib={self.runtime_lib}*", f"aws-neuronx-collectives={self.collectives}*"]


# The Neuron releases' content, as AWS publishes it: an excerpt of aws-neuron/aws-neuron-sdk
# src/helperscripts/n2-manifest.json ("neuron_releases" -> "neuron_version" -> "packages", name: version),
# the file the Neuron docs' release-content pages and install helper are generated from. Only the packages
# the images use; copy a new release's entries from that file verbatim. Everything else derives from
# these values (docs/model-spec.md, "Neuron versions": what was verified, and how).
NEURON_RELEASES: dict[str, dict[str, str]] = {
    "2.18.1": {  # 2024-04-10; Inf2/Trn1
        "supported_python_versions": "3.8 3.9 3.10",  # torch-neuronx's, as the manifest lists them
        "torch-neuronx": "2.1.2.2.1.0",
        "torch_xla": "2.1.2",
        "neuronx-cc": "2.13.68.0",
        "aws-neuronx-runtime-lib": "2.20.22.0",
        "aws-neuronx-collectives": "2.20.22.0",
    },
}
DEFAULT_NEURON_SDK = "2.18.1"  # THE pin: the serving image, the compile image and the cache key all derive from it


def release_sdk(version: str, packages: dict[str, str]) -> NeuronSDK:
    """A NeuronSDK from one release's package versions. The PyTorch version is the first three parts of
    torch-neuronx's (2.1.2.2.1.0 is torch-neuronx 2.1.0 for PyTorch 2.1.2), and must be the release's
    torch_xla: the compile image tag is named after it, so a wrong entry fails here, not on an inf2 node."""
    try:
        torch_neuronx, cc = packages["torch-neuronx"], packages["neuronx-cc"]
        runtime, collectives = packages["aws-neuronx-runtime-lib"], packages["aws-neuronx-collectives"]
    except KeyError as exc:
        raise ValueError(f"Neuron {version}: the release entry has no {exc.args[0]!r} version") from None
    torch = ".".join(torch_neuronx.split(".")[:3])
    pythons = sorted((tuple(int(x) for x in v.split(".")) for v in packages.get("supported_python_versions", "3.10").split()))
    python = "py" + "".join(str(x) for x in pythons[-1])  # the newest it supports: the DLC tags' pyXYZ
    if packages.get("torch_xla", torch) != torch or not re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)+", torch_neuronx):
        raise ValueError(f"Neuron {version}: torch-neuronx {torch_neuronx} is not built for torch_xla "
                         f"{packages.get('torch_xla')}: copy the release's entries from n2-manifest.json again")
    return NeuronSDK(version, torch_neuronx=torch_neuronx, neuronx_cc=cc, runtime_lib=runtime,
                     collectives=collectives, torch=torch, python=python)


NEURON_SDKS: dict[str, NeuronSDK] = {v: release_sdk(v, p) for v, p in NEURON_RELEASES.items()}


def neuron_sdk(version: str = DEFAULT_NEURON_SDK) -> NeuronSDK:
    try:
        return NEURON_SDKS[version]
    except KeyError:
        raise ValueError(f"unknown Neuron SDK {version!r} (known: {', '.join(sorted(NEURON_SDKS))}): add its "
                         "release content to NEURON_SDKS in reconciler/catalog/accelerators.py") from None


# --------------------------------------------------------------------------- compile recipes
# The recipes themselves are a registry of the repository (pipelines/recipes/, read by
# reconciler.catalog.recipes): these are the pure choices made with them.

NEEDS_COMPILE = frozenset({"inferentia"})  # the kinds whose profile says compile_needed (tests/test_kinds.py)
ADD_RECIPE = (f"add a recipe to {RECIPES_DIR}/ (an entry <name>.yaml naming the architectures it compiles, and its "
              "conversion module)")


def recipe_for(architecture: str | None, kind: str, recipes: tuple[CompileRecipe, ...]) -> CompileRecipe | None:
    """The compile recipe that accepts `architecture` for `kind`, or None."""
    if architecture is None:
        return None
    return next((r for r in recipes if r.target == kind and architecture in r.architectures), None)


def compile_problem(model: str, architecture: str | None, kind: str, where: str,
                    recipes: tuple[CompileRecipe, ...]) -> tuple[str, str] | None:
    """(message, fix) when a model placed on a `kind` pool has no eligible compile recipe, else None. Pure."""
    if kind not in NEEDS_COMPILE or recipe_for(architecture, kind, recipes) is not None:
        return None
    accepted = sorted(a for r in recipes if r.target == kind for a in r.architectures)
    if architecture is None:
        return (f"{model} targets an {kind} pool {where}, but model.yaml does not declare its architecture, "
                f"so no compile recipe can be chosen",
                f"add `architecture:` to model.yaml (compilable for {kind}: {', '.join(accepted) or 'none'}), "
                "or serve it from a cpu or gpu pool")
    return (f"{model} targets an {kind} pool {where}, but no compile recipe compiles a {architecture!r} "
            f"for {kind} (the recipes accept: {', '.join(accepted) or 'none'})",
            f"serve {model} from a cpu or gpu pool there (accelerator: in model.yaml), or {ADD_RECIPE}: "
            f"one accepting {architecture!r}")


# --------------------------------------------------------------------------- per-kind bentofile overlays


NEURON_SETUP_SCRIPT = "accelerator-setup.sh"


def neuron_setup_script(sdk: NeuronSDK) -> str:
    """The image's setup script (bentofile docker.setup_script): the Neuron runtime from AWS's apt repository."""
    packages = " ".join(f"'{p}'" for p in sdk.system_packages)
    return "\n".join([
        "#!/bin/sh",
        f"# Neuron SDK {sdk.version}: the runtime the compiled model executes on (libnrt)",
        "set -eux",
        "apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gnupg",
        f"curl -fsSL {NEURON_APT_REPO}/GPG-PUB-KEY-AMAZON-AWS-NEURON.PUB | gpg --dearmor "
        "-o /usr/share/keyrings/neuron.gpg",
        f'echo "deb [signed-by=/usr/share/keyrings/neuron.gpg] {NEURON_APT_REPO} bookworm main" '
        "> /etc/apt/sources.list.d/neuron.list",
        f"apt-get update && apt-get install -y --no-install-recommends {packages}",
        "rm -rf /var/lib/apt/lists/*",
        "",
    ])


def cpu_overlay(sdk: NeuronSDK | None = None) -> dict:
    return {"envs": [{"name": KIND_ENV, "value": "cpu"}]}


def cuda_overlay(sdk: NeuronSDK | None = None) -> dict:
    return {"envs": [{"name": KIND_ENV, "value": "gpu"}], "docker": {"cuda_version": CUDA_VERSION}}


def neuron_overlay(sdk: NeuronSDK | None = None) -> dict:
    sdk = sdk or neuron_sdk()
    return {
        "envs": [{"name": KIND_ENV, "value": "inferentia"},
                 {"name": ARTIFACT_ENV, "value": f"/home/bentoml/bento/src/{COMPILED_FILE}"},
                 {"name": "NEURON_SDK_VERSION", "value": sdk.version}],
        "python": {"extra_index_url": [NEURON_PIP_INDEX], "packages": sdk.python_packages},
        "docker": {"setup_script": NEURON_SETUP_SCRIPT, "python_version": sdk.python_version},
        "files": {NEURON_SETUP_SCRIPT: neuron_setup_script(sdk)},
    }


def merge_bentofile(base: dict, overlay: dict) -> dict:
    """The model's bentofile with a kind overlay on top. Lists of packages / includes / envs are
    appended (the model's own first); scalars of the overlay win; the model's own per-kind
    overrides come in the overlay too. Pure: `base` is not modified."""
    result = dict(base)
    for key, value in overlay.items():
        if key == "files":
            continue
        mine = result.get(key)
        if isinstance(value, dict) and isinstance(mine, dict):
            merged = dict(mine)
            for k, v in value.items():
                if isinstance(v, list) and isinstance(merged.get(k), list):
                    merged[k] = [*merged[k], *(x for x in v if x not in merged[k])]
                else:
                    merged[k] = v
            result[key] = merged
        elif isinstance(value, list) and isinstance(mine, list):
            names = {e.get("name") for e in mine if isinstance(e, dict)}
            result[key] = [*mine, *(x for x in value if x not in mine
                                    and not (isinstance(x, dict) and x.get("name") in names))]
        else:
            result[key] = value
    return result
