"""What a model costs in an environment, and what it asks of the accelerator quotas. Pure.

A model's pods run on the pools it is placed on; each pod is counted as one node of its pool at the
pool's hourly price (the same simplification the pools file makes: one instance type per pool), for
`HOURS_PER_MONTH` hours. An autoscaled model has a range: minReplicas .. maxReplicas per pool; a model that
scales to zero when idle (serving.scaleToZero, dev's default) starts its range at 0 replicas, $0.

Every price is read through `hourly_price(pool)`, so a pool priced differently (spot capacity, a
negotiated rate) changes one function, not the plan, the comment and the budget check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.catalog.effective import EffectiveServing, autoscaling_metric, in_flight_target
from reconciler.catalog.pools import AcceleratorKind, Pool

HOURS_PER_MONTH = 730  # the cloud providers' convention (8,760 h / 12)


def hourly_price(pool: Pool) -> float:
    """The price of one node of the pool, per hour: THE one place a pool's price is read (the spot
    price on spot pools: Pool.price_per_hour)."""
    return pool.price_per_hour


@dataclass(frozen=True)
class Footprint:
    """Replicas per pool (low and high: equal unless autoscaled), and what they cost and request."""

    replicas: dict[str, tuple[int, int]] = field(default_factory=dict)  # pool -> (min, max)
    monthly: tuple[float, float] = (0.0, 0.0)  # USD per month at (min, max) replicas
    devices: dict[str, tuple[int, int]] = field(default_factory=dict)  # resource -> (min, max) requested
    per_1000: dict[str, float] = field(default_factory=dict)  # pool -> estimated USD per 1,000 inferences
    per_1000_basis: str | None = None  # where the throughput behind per_1000 comes from
    to_zero: int = 0  # models counted at 0 replicas at the low end because they scale to zero when idle

    @property
    def empty(self) -> bool:
        return not self.replicas


NOTHING = Footprint()


@dataclass(frozen=True)
class Throughput:
    """Requests per second one replica sustains, and where that figure comes from."""

    rps: float
    basis: str


def throughput_per_replica(serving: EffectiveServing, slo_p95_ms: float | None,
                           kind: AcceleratorKind | None = None) -> Throughput | None:
    """What one replica on a pool of ``kind`` serves, from the spec, while nothing has been measured yet: the rps
    autoscaling target when the model autoscales on rps there; else the in-flight figure its request autoscaler
    targets (`catalog.effective.in_flight_target`: autoscaling.target, or 70 % of serving.concurrency, or of
    serving.batching.maxBatchSize) over its p95 SLO (Little's law: throughput = requests in flight / time in the
    system; the p95 is above the mean, so this is a floor). None without those figures or an SLO."""
    scaling = serving.autoscaling
    metric = autoscaling_metric(serving, kind) if kind is not None else (scaling.metric if scaling else None)
    if scaling is not None and metric == "rps" and scaling.target:
        return Throughput(scaling.target, "serving.autoscaling.target (requests per second per replica)")
    in_flight = in_flight_target(serving, metric)
    if in_flight is None or not slo_p95_ms:
        return None
    return Throughput(in_flight / (slo_p95_ms / 1000.0),
                      f"{in_flight:g} requests in flight per replica / p95 SLO {slo_p95_ms:g} ms (a floor)")


def cost_per_1000(pool: Pool, throughput: Throughput) -> float:
    """USD per 1,000 inferences of one replica of ``pool`` busy at ``throughput``."""
    return hourly_price(pool) / (throughput.rps * 3600.0) * 1000.0


def footprint(pools: Iterable[Pool], serving: EffectiveServing, slo_p95_ms: float | None = None) -> Footprint:
    """A model's replicas, monthly cost and device requests in one environment; with its p95 SLO, also the
    estimated cost per 1,000 inferences on each pool (`throughput_per_replica`)."""
    if serving.autoscaling is not None:
        low = serving.autoscaling.min_replicas if serving.scale_to_zero else max(1, serving.autoscaling.min_replicas)
        high = serving.autoscaling.max_replicas
    else:
        low = high = serving.replicas or 0
    replicas: dict[str, tuple[int, int]] = {}
    devices: dict[str, tuple[int, int]] = {}
    cost_low = cost_high = 0.0
    by_pool: dict[str, Pool] = {}
    for pool in pools:
        by_pool[pool.name] = pool
        replicas[pool.name] = (low, high)
        cost_low += low * hourly_price(pool) * HOURS_PER_MONTH
        cost_high += high * hourly_price(pool) * HOURS_PER_MONTH
        if pool.device is not None:
            a, b = devices.get(pool.device.resource, (0, 0))
            devices[pool.device.resource] = (a + low * pool.device.count, b + high * pool.device.count)
    per_1000: dict[str, float] = {}
    bases: dict[str, list[str]] = {}
    for name, pool in by_pool.items():
        throughput = throughput_per_replica(serving, slo_p95_ms, pool.kind)
        if throughput is not None:
            per_1000[name] = round(cost_per_1000(pool, throughput), 6)
            bases.setdefault(throughput.basis, []).append(name)
    basis = None if not bases else next(iter(bases)) if len(bases) == 1 else \
        "; ".join(f"{', '.join(names)}: {text}" for text, names in bases.items())
    return Footprint(replicas, (round(cost_low, 2), round(cost_high, 2)), devices, per_1000, basis,
                     to_zero=int(bool(replicas) and low == 0 and serving.scale_to_zero))


def total(footprints: Iterable[Footprint]) -> Footprint:
    """The sum of several footprints (an environment's models)."""
    replicas: dict[str, tuple[int, int]] = {}
    devices: dict[str, tuple[int, int]] = {}
    low = high = 0.0
    to_zero = 0
    for fp in footprints:
        low, high = low + fp.monthly[0], high + fp.monthly[1]
        to_zero += fp.to_zero
        for target, source in ((replicas, fp.replicas), (devices, fp.devices)):
            for key, (a, b) in source.items():
                x, y = target.get(key, (0, 0))
                target[key] = (x + a, y + b)
    return Footprint(replicas, (round(low, 2), round(high, 2)), devices, to_zero=to_zero)


def usd(value: float, *, signed: bool = False) -> str:
    """'$1,106.68', or '+$1,106.68' / '-$12.00' when signed."""
    text = f"${abs(value):,.2f}"
    if not signed:
        return text if value >= 0 else "-" + text
    return ("+" if value > 0 else "-" if value < 0 else "±") + text


def usd_range(monthly: tuple[float, float], *, signed: bool = False) -> str:
    low, high = monthly
    return usd(low, signed=signed) if low == high else f"{usd(low, signed=signed)} to {usd(high, signed=signed)}"


def delta(before: Footprint, after: Footprint) -> tuple[float, float]:
    """Monthly cost change at minimum and at maximum replicas."""
    return (round(after.monthly[0] - before.monthly[0], 2), round(after.monthly[1] - before.monthly[1], 2))


IDLE = "scales to zero when idle"  # why a model's low end is 0 replicas, $0 (serving.scaleToZero)


def idle_text(to_zero: int) -> str:
    """Why the low end of a cost range is lower than its models' running cost: '' or '1 model scales to zero
    when idle' / '3 models scale to zero when idle'."""
    if not to_zero:
        return ""
    return f"1 model {IDLE}" if to_zero == 1 else f"{to_zero} models {IDLE.replace('scales', 'scale', 1)}"


def replicas_text(fp: Footprint) -> str:
    """'4 on inf2', '2-8 on gpu-a10g', or 'none'."""
    if fp.empty:
        return "none"
    parts = []
    for pool, (low, high) in sorted(fp.replicas.items()):
        parts.append(f"{low if low == high else f'{low}-{high}'} on {pool}")
    return ", ".join(parts)


def by_name(pools: Mapping[str, Pool], names: Iterable[str]) -> list[Pool]:
    return [pools[n] for n in names if n in pools]


def budget_problems(budget_file: str, monthly_limit: float | None, device_limits: Mapping[str, int],
                    before: Footprint, after: Footprint, model_deltas: Mapping[str, tuple[Footprint, Footprint]]) -> list[str]:
    """Why a change breaks an environment's budget, one line per limit; empty when it fits.

    The budget is checked at maximum replicas (what autoscaling may reach). A limit that was already
    exceeded before the change is reported only if the change raises the figure further, so an
    unrelated pull request is not blocked by someone else's overrun. `model_deltas`: model ->
    (before, after) footprints, to name the models that raise each figure.
    """
    problems = []
    if monthly_limit is not None and after.monthly[1] > monthly_limit and after.monthly[1] > before.monthly[1]:
        problems.append(
            f"monthly cost at max replicas would be {usd(after.monthly[1])} (was {usd(before.monthly[1])}), over the "
            f"budget of {usd(monthly_limit)} ({budget_file} budget.monthlyUSD); raised by: "
            + ", ".join(f"{m} {usd(d, signed=True)}" if m in model_deltas else m
                        for d, m in _ups(model_deltas, lambda fp: fp.monthly[1])))
    for resource, limit in sorted(device_limits.items()):
        get = lambda fp, r=resource: fp.devices.get(r, (0, 0))[1]  # noqa: E731
        if get(after) > limit and get(after) > get(before):
            problems.append(
                f"{resource} requested at max replicas would be {get(after)} (was {get(before)}), over the quota of "
                f"{limit} ({budget_file} budget.{resource}); raised by: "
                + ", ".join(f"{m} +{d:g}" if m in model_deltas else m for d, m in _ups(model_deltas, get)))
    return problems


def _ups(model_deltas: Mapping[str, tuple[Footprint, Footprint]], figure) -> list[tuple[float, str]]:
    ups = [(round(figure(a) - figure(b), 2), m) for m, (b, a) in model_deltas.items() if figure(a) > figure(b)]
    return sorted(ups, key=lambda x: (-x[0], x[1])) or [(0, "no single model (the sum of small changes)")]
