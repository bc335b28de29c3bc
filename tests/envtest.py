"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ kube-controller-manager on demand)
started from ``$KUBEBUILDER_ASSETS``, the convention of controller-runtime's envtest.

Where the binaries come from, in order: ``$KUBEBUILDER_ASSETS``; ``<repo>/.cache/envtest`` (unpacked there from
the project's ``../shared/envtest`` when that folder sits beside the checkout); ``/usr/local/kubebuilder/bin``
(envtest's default); ``setup-envtest use 1.36 -p path`` when setup-envtest is installed
(``go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest``).

The control plane listens on free loopback ports with a self-signed serving certificate, a static token
file (``admin`` in ``system:masters``, ``kcm`` for the controller-manager), service-account signing keys (so
TokenRequest and ServiceAccount tokens work), ``--authorization-mode=Node,RBAC`` and an audit log of every
request (level Metadata: user, verb, URI with ``dryRun=All``), which is how tests count requests and writes.

Used through the pytest fixtures in :mod:`tests.envtest_fixtures`; this module holds the process handling
and has no pytest fixtures of its own, so benchmarks can start a control plane too::

    with ControlPlane.start(Path("/tmp/cp")) as cp:
        kube = cp.client()
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """``../shared`` of the checkout, where the project's own CI keeps envtest (a worktree may sit one level
    deeper, e.g. /work/wt/iN -> /work/shared). Optional: a plain clone has none."""
    for parent in PROJECT.parents:
        if (parent / "shared" / "envtest").is_dir():
            return parent / "shared"
    return PROJECT.parent / "shared"


SHARED = _shared()
SCHEMAS = PROJECT / "tests" / "upstream-schemas"  # in the repository (see its README for sources and licence)
# the upstream CRDs every test server gets: what the project writes besides built-in kinds
UPSTREAM_CRDS = ("gateway.networking.k8s.io_httproutes.crd.yaml", "networking.istio.io_virtualservices.crd.yaml",
                 "monitoring.coreos.com_podmonitors.crd.yaml", "keda.sh_scaledobjects.crd.yaml")
BINARIES = ("etcd", "kube-apiserver")
INSTALL_SETUP_ENVTEST = "go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest"
HOW_TO_GET = ("install setup-envtest (`" + INSTALL_SETUP_ENVTEST + "`, Go >= 1.22), then "
              "`export KUBEBUILDER_ASSETS=$(setup-envtest use 1.36 -p path)` (downloads etcd and kube-apiserver "
              "once); or, with the project's ../shared/envtest beside the checkout, "
              "`export KUBEBUILDER_ASSETS=$(../shared/envtest/unpack.sh .cache/envtest)`")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class EnvtestUnavailable(RuntimeError):
    """The control-plane binaries are not installed (or not executable)."""


def _holds_binaries(folder: Path) -> bool:
    return all(os.access(folder / b, os.X_OK) for b in BINARIES)


def _from_shared(dest: Path) -> Path | None:
    """Unpack the project's ../shared/envtest into ``dest`` (once; a lock keeps parallel workers apart)."""
    import fcntl

    unpack = SHARED / "envtest" / "unpack.sh"
    if not unpack.is_file():
        return None
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / "envtest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _holds_binaries(dest):
            proc = subprocess.run(["bash", str(unpack), str(dest)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise EnvtestUnavailable(f"{unpack} {dest} failed: {proc.stderr.strip()}")
    return dest if _holds_binaries(dest) else None


def _from_setup_envtest() -> Path | None:
    """``setup-envtest use 1.36 -p path`` when setup-envtest is installed (on PATH or in ~/go/bin)."""
    tool = shutil.which("setup-envtest") or shutil.which("setup-envtest", path=str(Path.home() / "go" / "bin"))
    if tool is None:
        return None
    proc = subprocess.run([tool, "use", "1.36", "-p", "path"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise EnvtestUnavailable(f"`setup-envtest use 1.36 -p path` failed: {proc.stderr.strip()[-500:]}")
    folder = Path(proc.stdout.strip())
    return folder if _holds_binaries(folder) else None


def find_assets() -> Path | None:
    """The folder holding the envtest binaries, or None. In order: ``$KUBEBUILDER_ASSETS``; ``<repo>/.cache/envtest``
    (unpacked from the project's ``../shared/envtest`` when that sits beside the checkout); envtest's default
    ``/usr/local/kubebuilder/bin``; ``setup-envtest use 1.36 -p path`` when setup-envtest is installed."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env:
        if _holds_binaries(Path(env)):
            return Path(env)
        raise EnvtestUnavailable(f"KUBEBUILDER_ASSETS={env} does not hold executable {' and '.join(BINARIES)}: "
                                 + HOW_TO_GET)
    cache = PROJECT / ".cache" / "envtest"
    for folder in (cache, Path("/usr/local/kubebuilder/bin")):
        if _holds_binaries(folder):
            return folder
    return _from_shared(cache) or _from_setup_envtest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str,
                     context: str = "envtest") -> Path:
    """A kubeconfig for ``server`` authenticating as ``user`` with a bearer ``token``."""
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": context, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class AuditEvent:
    user: str
    verb: str
    uri: str
    code: int
    namespace: str | None
    resource: str | None
    subresource: str | None
    name: str | None
    api_group: str

    @property
    def dry_run(self) -> bool:
        return "dryRun=All" in self.uri

    @property
    def write(self) -> bool:
        """A request that changes stored state (dry runs and reads apart)."""
        return self.verb in ("create", "update", "patch", "delete", "deletecollection") and not self.dry_run


class AuditLog:
    """The API server's audit log, read as events. ``mark()`` then ``since(mark)`` gives one test's requests.

    The apiserver writes an event after it has sent the response, so a reader may be ahead of the file:
    ``since`` first sends a marker request of its own and reads until that marker is in the log.
    """

    def __init__(self, path: Path, plane: "ControlPlane") -> None:
        self.path = path
        self.plane = plane

    def mark(self) -> int:
        """A byte offset at the start of a line. The file's size is not one: the server appends an event
        with one write, but a reader can see a page of it before the rest, and a mark in the middle of a
        line made `since` parse half an event (a JSONDecodeError in CI)."""
        self._sync()
        if not self.path.exists():
            return 0
        with self.path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(0, size - 65536)
            log.seek(start)
            tail = log.read(size - start)
        newline = tail.rfind(b"\n")
        return start + newline + 1 if newline >= 0 else start

    def _sync(self, timeout: float = 30.0) -> None:
        marker = f"audit-marker-{uuid.uuid4().hex[:12]}"
        # search everything written since the request, not the log's last 64 KiB: on a busy server
        # (controller-manager, a loaded machine) more than that can land after the marker
        start = self.path.stat().st_size if self.path.exists() else 0
        self.plane.raw("GET", f"/api/v1/namespaces/default/configmaps/{marker}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.path.exists():
                with self.path.open("rb") as log:
                    log.seek(start)
                    if marker.encode() in log.read():
                        return
            time.sleep(0.02)
        raise TimeoutError(f"the audit log {self.path} never showed marker {marker}")

    def since(self, mark: int = 0, *, user: str | None = None) -> list[AuditEvent]:
        """Events after ``mark`` (a byte offset from ``mark()``), markers left out, optionally of one user."""
        self._sync()
        events = []
        with self.path.open("rb") as f:
            f.seek(mark)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # still being written, and after the marker `_sync` waited for: not this test's
                if not line.strip():
                    continue
                raw = json.loads(line)
                ref = raw.get("objectRef") or {}
                event = AuditEvent(
                    user=(raw.get("user") or {}).get("username", ""), verb=raw.get("verb", ""),
                    uri=raw.get("requestURI", ""), code=int((raw.get("responseStatus") or {}).get("code") or 0),
                    namespace=ref.get("namespace"), resource=ref.get("resource"),
                    subresource=ref.get("subresource"), name=ref.get("name"), api_group=ref.get("apiGroup", ""))
                if (event.name or "").startswith("audit-marker-"):
                    continue
                if user is not None and event.user != user:
                    continue
                events.append(event)
        return events


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (and, once asked for, kube-controller-manager)."""

    assets: Path
    data: Path
    api_port: int = 0
    etcd_port: int = 0
    admin_token: str = ""
    kcm_token: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- paths ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.data / "pki" / "serving" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``system:masters``)."""
        return self.data / "kubeconfig"

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.data / "audit.log", self)

    def log(self, component: str) -> Path:
        return self.data / "logs" / f"{component}.log"

    # -- start / stop --------------------------------------------------------------------------------------

    @classmethod
    def start(cls, data: Path, assets: Path | None = None, *, extra_args: Iterable[str] = (),
              crds: Iterable[Path] | None = None, ready_timeout: float = 60.0) -> "ControlPlane":
        assets = assets or find_assets()
        if assets is None:
            raise EnvtestUnavailable("no envtest binaries found: " + HOW_TO_GET)
        data.mkdir(parents=True, exist_ok=True)
        crds = list(crds if crds is not None else
                    [SCHEMAS / f for f in UPSTREAM_CRDS])
        missing = [str(p) for p in crds if not p.is_file()]
        if missing:
            raise EnvtestUnavailable(f"missing CRD files {missing}: the tests install the upstream CRDs of "
                                     "tests/upstream-schemas/ (restore them with `git checkout -- tests/upstream-schemas`)")
        plane = cls(assets=assets, data=data.resolve())
        try:
            plane._start(list(extra_args), ready_timeout)
            plane.install_crds(crds)
        except BaseException:
            plane.stop()
            raise
        return plane

    def _start(self, extra_args: list[str], ready_timeout: float) -> None:
        pki = self.data / "pki"
        (self.data / "logs").mkdir(parents=True, exist_ok=True)
        pki.mkdir(exist_ok=True)
        if not (pki / "sa.key").exists():
            _run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"])
            _run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])
        self.admin_token, self.kcm_token = _token(), _token()
        tokens = pki / "tokens.csv"
        tokens.write_text(f"{self.admin_token},admin,admin-uid,system:masters\n"
                          f"{self.kcm_token},kcm,kcm-uid,system:masters\n")
        tokens.chmod(0o600)
        policy = self.data / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        last_error = ""
        for _attempt in range(3):  # a port picked free can be taken before etcd/apiserver bind it
            self.etcd_port, peer, self.api_port = free_port(), free_port(), free_port()
            shutil.rmtree(self.data / "etcd", ignore_errors=True)
            self._spawn("etcd", [
                "--name", "envtest", "--data-dir", str(self.data / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"envtest=http://127.0.0.1:{peer}", "--unsafe-no-fsync"])
            self._spawn("kube-apiserver", [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
                f"--cert-dir={pki / 'serving'}", f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
                f"--audit-policy-file={policy}", f"--audit-log-path={self.data / 'audit.log'}",
                "--audit-log-maxsize=0", *extra_args])
            try:
                self._wait_ready(ready_timeout)
                break
            except RuntimeError as exc:
                last_error = str(exc)
                in_use = any("address already in use" in self._tail(c) for c in ("etcd", "kube-apiserver"))
                self.stop()
                if not in_use:
                    raise
        else:
            raise RuntimeError(last_error)
        write_kubeconfig(self.kubeconfig, self.url, self.ca_file, "admin", self.admin_token)

    def _spawn(self, binary: str, args: list[str]) -> None:
        log = self.log(binary).open("ab")
        self.procs[binary] = subprocess.Popen([str(self.assets / binary), *args], stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True,
                                              preexec_fn=_die_with_parent)
        log.close()

    def _tail(self, component: str, lines: int = 15) -> str:
        path = self.log(component)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self._tail(name)}")
            if self.ca_file.exists():
                try:
                    status, _ = self.raw("GET", "/readyz", timeout=2)
                    if status == 200:
                        return
                except (OSError, ssl.SSLError):
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {timeout:.0f}s:\n{self._tail('kube-apiserver')}")

    def start_controller_manager(self, timeout: float = 60.0, *, node_lifecycle: bool = False) -> None:
        """Start kube-controller-manager (ReplicaSets and Pods for Deployments, garbage collection, namespace
        deletion, ServiceAccounts). Idempotent; it then runs until stop(). ``node_lifecycle``: also the node
        lifecycle controller, for a real kubelet (tests/node_fixtures.py): it lifts the not-ready taint a
        node registers with once the node is Ready."""
        proc = self.procs.get("kube-controller-manager")
        if proc is not None and proc.poll() is None:
            return
        if not os.access(self.assets / "kube-controller-manager", os.X_OK):
            raise EnvtestUnavailable(f"no kube-controller-manager in {self.assets}: " + HOW_TO_GET)
        kcm_config = write_kubeconfig(self.data / "kcm.kubeconfig", self.url, self.ca_file, "kcm", self.kcm_token)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kcm_config}", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--authentication-skip-lookup=true", "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={self.data / 'pki' / 'sa.key'}", f"--root-ca-file={self.ca_file}",
            # no node lifecycle: simulated nodes (tests/sim_nodes.py) send no kubelet heartbeats, and the
            # controller would taint them unreachable and evict their Pods after 40 s
            "--controllers=*,-bootstrap-signer-controller,-token-cleaner-controller"
            + ("" if node_lifecycle else ",-node-lifecycle-controller")])
        # ready once the ServiceAccount controller has made the `default` ServiceAccount of `default`
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs["kube-controller-manager"]
            if proc.poll() is not None:
                raise RuntimeError(f"kube-controller-manager exited with {proc.returncode}:\n"
                                   f"{self._tail('kube-controller-manager')}")
            status, _ = self.raw("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            if status == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"kube-controller-manager made no ServiceAccount in {timeout:.0f}s:\n"
                           f"{self._tail('kube-controller-manager')}")

    @property
    def controller_manager_running(self) -> bool:
        proc = self.procs.get("kube-controller-manager")
        return proc is not None and proc.poll() is None

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> "ControlPlane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it -------------------------------------------------------------------------------------

    def raw(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            content_type: str = "application/json", timeout: float = 30) -> tuple[int, Any]:
        """One request with only the standard library (used before a client exists, and by the audit marker)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": content_type,
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def client(self, kubeconfig: Path | None = None, **kwargs: Any):
        """A :class:`reconciler.cluster.kube.KubeClient` (admin unless another kubeconfig is given)."""
        from reconciler.cluster.kube import KubeClient

        return KubeClient.from_kubeconfig(kubeconfig or self.kubeconfig, **kwargs)

    def install_crds(self, files: Iterable[Path], timeout: float = 60.0) -> list[str]:
        """Create (or update) the CustomResourceDefinitions in ``files`` and wait until each is Established."""
        names = []
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                name = doc["metadata"]["name"]
                status, body = self.raw(
                    "PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                             "?fieldManager=envtest&force=true", doc, content_type="application/apply-patch+yaml")
                if status >= 300:
                    raise RuntimeError(f"installing CRD {name} from {path}: HTTP {status}: {body}")
                names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                _, crd = self.raw("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = ((crd or {}).get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions) \
                        and self._served(crd):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established after {timeout:.0f}s")
                time.sleep(0.1)
        return names

    def _served(self, crd: dict) -> bool:
        """Whether discovery lists the CRD's kind in every served version: Established comes first, and a
        client applying a custom resource in between meets NoKindMatch (controller-runtime's envtest
        waits for discovery the same way)."""
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            status, body = self.raw("GET", f"/apis/{spec['group']}/{version['name']}")
            kinds = {r.get("kind") for r in (body or {}).get("resources", [])} if isinstance(body, dict) else set()
            if status != 200 or spec["names"]["kind"] not in kinds:
                return False
        return True

    def service_account_kubeconfig(self, name: str, namespace: str, path: Path,
                                   expiration_seconds: int = 3600) -> Path:
        """A kubeconfig holding a fresh token of ServiceAccount ``namespace/name`` (TokenRequest API); the
        ServiceAccount must exist. Use it to run code with exactly the RBAC that account is bound to."""
        status, body = self.raw("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds}})
        if status != 201:
            raise RuntimeError(f"TokenRequest for {namespace}/{name}: HTTP {status}: {body}")
        return write_kubeconfig(path, self.url, self.ca_file, f"system:serviceaccount:{namespace}:{name}",
                                body["status"]["token"])

    def delete_namespaces(self, names: Iterable[str]) -> None:
        """Delete namespaces without waiting: a real one goes Terminating and lingers until the
        controller-manager's namespace controller has emptied it."""
        for name in names:
            self.raw("DELETE", f"/api/v1/namespaces/{name}?propagationPolicy=Background")


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy (returned); TimeoutError after ``timeout`` s.
    For waiting on controllers, never for asserting speed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting{' for ' + what if what else ''} after {timeout:.0f}s")
        time.sleep(interval)


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except FileNotFoundError:
        raise EnvtestUnavailable(f"{cmd[0]} is not installed (needed for service-account keys)") from None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the test process dies, so a killed pytest leaks nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
