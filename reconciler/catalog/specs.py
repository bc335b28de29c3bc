"""The files people write: model specs, environment specs and the accelerator pool catalogue.

Every model is validated with pydantic and unknown fields are rejected, so a typo such as
`replcias` is an error that names the file, the line and the field rather than a silent default.
A data scientist writes only what differs: serving, canary and SLO values left out of
`models/<name>/model.yaml` come from the environment's `defaults:`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from reconciler.catalog.fields import Strict, _dns_label, _quantity, duration_ms, duration_seconds
from reconciler.catalog.canary import CanaryPolicy
from reconciler.catalog.kinds import KINDS


# --------------------------------------------------------------------------- serving, canary, SLO


class Resources(Strict):
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _q(cls, v: Any) -> Any:
        return None if v is None else _quantity(v)


MAX_PER_REPLICA = 1_000_000  # requests in flight or per second one replica serves: an upper bound


class Autoscaling(Strict):
    """How many replicas a model runs, between two bounds, and on which signal.

    `metric`: `cpu` (an HPA on CPU utilisation), `concurrency` (in-flight requests per replica) or `rps`
    (requests per second per replica), both from the service's own BentoML metrics through a KEDA
    ScaledObject with a Prometheus trigger. Left out: `cpu` on cpu pools, `concurrency` on accelerator
    pools (a GPU or NeuronCore model keeps its CPU low while requests queue)."""

    min_replicas: int = Field(..., alias="minReplicas", ge=0)
    max_replicas: int = Field(..., alias="maxReplicas", ge=1)
    target_cpu_utilization: int = Field(70, alias="targetCPUUtilization", ge=1, le=100)
    metric: Literal["cpu", "concurrency", "rps"] | None = Field(None, description=(
        "cpu | concurrency | rps; default: cpu on cpu pools, concurrency on gpu/inferentia pools"))
    # bounds: KEDA turns a threshold into milli-units in an int64 (below 0.001 it is 0, which the HPA refuses; far
    # above a million it overflows), and no replica serves a million requests at once or per second
    target: float | None = Field(None, ge=0.001, le=MAX_PER_REPLICA, description=(
        "the per-replica target of a request metric: in-flight requests (concurrency; default 70 % of "
        "serving.concurrency) or requests per second (rps; required, measure it with benchmarks/serve_load.py)"))

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})")
        return self


class Batching(Strict):
    """BentoML adaptive batching of the service's batchable APIs: at most `maxBatchSize` requests are
    merged into one call, and none waits longer than `maxLatency` for its batch to fill."""

    max_batch_size: int = Field(..., alias="maxBatchSize", ge=2, description="BentoML needs at least 2")
    max_latency: str = Field(..., alias="maxLatency", description="e.g. 20ms, 1s")

    @field_validator("max_latency")
    @classmethod
    def _latency(cls, value: str) -> str:
        duration_ms(value)
        return value

    @property
    def max_latency_ms(self) -> int:
        return duration_ms(self.max_latency)


class Serving(Strict):
    port: int | None = Field(None, ge=1, le=65535)
    resources: Resources | None = None
    replicas: int | None = Field(None, ge=0)
    autoscaling: Autoscaling | None = None
    concurrency: int | None = Field(None, ge=1, le=MAX_PER_REPLICA, description=(
        "requests one replica serves at once (BentoML traffic.concurrency); the request autoscaler's "
        "target and the cost estimate start from it"))
    batching: Batching | None = None
    startup: str | None = Field(None, description=(
        "how long the model may take to load before liveness checks start (startupProbe budget), e.g. 5m; "
        "default 2m on cpu pools, 10m on gpu/inferentia pools; the canary's warm-up reads it too"))
    scale_to_zero: bool | None = Field(None, alias="scaleToZero", description=(
        "no replica while idle (a KEDA ScaledObject with minReplicaCount 0); the environment's "
        "autoscaler.wakeQuery wakes it; dev turns it on in its defaults"))
    idle_after: str | None = Field(None, alias="idleAfter", description=(
        "with scaleToZero: how long without requests before the last replica goes (default 15m)"))

    @field_validator("startup", "idle_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value


class SLO(Strict):
    p95_latency_ms: float | None = Field(None, alias="p95LatencyMs", gt=0)
    error_rate: float | None = Field(None, alias="errorRate", ge=0, le=1)


Target = str  # an accelerator kind (cpu / gpu / inferentia) or a pool name


class KindImage(Strict):
    """models/<name>/model.yaml `images.<kind>`: what differs in the image built for one pool kind."""

    bentofile: dict[str, Any] = Field(default_factory=dict, description="merged over the model's bentofile and "
                                      "the kind's built-in overlay (python.packages, docker.*, envs ...)")
    neuron_sdk: str | None = Field(None, alias="neuronSdk", description="inferentia: the Neuron SDK release")
    input_shapes: list[list[int]] | None = Field(None, alias="inputShapes",
                                                 description="inferentia: the traced input shapes, batch first")
    input_dtypes: list[Literal["float32", "float16", "bfloat16", "int64", "int32"]] | None = Field(
        None, alias="inputDtypes", description="inferentia: one dtype per input shape (default float32)")

    @model_validator(mode="after")
    def _one_dtype_per_shape(self) -> "KindImage":
        if self.input_dtypes is not None and len(self.input_dtypes) != len(self.input_shapes or []):
            raise ValueError(f"inputDtypes lists {len(self.input_dtypes)} dtypes for {len(self.input_shapes or [])} "
                             "inputShapes: give one dtype per input shape")
        if any(not shape or any(d < 1 for d in shape) for shape in self.input_shapes or []):
            raise ValueError("every inputShapes entry is a list of positive integers, batch first, e.g. [1, 13]")
        return self


def _registered_kind(kind: str) -> str:
    """A key of `images:`: a registered accelerator kind (reconciler.catalog.kinds), so a new kind carries its
    image settings with no edit here; anything else names the registered kinds."""
    if kind not in KINDS:
        raise PydanticCustomError(
            "unknown_kind", "unknown accelerator kind {kind} under images",
            {"kind": repr(kind), "fix": f"use one of the registered kinds: {', '.join(KINDS)} (a new kind is one entry "
                                  "of reconciler/catalog/kinds.py)"})
    return kind


KindImages = dict[Annotated[str, AfterValidator(_registered_kind)], KindImage | None]


class ModelSpec(Strict):
    """models/<name>/model.yaml"""

    name: str
    owner: str
    description: str = ""
    service: str = Field(..., description="the BentoML service, 'service.py:ClassName'")
    bentofile: str = "bentofile.yaml"
    artifacts: list[str] = Field(default_factory=list, description="DVC pointer files, e.g. model.pkl.dvc")
    serving: Serving = Field(default_factory=Serving)
    accelerator: Target | dict[str, Target | list[Target]] = Field(
        default_factory=dict,
        description="a target for every environment, or {default: ..., <env>: ...}; a list serves from several pools")
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    slo: SLO = Field(default_factory=SLO)
    spot: bool = Field(True, description="false: never run on spot capacity (a spot pool's on-demand fallback "
                                         "is used instead, or the placement is an error)")
    architecture: str | None = Field(None, description="what the weights are (e.g. sklearn-scaler-mlp): compile "
                                                       "recipes declare the architectures they compile")
    images: KindImages = Field(default_factory=dict, description="per pool kind image settings, keyed by a "
                                                                   "registered kind (cpu, gpu, inferentia, ...)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "model name")

    @field_validator("images")
    @classmethod
    def _declared_images(cls, value: dict[str, KindImage | None]) -> dict[str, KindImage | None]:
        return {kind: image for kind, image in value.items() if image is not None}  # `gpu:` with nothing: none

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if value.strip().startswith("TODO"):  # what `reconciler model new` writes until a person does
            raise PydanticCustomError(
                "placeholder", "the description is still the placeholder `reconciler model new` wrote",
                {"fix": "write one line on what the model predicts and from what input (it is shown in the PR "
                        "comment and the Argo UI), e.g. description: Wine cultivar from 13 chemical measurements"})
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if not re.match(r"^[\w./-]+\.py:[A-Za-z_]\w*$", value):
            raise ValueError("service must be '<file>.py:<ClassName>', e.g. 'service.py:IrisClassifier'")
        return value

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v.endswith(".dvc") and Path(v).name != "dvc.lock":
                raise ValueError(f"artifact {v!r} is not a DVC pointer: list the '.dvc' file (run `dvc add {v}`)")
        return values

    def targets_for(self, environment: str) -> list[Target] | None:
        """The targets this model asks for in an environment, or None to take the environment's default."""
        spec = self.accelerator
        if isinstance(spec, str):
            return [spec]
        value = spec.get(environment, spec.get("default"))
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------- environments


class Cluster(Strict):
    context: str = Field(..., description="the kubeconfig context of the environment's cluster; commands refuse "
                                          "any other unless --context is given")
    kubeconfig: str | None = None
    kubeSystemUID: str | None = Field(
        None, pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="pins the cluster: the UID of its kube-system namespace (`kubectl get namespace kube-system "
                    "-o jsonpath='{.metadata.uid}'`); every pass refuses another cluster, also in-cluster")


class Secrets(Strict):
    """Where the environment's age private key comes from, to decrypt its SOPS secrets in memory."""

    ageKeyFile: str | None = Field(None, description="a file holding AGE-SECRET-KEY-... (e.g. a mounted Secret)")
    ageKeyEnv: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="an environment variable holding AGE-SECRET-KEY-...")


class Scale(Strict):
    """Multiplies model replica counts and autoscaling bounds in this environment (dev: 0.5, prod: 2)."""

    replicas_factor: float = Field(1.0, alias="replicasFactor", gt=0)
    min_replicas: int = Field(1, alias="minReplicas", ge=0)


class Defaults(Strict):
    accelerator: Target = "cpu"
    serving: Serving = Field(default_factory=Serving)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    slo: SLO = Field(default_factory=SLO)


class Budget(Strict):
    """Guardrails of an environment: the plan refuses a change that would exceed them, and the
    accelerator quotas are also enforced by the cluster (a ResourceQuota in the namespace)."""

    monthly_usd: float | None = Field(None, alias="monthlyUSD", gt=0,
                                      description="the most the environment's models may cost a month (at max replicas)")
    nvidia_gpu: int | None = Field(None, alias="nvidia.com/gpu", ge=0)
    aws_neuron: int | None = Field(None, alias="aws.amazon.com/neuron", ge=0)
    aws_neuroncore: int | None = Field(None, alias="aws.amazon.com/neuroncore", ge=0)

    @property
    def devices(self) -> dict[str, int]:
        """Device resource -> the most the environment's pods may request."""
        found = {"nvidia.com/gpu": self.nvidia_gpu, "aws.amazon.com/neuron": self.aws_neuron,
                 "aws.amazon.com/neuroncore": self.aws_neuroncore}
        return {k: v for k, v in found.items() if v is not None}


class Autoscaler(Strict):
    """environment.yaml `autoscaler:`: where the environment's request autoscalers (KEDA ScaledObjects with
    Prometheus triggers) read the models' metrics, and what wakes a model scaled to zero."""

    prometheus: str | None = Field(None, pattern=r"^https?://[^\s]+$", description=(
        "the Prometheus KEDA queries, e.g. http://prometheus-operated.monitoring.svc:9090; needed by every "
        "request-based autoscaler (autoscaling.metric concurrency or rps, and scaleToZero)"))
    wake_query: str | None = Field(None, alias="wakeQuery", description=(
        "PromQL counting requests that reach a model while it has no replica (its own /metrics are gone then): "
        "requests per second at the ingress or mesh in front of it; $namespace, $service and $model are filled "
        "in. Needed by scaleToZero"))
    polling_interval: str = Field("30s", alias="pollingInterval", description=(
        "how often KEDA evaluates the triggers (the longest a request waits before a model at zero starts waking)"))

    @field_validator("polling_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Pipelines(Strict):
    """How this environment's Argo Workflows run (environment.yaml `pipelines:`)."""

    service_account_name: str | None = Field(None, alias="serviceAccountName",
                                             description="the ServiceAccount every workflow pod runs as")
    namespace: str | None = Field(None, description="where workflows are submitted (default: the Argo server's)")
    active_deadline_seconds: int = Field(4 * 3600, alias="activeDeadlineSeconds", ge=60)
    ttl_seconds_after_success: int = Field(24 * 3600, alias="ttlSecondsAfterSuccess", ge=0)
    ttl_seconds_after_failure: int = Field(7 * 24 * 3600, alias="ttlSecondsAfterFailure", ge=0)
    dvc_remote: str | None = Field(None, alias="dvcRemote", description="the DVC remote register pushes to")
    dvc_credentials_secret: str | None = Field(
        None, alias="dvcCredentialsSecret",
        description="a Secret whose keys (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) become the register step's env")
    git_credentials_secret: str | None = Field(
        None, alias="gitCredentialsSecret",
        description="a Secret the register step mounts read-only to push the proposal branch: `token` (https, "
                    "optional `username`) or `ssh-privatekey` + `known_hosts` (pipelines/gitauth.py)")

    @field_validator("dvc_credentials_secret", "git_credentials_secret", "service_account_name")
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
            raise ValueError(f"{value!r} is not a Kubernetes object name (lowercase letters, digits, '-' and '.'): "
                             "name the Secret or ServiceAccount as `kubectl get` shows it")
        return value


class EnvironmentSpec(Strict):
    """environments/<env>/environment.yaml"""

    name: str
    cluster: Cluster
    namespace: str
    registry: str = Field(..., description="where model images are pushed, e.g. ghcr.io/acme/models")
    pools: list[str] = Field(..., min_length=1)
    scale: Scale = Field(default_factory=Scale)
    canary: bool = False
    monitoring: Literal["none", "pod-monitor", "external"] = Field(
        "none", description="what scrapes the models' /metrics with their gitops.ml/model, track and pool labels, "
        "which request autoscalers and canary analysis read: pod-monitor renders a prometheus-operator PodMonitor per "
        "model; external: the cluster's own scrape config does (nothing rendered); none: nothing does (a plan "
        "warning where a model needs them)")
    defaults: Defaults = Field(default_factory=Defaults)
    promotes_from: str | None = Field(
        None, alias="promotesFrom", description="the environment a change reaches before this one (prod: staging)")
    budget: Budget | None = None
    secrets: Secrets | None = Field(None, description="the age key that decrypts the SOPS Secrets under "
                                                      "environments/<env>/secrets/<model>/ (docs/trust.md)")
    pipelines: Pipelines = Field(default_factory=lambda: Pipelines.model_validate({}))
    autoscaler: Autoscaler = Field(default_factory=lambda: Autoscaler.model_validate({}))
    priority_classes: dict[str, int] = Field(
        default_factory=dict, alias="priorityClasses",
        description="PriorityClasses the environment's pods may name (name: value); rendered as cluster-scoped "
                    "objects, so an overlay's priorityClassName never points at nothing")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "environment name")

    @field_validator("priority_classes")
    @classmethod
    def _priority_classes(cls, value: dict[str, int]) -> dict[str, int]:
        for name, priority in value.items():
            if name.startswith("system-"):
                raise ValueError(f"priorityClasses: {name!r}: the system- prefix is reserved for Kubernetes' own")
            _dns_label(name, "priorityClasses name")
            if not -2147483648 <= priority <= 1000000000:
                raise ValueError(f"priorityClasses: {name}: {priority} is outside -2147483648..1000000000 "
                                 "(larger values are reserved for system classes)")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _dns_label(value, "namespace")


