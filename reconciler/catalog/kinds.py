"""The accelerator-kind profile table: every kind a pool can be (cpu, gpu, inferentia, ...) is one
KindProfile entry, read by pool validation, image tags, the render's image keys and the bento overlay.

Everything a profile puts into an image (its overlay, its device probe) is in that kind's image tag
(reconciler.catalog.image_inputs): changing it rebuilds that kind's images. An unknown kind is an error naming
the registered ones, never another kind's image: before this table,
any kind that was not cpu or gpu got the Neuron overlay. Adding a kind (Google TPU, say) is one
``register(KindProfile(...))``; ``tests/test_kinds.py`` adds a fake one that way.

    device_resources  the extended resources its pools may request (empty: a pool of it declares no device)
    hugepages         its pools must declare hugepages2Mi (the Neuron runtime's DMA buffers)
    tag_suffix        the image tag suffix: <image12><suffix> (one image per kind; catalog/images.py)
    bento_overlay     the bentofile overlay its image is built with (reconciler.catalog.accelerators)
    compile_needed    a model is compiled for the device before it can serve (a compile recipe must accept it)
    service_provides  the packages its image installs for the model's service beyond the model's lock (the
                      Neuron image installs torch-neuronx, and with it torch): the plan's lock check accepts them
    device_probe      the device nodes (globs under /dev) whose presence means the node gives the container the
                      device; the image carries them (accelerators.DEVICE_ENV) and the service probes them
                      (pipelines/serving.py); empty: no device to find, the CPU serves
    surge             the default rollout strategy's maxSurge of its pools (a spare accelerator node is expensive)
    startup_seconds   the startupProbe budget when serving.startup is not set: accelerators get minutes (loading
                      weights onto a GPU or a NeuronCore takes far longer than unpickling on a CPU)
    autoscaling_metric  the signal its autoscaler follows when the spec does not say (an accelerator's CPU stays
                      low while requests queue: in-flight concurrency)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reconciler.catalog import accelerators
from reconciler.errors import ReconcilerError


@dataclass(frozen=True)
class KindProfile:
    name: str
    tag_suffix: str
    bento_overlay: Callable[[Any], dict]   # (a NeuronSDK or None) -> bentofile overlay
    device_resources: tuple[str, ...] = ()
    hugepages: bool = False
    compile_needed: bool = False
    device_probe: tuple[str, ...] = ()
    service_provides: frozenset[str] = frozenset()
    surge: str | int = 0
    startup_seconds: int = 600
    autoscaling_metric: Literal["cpu", "concurrency", "rps"] = "concurrency"


KINDS: dict[str, KindProfile] = {}


def register(profile: KindProfile) -> KindProfile:
    KINDS[profile.name] = profile
    return profile


def names() -> list[str]:
    return list(KINDS)


def profile(kind: object) -> KindProfile:
    """The profile of a kind; ReconcilerError naming the registered kinds for an unknown one."""
    found = KINDS.get(str(kind))
    if found is None:
        raise ReconcilerError(f"unknown accelerator kind {str(kind)!r}",
                              fix=f"use one of: {', '.join(KINDS)} (a new kind is one entry of reconciler/catalog/kinds.py)")
    return found


def kind_overlay(kind: object, *, sdk: Any = None) -> dict:
    """The bentofile overlay of a pool kind (its profile's), merged over the model's bentofile by
    `accelerators.merge_bentofile`; files it needs (the Neuron setup script) come under the key `files`
    (context-relative path -> content) for the stager. Every kind also gets its device probe in the image's
    environment (accelerators.DEVICE_ENV, empty for a kind with none), so the service finds the device without
    knowing the kind's name.
    An unknown kind is an error, never Neuron."""
    entry = profile(kind)
    overlay = entry.bento_overlay(sdk)
    # every kind's image carries the variable, empty for a kind with no device: the service tells an image built
    # before the probe moved here (none at all) from a CPU image, and refuses to serve the former
    probe = {"name": accelerators.DEVICE_ENV, "value": ",".join(entry.device_probe)}
    return {**overlay, "envs": [*overlay.get("envs", []), probe]}


class _Kinds(type):
    def __iter__(cls) -> Iterator[AcceleratorKind]:
        return iter([AcceleratorKind(name) for name in KINDS])

    def __len__(cls) -> int:
        return len(KINDS)


class AcceleratorKind(str, metaclass=_Kinds):
    """The name of a registered kind. `AcceleratorKind("gpu")`, `AcceleratorKind.gpu`, and iteration over
    the registered kinds in table order; a pydantic field of this type accepts registered names only."""

    cpu: AcceleratorKind
    gpu: AcceleratorKind
    inferentia: AcceleratorKind

    def __new__(cls, name: object) -> AcceleratorKind:
        value = str(name)
        if value not in KINDS:
            raise ValueError(f"unknown accelerator kind {value!r}: use one of {', '.join(KINDS)}")
        return super().__new__(cls, value)

    @property
    def value(self) -> str:
        return str(self)

    @property
    def profile(self) -> KindProfile:
        return KINDS[str(self)]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.plain_serializer_function_ser_schema(str))


register(KindProfile("cpu", tag_suffix="", bento_overlay=accelerators.cpu_overlay, surge="25%", startup_seconds=120,
                     autoscaling_metric="cpu"))
register(KindProfile("gpu", tag_suffix="-cuda", bento_overlay=accelerators.cuda_overlay,
                     device_resources=("nvidia.com/gpu",), device_probe=("nvidia[0-9]*",)))
register(KindProfile("inferentia", tag_suffix="-neuron", bento_overlay=accelerators.neuron_overlay,
                     device_resources=("aws.amazon.com/neuron", "aws.amazon.com/neuroncore"), hugepages=True,
                     compile_needed=True, device_probe=("neuron*",), service_provides=frozenset({"torch"})))
AcceleratorKind.cpu, AcceleratorKind.gpu, AcceleratorKind.inferentia = (AcceleratorKind(n) for n in
                                                                        ("cpu", "gpu", "inferentia"))
