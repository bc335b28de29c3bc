"""The one image-reference function: a tag per pool kind, the same everywhere it is named."""

from __future__ import annotations

import re

import pytest

from reconciler.catalog.image_lock import tagged_image
from reconciler.source.hashing import ModelHash
from reconciler.catalog.images import image_key, image_ref, image_tag, pinned, short_hash
from reconciler.catalog.pools import AcceleratorKind

HEX = "0123456789abcdef" * 4
KD = "e" * 64  # a kind's digest (reconciler.catalog.image_inputs)


def test_one_tag_per_kind_from_any_spelling_of_the_hash():
    mh = ModelHash("m", HEX, {})
    for kind, suffix in (("cpu", ""), ("gpu", "-cuda"), (AcceleratorKind.inferentia, "-neuron")):
        tags = {image_tag(spelled, kind, KD) for spelled in (HEX, "sha256:" + HEX, HEX.upper(), mh)}
        assert len(tags) == 1 and re.fullmatch(r"[0-9a-f]{12}" + suffix, tags.pop())
    assert image_tag(HEX, None, KD) == image_tag(HEX, "cpu", KD)
    tags = {image_tag(HEX, k, KD)[:12] for k in AcceleratorKind}
    assert len(tags) == len(AcceleratorKind)  # no two kinds share an image, digits included


def test_the_tag_covers_the_kinds_build_inputs_and_the_model_hash():
    """A tag is new when the model's sources or what the kind's build adds change, and only then: the tag
    `reconciler build` checks the registry and the Bento store for."""
    base = image_tag(HEX, "gpu", KD)
    assert image_tag(HEX, "gpu", KD) == base  # deterministic
    assert image_tag(HEX, "gpu", "f" * 64) != base  # a CUDA change: a new -cuda image
    assert image_tag("fedcba9876543210" * 4, "gpu", KD) != base  # new sources: a new image
    with pytest.raises(ValueError, match="needs the kind's digest"):
        image_tag(HEX, "gpu", "")


def test_reference_pin_and_map_key():
    ref = image_ref("localhost:5001/models/", "iris", HEX, "inferentia", KD)
    assert ref == f"localhost:5001/models/iris:{image_tag(HEX, 'inferentia', KD)}"
    assert tagged_image("localhost:5001/models", "iris", HEX, "inferentia", KD) == ref  # build names it the same way
    assert pinned(ref, "sha256:" + "f" * 64) == "localhost:5001/models/iris@sha256:" + "f" * 64
    assert pinned(ref, None) == ref
    assert image_key("iris") == image_key("iris", "cpu") == "iris"
    assert image_key("iris", "gpu") == "iris/gpu"


def test_bad_hash_or_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="no alphanumeric digest"):
        short_hash("sha256:")
    with pytest.raises(ValueError, match="unknown accelerator kind 'tpu'"):
        image_tag(HEX, "tpu", KD)


def test_the_lock_keeps_the_build_commit_of_one_image_only(tmp_path):
    """images.lock.json's `commits`: the commit an image's bento was built from, tied to that image's digest."""
    import json

    from reconciler.catalog.image_lock import ImageStore

    path = tmp_path / "images.lock.json"
    tag, first, second = "r.test/m:0123456789ab", "sha256:" + "1" * 64, "sha256:" + "2" * 64
    store = ImageStore(path)
    store.record(tag, first, "a" * 40)
    store.record(tag, first)  # found again without a commit (e.g. no local bento): the recorded one stays
    assert ImageStore.read(path).commit(tag) == "a" * 40
    store.record(tag, second)  # another image under the tag: the old image's commit is not its commit
    reread = ImageStore.read(path)
    assert (reread.get(tag), reread.commit(tag)) == (second, None)
    store.record(tag, second, "unknown")  # a bento built outside git records no commit
    assert ImageStore.read(path).commit(tag) is None
    store.record(tag, second, "b" * 40)
    assert json.loads(path.read_text()) == {"images": {tag: second}, "commits": {tag: "b" * 40}}
    legacy = tmp_path / "legacy.json"  # a lock written before `commits` existed still reads
    legacy.write_text(json.dumps({"images": {tag: first}}))
    assert (ImageStore.read(legacy).get(tag), ImageStore.read(legacy).commit(tag)) == (first, None)
