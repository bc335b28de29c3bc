"""THE image reference of a model: `<registry>/<model>:<tag>`, one tag per pool kind.

Every place that names a model image (the build, the registry check, the image-build workflow, the
render's image map) calls these functions, so a tag never differs between who pushes and who pulls:

    tag     <image12>          cpu pools (BentoML's default base image)
            <image12>-cuda     gpu pools (a CUDA base)
            <image12>-neuron   inferentia pools (Neuron runtime, torch-neuronx, the compiled model)

`<image12>` is the first 12 hex digits of sha256(the model's content hash, the kind's digest): the content hash
(reconciler.source.hashing) covers the model's sources, the kind's digest (reconciler.catalog.image_inputs)
what the build adds for that kind (its bentofile overlay: CUDA version, Neuron packages, envs; and for a kind
that compiles, the compile recipe's code). The same sources and platform give the same tag on every machine; a
change of one kind's overlay or recipe gives that kind new tags only. (Before kind-image/v1 the tag was the
first 12 digits of the content hash alone, so an overlay-only change kept the tag and was never rebuilt: every
tag changed once with it.) A digest pin (`<repository>@sha256:...`) replaces the tag once the digest is known
(`pinned`).
"""

from __future__ import annotations

import functools
import hashlib
import re

from reconciler.catalog.kinds import AcceleratorKind

SHORT = 12
TAG_VERSION = "image-tag/v2"  # v1: the content hash's first 12 digits alone (no kind inputs)


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


def image_tag(model_hash: object, kind: AcceleratorKind | str | None, kind_digest: str) -> str:
    """The tag of the model's image for a pool kind (None: cpu): '<image12>', '<image12>-cuda' or
    '<image12>-neuron'; `kind_digest` is reconciler.catalog.image_inputs' digest of what the kind's build adds."""
    k = _kind(kind)
    if not kind_digest:
        raise ValueError("an image tag needs the kind's digest (reconciler.catalog.image_inputs.KindDigests)")
    return _digits(short_hash(model_hash, 64), k.value, kind_digest) + k.profile.tag_suffix


@functools.lru_cache(maxsize=1 << 16)  # a render names each (model, kind) tag twice (image, version annotations)
def _digits(model_hex: str, kind: str, kind_digest: str) -> str:
    return hashlib.sha256(f"{TAG_VERSION}\n{model_hex}\n{kind}\n{kind_digest}".encode()).hexdigest()[:SHORT]


def image_ref(registry: str, model: str, model_hash: object, kind: AcceleratorKind | str | None,
              kind_digest: str) -> str:
    """'<registry>/<model>:<tag>' for a pool kind (None: cpu)."""
    return f"{image_repository(registry, model)}:{image_tag(model_hash, kind, kind_digest)}"


def pinned(tagged: str, digest: str | None) -> str:
    """'r/m:tag' + 'sha256:..' -> 'r/m@sha256:..'; without a digest, the tagged reference."""
    return f"{tagged.rsplit(':', 1)[0]}@{digest}" if digest else tagged


def image_key(model: str, kind: AcceleratorKind | str | None = None) -> str:
    """The key of a model's image in render's image map: '<model>' for cpu, '<model>/<kind>' otherwise."""
    k = _kind(kind)
    return model if k == AcceleratorKind.cpu else f"{model}/{k.value}"
