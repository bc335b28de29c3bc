"""What every model service shares: the accelerator it runs on, readiness, and per-request version tracing.

The model services (models/<name>/service.py) import this module; the build stages it into each bento
(it is shared code of the model's content hash). Standard library only at import time, so every image
(cpu, CUDA, Neuron) can load it.

Accelerators. The image built for a pool kind says which kind it is (`MODEL_ACCELERATOR_KIND`), how to find
its device on the node (`MODEL_DEVICE_GLOBS`: device nodes under /dev, the kind's `device_probe` in
reconciler/catalog/kinds.py) and, for a compiled kind, where the compiled artifact is
(`MODEL_ACCELERATOR_ARTIFACT`). Nothing here knows a kind by name: a new kind is one entry of the kind table.
`load_accelerated`:
  - no device probe (a CPU image), or no device on this node: the CPU model serves (say so in the log);
  - an image that names its kind (MODEL_ACCELERATOR_KIND) but carries no MODEL_DEVICE_GLOBS at all (built before
    the probe moved into the kind entry): NOT READY, saying to rebuild it, never a silent CPU on a device node;
  - the device is present and the artifact loads: the accelerator serves;
  - the device is present but the artifact is missing or fails to load: NOT READY, with the reason
    logged at ERROR and returned by `/readyz` (the service's `__is_ready__`): holding an
    `aws.amazon.com/neuron` device while silently running scikit-learn on the CPU is never right.

Batching. `serving.batching` in model.yaml reaches the pod as `MODEL_MAX_BATCH_SIZE` / `MODEL_MAX_LATENCY_MS`
(reconciler/render/manifests.py); an API decorated `@bentoml.api(**batching())` is batchable with those limits
when they are set and a plain API otherwise, so batching is declared in the spec, not in the service's code.
(`serving.concurrency` needs no code: BentoML reads it from `BENTOML_CONFIG_OVERRIDES`.)

Version tracing. The build writes `gitops-version.json` beside the service (model content hash, the
git commit the bento was built from, the DVC md5 of every weights file). `VersionMiddleware` adds
`X-Model-Version: hash=<...>; commit=<...>; weights-md5=<...>` to every HTTP response and counts
requests in `gitops_ml_requests_total{model_hash, git_commit, weights_md5, endpoint, status}`, so
"which version answered this request" is answerable from a response, a log line or a PromQL query.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("gitops_ml.serving")

VERSION_FILE = "gitops-version.json"
VERSION_HEADER = "X-Model-Version"
KIND_ENV = "MODEL_ACCELERATOR_KIND"
ARTIFACT_ENV = "MODEL_ACCELERATOR_ARTIFACT"
DEVICE_ENV = "MODEL_DEVICE_GLOBS"  # comma-separated globs under the device root (reconciler.catalog.accelerators)
DEV_ROOT_ENV = "MODEL_DEVICE_ROOT"  # where device nodes are looked for (default /dev); tests point it elsewhere


MAX_BATCH_SIZE_ENV = "MODEL_MAX_BATCH_SIZE"
MAX_LATENCY_ENV = "MODEL_MAX_LATENCY_MS"


# --------------------------------------------------------------------------- batching


def batching(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """`@bentoml.api` arguments for BentoML adaptive batching from the pod's environment: empty (a plain API)
    unless the model's spec declares `serving.batching`."""
    env = os.environ if environ is None else environ
    size = env.get(MAX_BATCH_SIZE_ENV)
    if not size:
        return {}
    settings: dict[str, Any] = {"batchable": True, "max_batch_size": int(size)}
    if env.get(MAX_LATENCY_ENV):
        settings["max_latency_ms"] = int(env[MAX_LATENCY_ENV])
    return settings


# --------------------------------------------------------------------------- accelerators


def device_probe(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The image's device probe (`MODEL_DEVICE_GLOBS`): the device nodes its kind is found by; empty: none."""
    env = os.environ if environ is None else environ
    return tuple(p.strip() for p in env.get(DEVICE_ENV, "").split(",") if p.strip())


def device_present(probe: tuple[str, ...], dev_root: str | os.PathLike | None = None) -> bool:
    """Whether this node gives the container a device node matching the probe (e.g. /dev/neuron0, /dev/nvidia0)."""
    root = Path(dev_root or os.environ.get(DEV_ROOT_ENV) or "/dev")
    return any(glob.glob(str(root / pattern)) for pattern in probe)


@dataclass
class AcceleratorState:
    kind: str  # cpu | gpu | inferentia: what the image was built for
    device: bool  # a device of that kind is present
    backend: str  # what serves: "cpu" or the kind
    error: str | None = None  # why the accelerator could not be used while its device is present

    @property
    def ready(self) -> bool:
        return self.error is None


def load_accelerated(loader: Callable[[Path], Any] | None, *, kind: str | None = None, artifact: str | None = None,
                     device: bool | None = None, probe: tuple[str, ...] | None = None) -> tuple[Any | None, AcceleratorState]:
    """(the accelerator model or None, its state). Never raises: a failure is a not-ready state.
    Defaults from the image's environment: `kind` MODEL_ACCELERATOR_KIND, `probe` MODEL_DEVICE_GLOBS, `artifact`
    MODEL_ACCELERATOR_ARTIFACT; `device` (whether the node gives the device) is probed when not given."""
    kind = kind or os.environ.get(KIND_ENV) or "cpu"
    if probe is None and KIND_ENV in os.environ and DEVICE_ENV not in os.environ:
        # the platform built this image (it set the kind) but gave it no probe: an image built before the probe
        # moved into the kind entry (c2a454e), whose overlay wrote none. Serving from the CPU on a device node
        # would be silent: NOT READY, loudly, until the image is rebuilt (every overlay now writes the variable,
        # empty for a kind with no device)
        error = (f"image built for {kind} without {DEVICE_ENV} (built before the device probe moved into the kind "
                 f"entry): rebuild the image with `reconciler build`, or set {DEVICE_ENV} (empty: no device)")
        log.error("NOT READY: %s", error)
        return None, AcceleratorState(kind, False, "none", error)
    probe = device_probe() if probe is None else probe
    if not probe and device is None:  # a kind with no device to find: the CPU serves
        return None, AcceleratorState(kind, False, "cpu")
    device = device_present(probe) if device is None else device
    if not device:
        log.warning("image built for %s but no %s device on this node: serving on the CPU", kind, kind)
        return None, AcceleratorState(kind, False, "cpu")
    artifact = artifact or os.environ.get(ARTIFACT_ENV)
    if loader is None or not artifact:  # an image for this kind that needs no compiled artifact (e.g. CUDA)
        return None, AcceleratorState(kind, True, "cpu" if loader is None else kind,
                                      None if loader is None else f"{ARTIFACT_ENV} is not set in a {kind} image")
    path = Path(artifact)
    if not path.is_file():
        error = f"{kind} device present but the compiled artifact {path} is missing"
    else:
        try:
            return loader(path), AcceleratorState(kind, True, kind)
        except Exception as exc:  # any load failure makes the pod not ready, loudly
            error = f"{kind} device present but {path} does not load: {type(exc).__name__}: {exc}"
    log.error("NOT READY: %s; refusing to fall back to the CPU while holding the device", error)
    return None, AcceleratorState(kind, True, "none", error)


# --------------------------------------------------------------------------- version tracing


def read_version(here: Path) -> dict[str, Any]:
    """The version the build recorded beside the service: {model_hash, git_commit, weights_md5: {path: md5}}."""
    try:
        data = json.loads((here / VERSION_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def version_header(version: dict[str, Any]) -> str:
    md5s = version.get("weights_md5") or {}
    weights = ",".join(md5s[k] for k in sorted(md5s)) if isinstance(md5s, dict) else str(md5s)
    return (f"hash={version.get('model_hash') or 'unknown'}; commit={version.get('git_commit') or 'unknown'}; "
            f"weights-md5={weights or 'unknown'}")


def version_labels(version: dict[str, Any]) -> dict[str, str]:
    md5s = version.get("weights_md5") or {}
    return {"model_hash": str(version.get("model_hash") or "unknown"),
            "git_commit": str(version.get("git_commit") or "unknown"),
            "weights_md5": ",".join(md5s[k] for k in sorted(md5s)) if isinstance(md5s, dict) else str(md5s)}


_COUNTER: Any = None


def _counter():
    global _COUNTER
    if _COUNTER is None:
        import bentoml

        _COUNTER = bentoml.metrics.Counter(
            name="gitops_ml_requests_total", documentation="requests by model version (gitops-ml)",
            labelnames=["model_hash", "git_commit", "weights_md5", "endpoint", "status"])
    return _COUNTER


class VersionMiddleware:
    """ASGI middleware: the version header on every response, and a request counter labelled with it."""

    def __init__(self, app: Any, version: dict[str, Any] | None = None) -> None:
        self.app = app
        self.version = version or {}
        self.header = version_header(self.version).encode()
        self.labels = version_labels(self.version)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_with_header(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = message.get("status", 500)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (VERSION_HEADER.lower().encode(), self.header)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            path = scope.get("path", "")
            if path not in ("/metrics", "/readyz", "/livez", "/healthz"):
                try:
                    _counter().labels(**self.labels, endpoint=path, status=str(status["code"])).inc()
                except Exception:  # metrics never break a request
                    log.debug("request counter unavailable", exc_info=True)


def traced(service: Any, here: Path) -> Any:
    """Add the version middleware to a BentoML service object (the decorated class); returns it."""
    version = read_version(here)
    service.add_asgi_middleware(VersionMiddleware, version=version)
    return service
