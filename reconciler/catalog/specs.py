"""The files people write: model specs, environment specs and the accelerator pool catalogue.

Every model is validated with pydantic and unknown fields are rejected, so a typo such as
`replcias` is an error that names the file, the line and the field rather than a silent default.
A data scientist writes only what differs: serving, canary and SLO values left out of
`models/<name>/model.yaml` come from the environment's `defaults:`.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reconciler.errors import SpecError, SpecProblem

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
DURATION = re.compile(r"^([0-9]+)(s|m|h)$")


class Strict(BaseModel):
    """Base for every spec model: unknown fields are errors, aliases allow camelCase in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS-1123 label: use at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit (e.g. 'fraud-detector')")
    return value


def _quantity(value: str | int | float) -> str:
    text = str(value)
    if not QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. '500m', '2', '512Mi', '4Gi')")
    return text


def duration_seconds(value: str) -> int:
    """'30s' -> 30, '5m' -> 300, '1h' -> 3600."""
    match = DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write e.g. '30s', '5m' or '1h'")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


Quantity = Annotated[str, Field(description="a Kubernetes quantity, e.g. 500m or 2Gi")]


# --------------------------------------------------------------------------- pools


class AcceleratorKind(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    inferentia = "inferentia"


class Taint(Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Device(Strict):
    """The extended resource a pool's pods request, e.g. nvidia.com/gpu or aws.amazon.com/neuron."""

    resource: Literal["nvidia.com/gpu", "aws.amazon.com/neuron", "aws.amazon.com/neuroncore"]
    count: int = Field(1, ge=1)


CAPACITY_LABEL = "karpenter.sh/capacity-type"  # Karpenter's well-known node label: spot | on-demand
# the values each well-known capacity-type label takes (EKS managed node groups spell them SPOT / ON_DEMAND)
CAPACITY_VALUES = {"karpenter.sh/capacity-type": ("spot", "on-demand"),
                   "eks.amazonaws.com/capacityType": ("SPOT", "ON_DEMAND")}


class RolloutStrategy(Strict):
    max_surge: str | int = Field(0, alias="maxSurge")
    max_unavailable: str | int = Field(1, alias="maxUnavailable")


class Pool(Strict):
    """An accelerator pool, declared once in environments/pools.yaml."""

    name: str = ""
    kind: AcceleratorKind
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    taints: list[Taint] = Field(default_factory=list)
    device: Device | None = None
    hugepages_2mi: str | None = Field(None, alias="hugepages2Mi")
    capabilities: list[str] = Field(default_factory=list)
    instance_types: list[str] = Field(default_factory=list, alias="instanceTypes")
    hourly_price: float = Field(..., alias="hourlyPrice", ge=0)
    rollout: RolloutStrategy | None = None
    capacity_type: Literal["on-demand", "spot"] = Field("on-demand", alias="capacityType")
    capacity_label: str = Field(CAPACITY_LABEL, alias="capacityLabel",
                                description="the node label carrying the capacity type (karpenter.sh/capacity-type, "
                                            "eks.amazonaws.com/capacityType)")
    spot_price: float | None = Field(None, alias="spotPrice", ge=0, description="expected hourly spot price")
    fallback: str | None = Field(None, description="an on-demand pool of the same kind the pods may land on when "
                                                   "spot capacity is gone (preferred node affinity keeps them on spot)")

    @model_validator(mode="after")
    def _kind_matches_device(self) -> "Pool":
        if self.kind is AcceleratorKind.cpu and self.device is not None:
            raise ValueError("a cpu pool must not declare a device; use kind: gpu or kind: inferentia")
        if self.kind is AcceleratorKind.gpu and (self.device is None or self.device.resource != "nvidia.com/gpu"):
            raise ValueError("a gpu pool needs device: {resource: nvidia.com/gpu}")
        if self.kind is AcceleratorKind.inferentia:
            if self.device is None or not self.device.resource.startswith("aws.amazon.com/neuron"):
                raise ValueError("an inferentia pool needs device: {resource: aws.amazon.com/neuron} "
                                 "(or aws.amazon.com/neuroncore)")
            if self.hugepages_2mi is None:
                raise ValueError("an inferentia pool needs hugepages2Mi (e.g. 256Mi): the Neuron runtime "
                                 "allocates its DMA buffers from 2Mi hugepages")
        if self.hugepages_2mi is not None:
            _quantity(self.hugepages_2mi)
        if self.capacity_type == "spot" and self.spot_price is None:
            raise ValueError("a spot pool needs spotPrice (its expected hourly price, used by cost judgements "
                             "and the plan's cost delta), e.g. spotPrice: 0.30")
        if self.capacity_type != "spot" and (self.spot_price is not None or self.fallback is not None):
            raise ValueError("spotPrice and fallback only apply to a spot pool: add capacityType: spot, "
                             "or remove them")
        return self

    @property
    def spot(self) -> bool:
        return self.capacity_type == "spot"

    @property
    def price_per_hour(self) -> float:
        """What one node of this pool costs per hour: the spot price on spot pools, else hourlyPrice.

        THE price cost judgements and the plan's cost delta use (one function, so they never disagree)."""
        return self.spot_price if self.spot and self.spot_price is not None else self.hourly_price

    def capacity_value(self, spot: bool) -> str:
        """The capacity-type label value of spot (or on-demand) nodes under this pool's capacity label."""
        values = CAPACITY_VALUES.get(self.capacity_label, CAPACITY_VALUES[CAPACITY_LABEL])
        return values[0] if spot else values[1]

    @property
    def tolerations(self) -> list[dict[str, str]]:
        """The tolerations a pod needs to land on this pool's tainted nodes."""
        result = []
        for taint in self.taints:
            toleration = {"key": taint.key, "effect": taint.effect}
            if taint.value is None:
                toleration["operator"] = "Exists"
            else:
                toleration.update(operator="Equal", value=taint.value)
            result.append(toleration)
        return result

    @property
    def strategy(self) -> RolloutStrategy:
        """Accelerator pools default to maxSurge 0: a spare GPU or inf2 node is expensive."""
        if self.rollout is not None:
            return self.rollout
        if self.kind is AcceleratorKind.cpu:
            return RolloutStrategy(maxSurge="25%", maxUnavailable=0)
        return RolloutStrategy(maxSurge=0, maxUnavailable=1)


class PoolsFile(Strict):
    pools: dict[str, Pool]

    @field_validator("pools")
    @classmethod
    def _names(cls, pools: dict[str, Pool]) -> dict[str, Pool]:
        return {_dns_label(name, "pool name"): pool.model_copy(update={"name": name})
                for name, pool in pools.items()}

    @model_validator(mode="after")
    def _fallbacks(self) -> "PoolsFile":
        for name, pool in self.pools.items():
            if pool.fallback is None:
                continue
            other = self.pools.get(pool.fallback)
            where = f"pool {name!r}: fallback {pool.fallback!r}"
            if other is None:
                raise ValueError(f"{where} is not a declared pool (declared: {', '.join(sorted(self.pools))})")
            if other.spot:
                raise ValueError(f"{where} is a spot pool too: the fallback must be on-demand capacity")
            if other.kind is not pool.kind or other.device != pool.device:
                raise ValueError(f"{where} is a {other.kind.value} pool with another device: a fallback must "
                                 "offer the same accelerator, so the same image and resources run there")
        return self


# --------------------------------------------------------------------------- serving, canary, SLO


class Resources(Strict):
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _q(cls, v: Any) -> Any:
        return None if v is None else _quantity(v)


class Autoscaling(Strict):
    min_replicas: int = Field(..., alias="minReplicas", ge=0)
    max_replicas: int = Field(..., alias="maxReplicas", ge=1)
    target_cpu_utilization: int = Field(70, alias="targetCPUUtilization", ge=1, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})")
        return self


class Serving(Strict):
    port: int | None = Field(None, ge=1, le=65535)
    resources: Resources | None = None
    replicas: int | None = Field(None, ge=0)
    autoscaling: Autoscaling | None = None


class CanaryPolicy(Strict):
    """How a new version is moved in: weight steps, how long each is watched, when to give up."""

    enabled: bool | None = None
    steps: list[int] | None = None
    interval: str | None = None
    failure_threshold: int | None = Field(None, alias="failureThreshold", ge=1)
    progress_deadline: str | None = Field(None, alias="progressDeadline")
    max_error_rate: float | None = Field(None, alias="maxErrorRate", ge=0, le=1)
    max_p95_latency_ms: float | None = Field(None, alias="maxP95LatencyMs", gt=0)
    judge: Literal["threshold", "mann-whitney"] | None = None
    router: Literal["gateway-api", "istio", "replicas"] | None = None
    queries: dict[str, str] | None = None

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int] | None) -> list[int] | None:
        if steps is None:
            return None
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("steps must be increasing traffic percentages between 1 and 100, e.g. [10, 25, 50, 100]")
        return steps

    @field_validator("interval", "progress_deadline")
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


class KindImages(Strict):
    cpu: KindImage | None = None
    gpu: KindImage | None = None
    inferentia: KindImage | None = None


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
    images: KindImages = Field(default_factory=KindImages, description="per pool kind image settings")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "model name")

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


class EnvironmentSpec(Strict):
    """environments/<env>/environment.yaml"""

    name: str
    cluster: Cluster
    namespace: str
    registry: str = Field(..., description="where model images are pushed, e.g. ghcr.io/acme/models")
    pools: list[str] = Field(..., min_length=1)
    scale: Scale = Field(default_factory=Scale)
    canary: bool = False
    monitoring: Literal["none", "pod-monitor"] = Field(
        "none", description="pod-monitor: render a prometheus-operator PodMonitor per model (canary analysis needs it)")
    defaults: Defaults = Field(default_factory=Defaults)
    promotes_from: str | None = Field(
        None, alias="promotesFrom", description="the environment a change reaches before this one (prod: staging)")
    budget: Budget | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "environment name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _dns_label(value, "namespace")


# --------------------------------------------------------------------------- effective (merged) model


class EffectiveServing(Strict):
    port: int
    cpu: str
    memory: str
    replicas: int
    autoscaling: Autoscaling | None


class EffectiveCanary(Strict):
    enabled: bool
    steps: list[int]
    interval_seconds: int
    failure_threshold: int
    progress_deadline_seconds: int
    max_error_rate: float
    max_p95_latency_ms: float | None
    judge: Literal["threshold", "mann-whitney"]
    router: Literal["gateway-api", "istio", "replicas"]
    queries: dict[str, str]


BUILTIN_SERVING = Serving(port=3000, resources=Resources(cpu="500m", memory="512Mi"), replicas=1)
BUILTIN_CANARY = CanaryPolicy(enabled=True, steps=[10, 25, 50, 100], interval="1m", failureThreshold=2,
                              progressDeadline="30m", maxErrorRate=0.01, judge="threshold", router="replicas",
                              queries={})


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def effective_serving(model: ModelSpec, env: EnvironmentSpec) -> EffectiveServing:
    layers = [model.serving, env.defaults.serving, BUILTIN_SERVING]
    res = [layer.resources for layer in layers if layer.resources is not None]
    autoscaling = _first(model.serving.autoscaling, env.defaults.serving.autoscaling if model.serving.replicas is None else None)
    factor, floor = env.scale.replicas_factor, env.scale.min_replicas
    if autoscaling is not None:
        lo = max(floor, round(autoscaling.min_replicas * factor))
        autoscaling = Autoscaling(minReplicas=lo, maxReplicas=max(lo, round(autoscaling.max_replicas * factor)),
                                  targetCPUUtilization=autoscaling.target_cpu_utilization)
    replicas = _first(*(layer.replicas for layer in layers))
    return EffectiveServing(
        port=_first(*(layer.port for layer in layers)),
        cpu=_first(*(r.cpu for r in res)),
        memory=_first(*(r.memory for r in res)),
        replicas=max(floor, round(replicas * factor)) if replicas else replicas,
        autoscaling=autoscaling,
    )


def effective_canary(model: ModelSpec, env: EnvironmentSpec) -> EffectiveCanary:
    layers = [model.canary, env.defaults.canary, BUILTIN_CANARY]

    def pick(attr: str) -> Any:
        return _first(*(getattr(layer, attr) for layer in layers))

    enabled = env.canary and pick("enabled")
    return EffectiveCanary(
        enabled=bool(enabled), steps=pick("steps"), interval_seconds=duration_seconds(pick("interval")),
        failure_threshold=pick("failure_threshold"),
        progress_deadline_seconds=duration_seconds(pick("progress_deadline")),
        max_error_rate=pick("max_error_rate"),
        max_p95_latency_ms=_first(model.canary.max_p95_latency_ms, model.slo.p95_latency_ms,
                                  env.defaults.canary.max_p95_latency_ms, env.defaults.slo.p95_latency_ms),
        judge=pick("judge"), router=pick("router"),
        queries={**(env.defaults.canary.queries or {}), **(model.canary.queries or {})},
    )


def effective_slo(model: ModelSpec, env: EnvironmentSpec) -> SLO:
    return SLO(p95LatencyMs=_first(model.slo.p95_latency_ms, env.defaults.slo.p95_latency_ms),
               errorRate=_first(model.slo.error_rate, env.defaults.slo.error_rate))


# --------------------------------------------------------------------------- loading with located errors


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, to point errors at lines."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping = _Located(mapping)
    mapping.key_lines = lines
    return mapping


class _Located(dict):
    key_lines: dict[str, int]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, *, display: str | None = None) -> Any:
    """Parse one YAML document, turning syntax errors into a SpecError with the line."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError.single(shown, "file not found", fix=f"create {shown}") from None
    except OSError as exc:
        raise SpecError.single(shown, f"cannot read file: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError.single(shown, f"YAML syntax error: {exc.problem or exc}", line=line,
                               fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None
    except yaml.YAMLError as exc:
        raise SpecError.single(shown, f"YAML error: {exc}") from None


def _line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, _Located) and part in node.key_lines:
            line = node.key_lines[part]
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def _fix_for(error: dict[str, Any], model: type[BaseModel]) -> str | None:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "remove the field, or check its spelling against docs/model-spec.md"
    if kind == "missing":
        return "add the field"
    return None


def parse(model: type[Strict], data: Any, file: str) -> Any:
    """Validate data against a spec model; every pydantic error becomes a located SpecProblem."""
    if data is None:
        raise SpecError.single(file, "file is empty", fix=f"write a {model.__name__} document")
    if not isinstance(data, dict):
        raise SpecError.single(file, f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p not in ("function-after", "function-before"))
            dotted = ".".join(str(p) for p in loc if not str(p).startswith(("str", "dict[", "list[")))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(SpecProblem(file, message, field=dotted or None, line=_line_of(data, loc),
                                        fix=_fix_for(error, model)))
        raise SpecError(problems) from None


def load(model: type[Strict], path: Path, *, display: str | None = None) -> Any:
    return parse(model, read_yaml(path, display=display), display or str(path))
