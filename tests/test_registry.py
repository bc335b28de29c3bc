"""The registry adapter against a local stdlib HTTP stand-in of the OCI manifest HEAD + token flow."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from reconciler.errors import RegistryError
from reconciler.build.registry import DOCKER_HUB, ImageRef, RegistryClient

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()


class Registry(ThreadingHTTPServer):
    """Images: {repository: {tag: digest}}; auth: None, 'basic' or 'bearer'."""

    def __init__(self, auth: str | None, images: dict[str, dict[str, str]], user=("ci", "s3cret")) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.auth, self.images, self.user = auth, images, user
        self.requests: list[tuple[str, str, str | None]] = []
        self.tokens: dict[str, str] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Registry

    def log_message(self, *args) -> None:
        pass

    def _basic_ok(self) -> bool:
        expected = "Basic " + base64.b64encode(":".join(self.server.user).encode()).decode()
        return self.headers.get("Authorization") == expected

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.requests.append(("GET", url.path, self.headers.get("Authorization")))
        if url.path != "/token":
            self.send_response(405)
            self.end_headers()
            return
        if not self._basic_ok():
            self.send_response(401)
            self.end_headers()
            return
        scope = parse_qs(url.query)["scope"][0]
        token = "tok-" + hashlib.sha1(scope.encode()).hexdigest()[:8]
        self.server.tokens[token] = scope
        body = json.dumps({"token": token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.server.requests.append(("HEAD", self.path, self.headers.get("Authorization")))
        _, v2, rest = self.path.partition("/v2/")
        repository, _, reference = rest.partition("/manifests/")
        scope = f"repository:{repository}:pull"
        auth = self.headers.get("Authorization", "")
        if self.server.auth == "bearer" and self.server.tokens.get(auth.removeprefix("Bearer ")) != scope:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{self.server.host}/token",'
                                                 f'service="stand-in",scope="{scope}"')
            self.end_headers()
            return
        if self.server.auth == "basic" and not self._basic_ok():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="stand-in"')
            self.end_headers()
            return
        digest = self.server.images.get(repository, {}).get(reference)
        if digest is None and reference in self.server.images.get(repository, {}).values():
            digest = reference
        if digest is None:
            self.send_response(404)
            self.end_headers()
            return
        assert "application/vnd.oci.image.index.v1+json" in self.headers.get("Accept", "")
        self.send_response(200)
        self.send_header("Docker-Content-Digest", digest)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.end_headers()


@pytest.fixture
def serve():
    servers = []

    def start(auth: str | None, images: dict) -> Registry:
        server = Registry(auth, images)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("RECONCILER_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("RECONCILER_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


IMAGES = {"models/iris": {"abc123": DIGEST}}



def image_digest(image: str, **kwargs) -> str | None:
    """The digest of one image reference through a RegistryClient for its host (None: no such image)."""
    ref = ImageRef.parse(image)
    with RegistryClient(ref.host, **kwargs) as client:
        return client.image_digest(ref)

def test_bearer_token_flow_finds_digest_and_reuses_token(serve) -> None:
    reg = serve("bearer", IMAGES)
    with RegistryClient(reg.host, username="ci", password="s3cret") as client:
        assert client.manifest_digest("models/iris", "abc123") == DIGEST
        assert client.manifest_digest("models/iris", "nope") is None
    methods = [(m, p) for m, p, _ in reg.requests]
    assert methods == [("HEAD", "/v2/models/iris/manifests/abc123"), ("GET", "/token"),
                       ("HEAD", "/v2/models/iris/manifests/abc123"),
                       ("HEAD", "/v2/models/iris/manifests/nope")]  # token reused: no second challenge
    assert not any(m == "GET" and "/manifests/" in p for m, p, _ in reg.requests)  # never pulled


def test_credentials_from_docker_config(serve, tmp_path, monkeypatch) -> None:
    reg = serve("bearer", IMAGES)
    (tmp_path / "docker").mkdir()
    auth = base64.b64encode(b"ci:s3cret").decode()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    assert image_digest(f"{reg.host}/models/iris:abc123") == DIGEST


def test_wrong_credentials_are_a_registry_error_with_a_fix(serve) -> None:
    reg = serve("bearer", IMAGES)
    with pytest.raises(RegistryError) as err:
        image_digest(f"{reg.host}/models/iris:abc123", username="ci", password="wrong")
    assert "token service" in err.value.message and "RECONCILER_REGISTRY_USERNAME" in err.value.fix


def test_basic_challenge_and_anonymous_registry(serve, monkeypatch) -> None:
    basic = serve("basic", IMAGES)
    with pytest.raises(RegistryError, match="asks for credentials"):
        image_digest(f"{basic.host}/models/iris:abc123")
    monkeypatch.setenv("RECONCILER_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("RECONCILER_REGISTRY_PASSWORD", "s3cret")
    assert image_digest(f"{basic.host}/models/iris:abc123") == DIGEST
    anonymous = serve(None, IMAGES)
    assert image_digest(f"{anonymous.host}/models/iris@{DIGEST}") == DIGEST
    assert image_digest(f"{anonymous.host}/models/other:abc123") is None


def test_unreachable_registry_is_a_registry_error(serve) -> None:
    reg = serve(None, IMAGES)
    host = reg.host
    reg.shutdown()
    reg.server_close()
    with pytest.raises(RegistryError, match="cannot reach registry"):
        image_digest(f"{host}/models/iris:abc123", deadline=2)


def test_image_ref_parsing() -> None:
    assert ImageRef.parse("ghcr.io/acme/models/iris:abc") == ImageRef("ghcr.io", "acme/models/iris", "abc")
    assert ImageRef.parse("localhost:5001/m@" + DIGEST) == ImageRef("localhost:5001", "m", None, DIGEST)
    assert ImageRef.parse("python") == ImageRef(DOCKER_HUB, "library/python")
    assert ImageRef.parse("docker.io/acme/m:1") == ImageRef(DOCKER_HUB, "acme/m", "1")
    assert str(ImageRef.parse("localhost:5001/m:t")) == "localhost:5001/m:t"


def test_image_labels_from_a_real_registry(oci_registry):
    """The labels of an image (a plain manifest and an OCI index) read from CNCF distribution itself."""
    commit = "ab" * 20
    plain = oci_registry.push("models/iris", "0123456789ab", {"gitops.ml/git-commit": commit})
    indexed = oci_registry.push("models/iris", "0123456789ab-cuda", {"gitops.ml/git-commit": "cd" * 20}, index=True)
    oci_registry.push("models/iris", "unlabelled")
    with RegistryClient(oci_registry.host) as client:
        assert client.image_digest(f"{oci_registry.host}/models/iris:0123456789ab") == plain
        assert client.image_digest(f"{oci_registry.host}/models/iris:0123456789ab-cuda") == indexed
        assert client.image_labels(f"{oci_registry.host}/models/iris:0123456789ab") == {"gitops.ml/git-commit": commit}
        assert client.image_labels(f"{oci_registry.host}/models/iris@{plain}")["gitops.ml/git-commit"] == commit
        assert client.image_labels(f"{oci_registry.host}/models/iris:0123456789ab-cuda") == {
            "gitops.ml/git-commit": "cd" * 20}
        assert client.image_labels(f"{oci_registry.host}/models/iris:unlabelled") == {}
        with pytest.raises(RegistryError, match="HTTP 404"):
            client.image_labels(f"{oci_registry.host}/models/iris:missing")


def test_the_test_registry_keeps_answering_after_logging_more_than_a_pipe_holds(oci_registry):
    """docker-registry logs each 404 of a push's existence checks at level error (~1 KB a line). Its log once went
    to a pipe nobody read: after 64 KiB the registry blocked on its next log line and every client hung (the e2e
    tier's `podman push`). 300 unknown manifests are ~300 KB of log; the registry must still answer."""
    for i in range(300):
        assert oci_registry.client.head(f"/v2/models/absent/manifests/tag-{i}").status_code == 404
    assert oci_registry.log.stat().st_size > 64 * 1024
    assert oci_registry.client.get("/v2/").status_code == 200
