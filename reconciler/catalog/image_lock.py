"""The image lock (images.lock.json at the repository top, committed): tagged image -> digest and the git
commit its bento was built from, and what a render takes from it: the image references (digest-pinned
where the lock has one, the tag else) and the pods' version annotations (content hash,
build commit, weights md5: the values the service's X-Model-Version header returns).

    {"images":  {"<registry>/<model>:<tag>": "sha256:<64 hex>"},
     "commits": {"<registry>/<model>:<tag>": "<40 hex: the commit in the image's gitops-version.json>"}}

`commits` is optional (locks written before it existed have none): an image without a recorded commit
renders without the `gitops.ml/git-commit` pod annotation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reconciler.catalog.image_inputs import KindDigests
from reconciler.catalog.images import image_key, image_ref, pinned
from reconciler.catalog.kinds import AcceleratorKind
from reconciler.errors import SpecError
from reconciler.source.hashing import ModelHash
from reconciler import labels as L
from reconciler.source.hashing import weights_md5, weights_md5_value


IMAGES_LOCK = "images.lock.json"  # at the repository top, committed: tagged image -> digest


MAX_LOCK_BYTES = 8 * 1024 * 1024


DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a git object name (SHA-1 or SHA-256 repositories)


TAGGED_RE = re.compile(r"[A-Za-z0-9._:/-]{1,255}:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def images_file(root: Path) -> Path:
    """The image lock file of the repository (or revision tree) at `root`."""
    return Path(root) / IMAGES_LOCK


class ImageStore:
    """The image lock: tagged image reference -> digest, e.g. 'ghcr.io/acme/m:0123456789ab' -> 'sha256:...'.

    Read from a commit's tree, it is input like any other file of that commit, so it is validated: a
    malformed lock is an error naming the file and the entry, never silently ignored (that would render
    tags on one machine and digests on another). A missing lock is an empty one.
    """

    def __init__(self, path: Path, digests: dict[str, str] | None = None,
                 commits: dict[str, str] | None = None) -> None:
        self.path = path
        self.digests: dict[str, str] = dict(digests or {})
        self.commits: dict[str, str] = dict(commits or {})  # tagged image -> the commit its bento was built from

    @classmethod
    def read(cls, path: Path) -> "ImageStore":
        try:
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise SpecError.single(IMAGES_LOCK, "the image lock must be a regular file",
                                       fix=f"replace {IMAGES_LOCK} with the file `reconciler build` writes")
            with path.open("rb") as fh:
                raw = fh.read(MAX_LOCK_BYTES + 1)
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise SpecError.single(IMAGES_LOCK, f"cannot read the image lock: {exc.strerror}",
                                   fix="check the file's permissions") from None
        if len(raw) > MAX_LOCK_BYTES:
            raise SpecError.single(IMAGES_LOCK, f"the image lock is larger than {MAX_LOCK_BYTES} bytes",
                                   fix="keep only the entries `reconciler build` records")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SpecError.single(IMAGES_LOCK, f"the image lock is not valid JSON: {exc}",
                                   fix="restore it from git (`git checkout -- images.lock.json`) or delete it "
                                       "and run `reconciler build --env ENV`") from None
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, dict):
            raise SpecError.single(IMAGES_LOCK, 'expected {"images": {"<registry>/<model>:<tag>": "sha256:<hex>"}}',
                                   fix="restore it from git, or delete it and run `reconciler build --env ENV`")
        for tagged, digest in images.items():
            if not (isinstance(digest, str) and DIGEST_RE.fullmatch(digest)) or not TAGGED_RE.fullmatch(tagged):
                raise SpecError.single(IMAGES_LOCK, f"not a tagged image and sha256 digest: {tagged!r}: {digest!r}",
                                       field=f"images.{tagged}",
                                       fix="each entry is '<registry>/<model>:<tag>': 'sha256:<64 hex digits>'")
        commits = data.get("commits", {})
        if not isinstance(commits, dict):
            raise SpecError.single(IMAGES_LOCK, 'expected "commits": {"<registry>/<model>:<tag>": "<commit sha>"}',
                                   field="commits", fix="restore it from git, or delete the `commits` map "
                                                        "and run `reconciler build --env ENV`")
        for tagged, commit in commits.items():
            if not (isinstance(commit, str) and COMMIT_RE.fullmatch(commit)) or tagged not in images:
                raise SpecError.single(IMAGES_LOCK, f"not a locked image and its build commit: {tagged!r}: {commit!r}",
                                       field=f"commits.{tagged}",
                                       fix="each entry names an image of `images` and the full git commit sha "
                                           "its bento was built from (what `reconciler build` writes)")
        return cls(path, images, commits)

    def get(self, tagged: str) -> str | None:
        return self.digests.get(tagged)

    def commit(self, tagged: str) -> str | None:
        """The git commit the image's bento was built from (its gitops-version.json), if the lock records it."""
        return self.commits.get(tagged)

    def record(self, tagged: str, digest: str, commit: str | None = None) -> None:
        """Record an image's digest and, when known, the commit its bento was built from (kept if not given).

        A new digest for a tag drops a commit recorded for the old one unless `commit` is given: the
        commit belongs to one image, never to a tag."""
        if commit is not None and not COMMIT_RE.fullmatch(commit):
            commit = None  # "unknown" (a bento built outside git): nothing is recorded
        same_image = self.digests.get(tagged) == digest
        new_commit = commit or (self.commits.get(tagged) if same_image else None)
        if same_image and new_commit == self.commits.get(tagged):
            return
        self.digests[tagged] = digest
        if new_commit:
            self.commits[tagged] = new_commit
        else:
            self.commits.pop(tagged, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, dict[str, str]] = {"images": dict(sorted(self.digests.items()))}
        if self.commits:
            data["commits"] = dict(sorted(self.commits.items()))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)


def tagged_image(registry: str, model: str, model_hash: ModelHash | str, kind: AcceleratorKind | str | None,
                 kind_digest: str) -> str:
    """The tagged image reference (reconciler.catalog.images.image_ref): one tag per pool kind."""
    return image_ref(registry, model, model_hash, kind, kind_digest)


def digests_of(catalog) -> KindDigests:
    """The kind digests of a catalog's models (its compile recipes), memoized per call site."""
    return KindDigests(catalog.recipes.recipes)


def resolve_images(catalog, env, hashes: dict[str, ModelHash], *, store: ImageStore | None = None) -> dict[str, str]:
    """Image reference per model for an environment: `registry/model@sha256:...` when the commit's image
    lock records the digest of `registry/model:<image12>`, else that tag. Also `<model>/<kind>` for
    accelerator kinds (`<image12>-cuda` for gpu, `<image12>-neuron` for inferentia): reconciler.catalog.images
    names them all, each from the content hash and the kind's digest (reconciler.catalog.image_inputs).

    A pure function of the commit: the lock is read from the catalog's tree (`store` overrides it in
    tests), the registry is never asked and nothing of the machine is read.
    `env` is an EnvironmentSpec or an environment name of the catalog.
    """
    env_spec = catalog.environment(env) if isinstance(env, str) else env
    store = store if store is not None else ImageStore.read(images_file(catalog.root))
    kinds = digests_of(catalog)
    images = {}
    for name, model_hash in hashes.items():
        entry = catalog.models.get(name)
        if entry is None:
            continue
        for kind in AcceleratorKind:  # the cpu image, the CUDA and Neuron images of gpu and inferentia pools
            tagged = tagged_image(env_spec.registry, name, model_hash, kind, kinds.of(entry.spec, kind))
            images[image_key(name, kind)] = pinned(tagged, store.get(tagged))
    return images


def model_versions(catalog, hashes: dict[str, ModelHash], env=None, *,
                   store: ImageStore | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """Per model and pool kind, the version annotations its pods carry: the values the service's
    X-Model-Version header returns and its request metrics are labelled with.

      gitops.ml/model-hash   the full content hash (from the commit's tree)
      gitops.ml/weights-md5  the DVC md5s of its weights (from the commit's tree)
      gitops.ml/git-commit   the commit the kind's image was built from: the image lock's `commits` entry for
                             the image the pods run (omitted when the lock records none, or without `env`)

    {model: {"cpu": {...}, "gpu": {...}, "inferentia": {...}}}. A pure function of the commit's tree,
    like resolve_images: the rendering commit is never used (it would restart every pod on every commit);
    the build commit changes only with the image, so it restarts nothing the image change does not.
    """

    env_spec = catalog.environment(env) if isinstance(env, str) else env
    if env_spec is not None and store is None:
        store = ImageStore.read(images_file(catalog.root))
    versions: dict[str, dict[str, dict[str, str]]] = {}
    kinds = digests_of(catalog)
    for name, model_hash in hashes.items():
        entry = catalog.models.get(name)
        if entry is None:
            continue
        md5s = weights_md5(model_hash, entry.path.relative_to(catalog.root).as_posix())
        base = {L.MODEL_HASH: model_hash.digest, L.WEIGHTS_MD5: weights_md5_value(md5s) or "none"}
        versions[name] = {}
        for kind in AcceleratorKind:
            commit = store.commit(tagged_image(env_spec.registry, name, model_hash, kind, kinds.of(entry.spec, kind))) \
                if env_spec is not None and store is not None else None
            versions[name][kind.value] = {**base, L.GIT_COMMIT: commit} if commit else dict(base)
    return versions
