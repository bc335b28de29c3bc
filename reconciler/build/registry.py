"""Container registry adapter: does an image exist, what is its digest, what labels does it carry? (OCI
distribution spec)

`HEAD /v2/<name>/manifests/<tag>` answers the first two: an image is asked about, never pulled. Its
labels (`image_labels`: the manifest, for an index the linux/amd64 one, and the config blob, a few KB)
are read only when the build needs the commit an image was built from and the image lock lacks it. A 401 with a
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge is answered with the token
flow (the realm is asked for a token, with basic credentials when we have some); a `Basic`
challenge is answered with the credentials directly.

Credentials, first match wins: explicit arguments, `RECONCILER_REGISTRY_USERNAME` /
`RECONCILER_REGISTRY_PASSWORD`, or the `auths` entry of `~/.docker/config.json` (`$DOCKER_CONFIG`).
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from reconciler import net
from reconciler.errors import RegistryError
from reconciler.labels import GIT_COMMIT

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_METADATA_BYTES = 4 * 1024 * 1024  # a manifest or an image config; layers are never fetched
DOCKER_HUB = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageRef:
    host: str  # e.g. ghcr.io, localhost:5001
    repository: str  # e.g. acme/models/iris-classifier
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ImageRef":
        """'ghcr.io/acme/m:tag', 'localhost:5001/m@sha256:..', 'library/python' (Docker Hub)."""
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, repository = first, rest
        else:
            host, repository = DOCKER_HUB, ref if "/" in ref else f"library/{ref}"
        if host == "docker.io":
            host = DOCKER_HUB
        return cls(host, repository, tag, digest)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


def docker_config_credentials(host: str) -> tuple[str, str] | None:
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((config_dir / "config.json").read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    for key in (host, f"https://{host}", f"http://{host}", *(["https://index.docker.io/v1/"] if host == DOCKER_HUB else [])):
        auth = (auths.get(key) or {}).get("auth")
        if auth:
            try:
                user, _, password = base64.b64decode(auth).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user, password
    return None


class RegistryClient:
    """Asks one registry host about manifests. Plain HTTP for localhost, HTTPS otherwise; every request
    must be answered in full within ``deadline`` seconds (reconciler.net)."""

    def __init__(self, host: str, *, username: str | None = None, password: str | None = None,
                 insecure: bool | None = None, deadline: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.host = host
        plain = insecure if insecure is not None else host.split(":")[0] in ("localhost", "127.0.0.1", "::1")
        self.base = f"{'http' if plain else 'https'}://{host}"
        if username is None:
            env_user = os.environ.get("RECONCILER_REGISTRY_USERNAME")
            if env_user:
                username, password = env_user, os.environ.get("RECONCILER_REGISTRY_PASSWORD", "")
            else:
                found = docker_config_credentials(host)
                if found:
                    username, password = found
        self._basic = (username, password or "") if username else None
        # each whole request (redirects, retries and the body included) within `deadline` seconds
        self._client = net.client(deadline, follow_redirects=True,
                                  transport=transport or httpx.HTTPTransport(retries=2))
        self._tokens: dict[str, str] = {}  # scope -> bearer token

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest of `repository:reference`, or None when the registry has no such manifest."""
        url = f"{self.base}/v2/{repository}/manifests/{reference}"
        scope = f"repository:{repository}:pull"
        response = self._send(url, scope)
        if response.status_code == 401:
            response = self._send(url, scope, challenge=response.headers.get("www-authenticate", ""))
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.host} refused access to {repository} (HTTP {response.status_code})",
                fix="log in (`docker login " + self.host + "`) or set RECONCILER_REGISTRY_USERNAME and "
                    "RECONCILER_REGISTRY_PASSWORD to credentials that can pull " + repository)
        if response.status_code != 200:
            raise RegistryError(f"registry {self.host} answered HTTP {response.status_code} for {url}",
                                fix="check the registry address in the environment's `registry:` field and "
                                    "that the registry is up")
        digest = response.headers.get("docker-content-digest", "")
        if not DIGEST.match(digest):
            raise RegistryError(f"registry {self.host} gave no usable Docker-Content-Digest for {repository}:{reference}",
                                fix="use a registry that implements the OCI distribution spec's digest header")
        return digest

    def image_digest(self, image: str | ImageRef) -> str | None:
        ref = ImageRef.parse(image) if isinstance(image, str) else image
        return self.manifest_digest(ref.repository, ref.digest or ref.tag or "latest")

    def image_labels(self, image: str | ImageRef) -> dict[str, str]:
        """The image config's `Labels` (an index: its linux/amd64 image, else its first). {} when it has none.
        Raises RegistryError when the image is missing or its metadata is not what the OCI spec says."""
        ref = ImageRef.parse(image) if isinstance(image, str) else image
        manifest = self._json(ref.repository, f"manifests/{ref.digest or ref.tag or 'latest'}")
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            entries = [m for m in manifest.get("manifests") or [] if isinstance(m, dict)]
            amd64 = [m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"
                     and (m.get("platform") or {}).get("os") == "linux"]
            chosen = (amd64 or entries or [{}])[0].get("digest", "")
            if not DIGEST.match(str(chosen)):
                raise RegistryError(f"registry {self.host}: the index of {ref} lists no image manifest",
                                    fix="push a single-platform image or an index with a linux/amd64 entry")
            manifest = self._json(ref.repository, f"manifests/{chosen}")
        config = (manifest.get("config") or {}).get("digest", "")
        if not DIGEST.match(str(config)):
            raise RegistryError(f"registry {self.host}: the manifest of {ref} names no config blob",
                                fix="use a registry and builder that write OCI / Docker v2 image manifests")
        labels = (self._json(ref.repository, f"blobs/{config}").get("config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def _json(self, repository: str, path: str) -> dict:
        url = f"{self.base}/v2/{repository}/{path}"
        scope = f"repository:{repository}:pull"
        response = self._send(url, scope, method="GET")
        if response.status_code == 401:
            response = self._send(url, scope, challenge=response.headers.get("www-authenticate", ""), method="GET")
        if response.status_code != 200:
            raise RegistryError(f"registry {self.host} answered HTTP {response.status_code} for {url}",
                                fix="check that the image exists and the credentials may pull it")
        if len(response.content) > MAX_METADATA_BYTES:
            raise RegistryError(f"registry {self.host}: {url} is larger than {MAX_METADATA_BYTES} bytes",
                                fix="this is not an image manifest or config; check the registry address")
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RegistryError(f"registry {self.host}: {url} is not a JSON object",
                                fix="check the registry address in the environment's `registry:` field")
        return data

    # ------------------------------------------------------------------ HTTP

    def _send(self, url: str, scope: str, challenge: str | None = None, method: str = "HEAD") -> httpx.Response:
        headers = {"Accept": MANIFEST_TYPES}
        if challenge is not None:
            scheme, params = _challenge(challenge)
            if scheme == "bearer":
                headers["Authorization"] = f"Bearer {self._token(params, scope)}"
            elif scheme == "basic" and self._basic:
                headers["Authorization"] = "Basic " + base64.b64encode(":".join(self._basic).encode()).decode()
            else:
                raise RegistryError(f"registry {self.host} asks for credentials ({challenge or 'no challenge'})",
                                    fix="set RECONCILER_REGISTRY_USERNAME / RECONCILER_REGISTRY_PASSWORD "
                                        f"or run `docker login {self.host}`")
        elif scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        return self._request(method, url, headers=headers)

    def _token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} sent a Bearer challenge without a realm",
                                fix="check the registry's token service configuration")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", params.get("scope") or scope)) if v}
        response = self._request("GET", realm, params=query, auth=self._basic)
        if response.status_code != 200:
            raise RegistryError(f"token service {realm} answered HTTP {response.status_code} for {query.get('scope')}",
                                fix="check the registry credentials (RECONCILER_REGISTRY_USERNAME / "
                                    f"RECONCILER_REGISTRY_PASSWORD, or `docker login {self.host}`)")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"token service {realm} returned no token", fix="check the registry's token service")
        self._tokens[scope] = token
        return token

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach registry {self.host}: {exc}",
                                fix="check the registry address in the environment's `registry:` field and the "
                                    "network; for a local registry start it (e.g. `docker run -p 5001:5000 registry:2`)") from None


def _client(tagged: str, clients: dict) -> tuple["RegistryClient", ImageRef]:
    """One client per registry host for a build run (`clients`: host -> client, closed by the caller)."""
    ref = ImageRef.parse(tagged)
    if ref.host not in clients:
        clients[ref.host] = RegistryClient(ref.host, deadline=10)
    return clients[ref.host], ref


def registry_digest(tagged: str, clients: dict) -> str | None:
    """The digest of a tagged image in its registry, None when missing. Raises RegistryError."""
    client, ref = _client(tagged, clients)
    return client.image_digest(ref)


def image_commit(tagged: str, clients: dict, notes: list[str]) -> str | None:
    """The commit an image in the registry was built from: its `gitops.ml/git-commit` label (both image
    builds set it from the bento's gitops-version.json). None when it has none or cannot be read (said in `notes`)."""

    client, ref = _client(tagged, clients)
    try:
        return client.image_labels(ref).get(GIT_COMMIT)
    except RegistryError as exc:
        notes.append(f"the image's build commit is unknown ({exc.message})")
        return None
