"""The accelerator pool catalogue (environments/pools.yaml): node selection, taints, devices,
capacity type and price of each pool."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reconciler.catalog.fields import Strict, _dns_label, _quantity
from reconciler.catalog.kinds import KINDS, AcceleratorKind


class Taint(Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Device(Strict):
    """The extended resource a pool's pods request, e.g. nvidia.com/gpu or aws.amazon.com/neuron."""

    resource: str = Field(..., pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                          description="an extended resource its kind's profile names (reconciler.catalog.kinds)")
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
        kind = self.kind.profile
        if not kind.device_resources and self.device is not None:
            with_device = [k.name for k in KINDS.values() if k.device_resources]
            raise ValueError(f"a {kind.name} pool must not declare a device; use kind: {' or kind: '.join(with_device)}")
        if kind.device_resources and (self.device is None or self.device.resource not in kind.device_resources):
            raise ValueError(f"a {kind.name} pool needs device: {{resource: {kind.device_resources[0]}}}"
                             + (f" (or {', '.join(kind.device_resources[1:])})" if kind.device_resources[1:] else ""))
        if kind.hugepages and self.hugepages_2mi is None:
            raise ValueError(f"a {kind.name} pool needs hugepages2Mi (e.g. 256Mi): the Neuron runtime "
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
        surge = self.kind.profile.surge
        return RolloutStrategy(maxSurge=surge, maxUnavailable=0 if surge else 1)


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
            if other.kind != pool.kind or other.device != pool.device:
                raise ValueError(f"{where} is a {other.kind.value} pool with another device: a fallback must "
                                 "offer the same accelerator, so the same image and resources run there")
        return self
