"""THE image reference of a model: `<registry>/<model>:<tag>`, one tag per pool kind.

Every place that names a model image (the build, the registry check, the image-build workflow, the
render's image map) calls these functions, so a tag never differs between who pushes and who pulls:

    tag     <hash12>          cpu pools (BentoML's default base image)
            <hash12>-cuda     gpu pools (a CUDA base)
            <hash12>-neuron   inferentia pools (Neuron runtime, torch-neuronx, the compiled model)

`<hash12>` is the first 12 hex digits of the model's content hash (reconciler.source.hashing): the same
sources give the same tag. An image for each kind is built from the same sources with the kind's
bentofile overlay, so their contents differ and so do their tags. A digest
pin (`<repository>@sha256:...`) replaces the tag once the digest is known (`pinned`).
"""

from __future__ import annotations

import re

from reconciler.catalog.kinds import AcceleratorKind

SHORT = 12


def short_hash(model_hash: object, length: int = SHORT) -> str:
    """The hex part of a hash ('sha256:<hex>', '<hex>' or a ModelHash), lowercased and cut to `length`."""
    digest = getattr(model_hash, "digest", model_hash)
    if not isinstance(digest, str):
        raise ValueError(f"model hash {model_hash!r} is not a string")
    text = re.sub(r"[^a-z0-9]", "", digest.rsplit(":", 1)[-1].lower())
    if not text:
        raise ValueError(f"model hash {digest!r} has no alphanumeric digest")
    return text[:length]


def _kind(kind: AcceleratorKind | str | None) -> AcceleratorKind:
    if kind is None:
        return AcceleratorKind.cpu
    if isinstance(kind, AcceleratorKind):
        return kind
    return AcceleratorKind(kind)  # ValueError naming the registered kinds


def image_repository(registry: str, model: str) -> str:
    """('ghcr.io/acme/models/', 'iris') -> 'ghcr.io/acme/models/iris'."""
    return f"{registry.rstrip('/')}/{model}"


def image_tag(model_hash: object, kind: AcceleratorKind | str | None = None) -> str:
    """The tag of the model's image for a pool kind: '<hash12>', '<hash12>-cuda' or '<hash12>-neuron'."""
    return short_hash(model_hash) + _kind(kind).profile.tag_suffix


def image_ref(registry: str, model: str, model_hash: object, kind: AcceleratorKind | str | None = None) -> str:
    """'<registry>/<model>:<tag>' for a pool kind (None: cpu)."""
    return f"{image_repository(registry, model)}:{image_tag(model_hash, kind)}"


def pinned(tagged: str, digest: str | None) -> str:
    """'r/m:tag' + 'sha256:..' -> 'r/m@sha256:..'; without a digest, the tagged reference."""
    return f"{tagged.rsplit(':', 1)[0]}@{digest}" if digest else tagged


def image_key(model: str, kind: AcceleratorKind | str | None = None) -> str:
    """The key of a model's image in render's image map: '<model>' for cpu, '<model>/<kind>' otherwise."""
    k = _kind(kind)
    return model if k == AcceleratorKind.cpu else f"{model}/{k.value}"
