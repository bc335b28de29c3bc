"""A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on a loopback port.

There is no container engine here, so images are pushed the way any client does it, over the
distribution API: the config and layer blobs (monolithic uploads), then the manifest, optionally an
index pointing at it. What the registry stores, how it answers HEAD/GET and which media types it
accepts are the registry's own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.requirements import missing

BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OCIRegistry:
    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry") or BINARY
        if not Path(binary).is_file():
            missing("Debian's docker-registry is not installed: `apt-get install docker-registry` (as .ci/run does)")
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "version": 0.1, "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
            "http": {"addr": self.host}}))
        # its log goes to a file, never to a pipe: the registry logs every 404 of a push's blob and manifest checks
        # at level error (~1 KB each), and a pipe nobody reads fills at 64 KiB, after which the registry blocks on
        # its next log line and every client hangs (the e2e tier's `podman push` did, after a few pushes)
        self.log = root / f"registry-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        self.client = httpx.Client(base_url=f"http://{self.host}", timeout=10)
        end = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: " + self.log.read_text(errors="replace")[-3000:])
            try:
                if self.client.get("/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("docker-registry did not answer /v2/")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.unlink(missing_ok=True)

    def _blob(self, repository: str, data: bytes) -> str:
        digest = _digest(data)
        start = self.client.post(f"/v2/{repository}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
        done = self.client.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data,
                               headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return digest

    def _manifest(self, repository: str, reference: str, body: dict, media_type: str) -> str:
        data = json.dumps(body).encode()
        answer = self.client.put(f"/v2/{repository}/manifests/{reference}", content=data,
                                 headers={"Content-Type": media_type})
        assert answer.status_code == 201, answer.text
        return answer.headers["docker-content-digest"]

    def push(self, repository: str, tag: str, labels: dict[str, str] | None = None, *, index: bool = False) -> str:
        """Push a one-layer linux/amd64 image with `labels`; `index`: tag an OCI index pointing at it. Its digest."""
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            info = tarfile.TarInfo("hello.txt")
            content = f"{repository}:{tag}\n".encode()
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        compressed = gzip.compress(layer.getvalue(), mtime=0)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {}},
                             "rootfs": {"type": "layers", "diff_ids": [_digest(layer.getvalue())]}}).encode()
        config_digest, layer_digest = self._blob(repository, config), self._blob(repository, compressed)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                               "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                                "size": len(compressed)}]}
        if not index:
            return self._manifest(repository, tag, manifest, OCI_MANIFEST)
        data = json.dumps(manifest).encode()
        image = self._manifest(repository, _digest(data), manifest, OCI_MANIFEST)
        return self._manifest(repository, tag, {
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": image, "size": len(data),
                           "platform": {"architecture": "amd64", "os": "linux"}}]}, OCI_INDEX)


@pytest.fixture
def oci_registry(tmp_path):
    registry = OCIRegistry(tmp_path / "oci-registry")
    try:
        yield registry
    finally:
        registry.close()
