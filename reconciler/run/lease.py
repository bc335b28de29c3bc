"""Leader election on a coordination.k8s.io/v1 Lease, so only one reconciler replica writes.

Same semantics as client-go ``leaderelection``:

* acquire: create the Lease (holderIdentity = me), or take it over when its holder stopped renewing;
* renew: the holder rewrites ``renewTime`` well within ``leaseDurationSeconds``;
* expiry is judged on the *local* clock from when this candidate last saw the record change (not
  by comparing the server's ``renewTime`` with our wall clock), so clock skew between replicas does
  not let two of them lead at once;
* every write is a PUT carrying the ``resourceVersion`` that was read (optimistic concurrency): if
  another candidate wrote in between, the server answers 409 and this candidate is not leader.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from reconciler.cluster.protocol import Cluster, PatchType
from reconciler import labels
from reconciler.errors import KubeError
from reconciler.results import ObjectRef

log = logging.getLogger("reconciler.run.lease")


def micro_time(now: datetime | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: dict) -> "LeaseRecord":
        spec = lease.get("spec") or {}
        return cls(spec.get("holderIdentity") or "", int(spec.get("leaseDurationSeconds") or 0),
                   spec.get("acquireTime"), spec.get("renewTime"), int(spec.get("leaseTransitions") or 0))


class LeaseLock:
    """One candidate's view of a Lease. Call :meth:`try_acquire_or_renew` periodically."""

    def __init__(self, kube: Cluster, name: str, namespace: str, identity: str, *, duration: int = 15,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.kube = kube
        self.ref = ObjectRef("coordination.k8s.io/v1", "Lease", namespace, name)
        self.identity = identity
        self.duration = duration
        self._clock = clock
        self._wall = wall
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # local time of our last successful acquire/renew
        self._lock = threading.Lock()  # the keeper thread and the loop may both call a round

    @property
    def held(self) -> bool:
        """True while we hold the lease and our last renewal is younger than its duration."""
        return self._renewed_at is not None and self._clock() - self._renewed_at < self.duration

    def _spec(self, *, acquire: bool, previous: LeaseRecord | None) -> dict:
        now = micro_time(self._wall())
        transitions = previous.transitions if previous else 0
        if acquire and previous is not None and previous.holder and previous.holder != self.identity:
            transitions += 1
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": now if acquire or previous is None else (previous.acquire_time or now),
                "renewTime": now, "leaseTransitions": transitions}

    def try_acquire_or_renew(self) -> bool:
        """One election round. Returns whether we lead now. API errors count as not leading."""
        try:
            with self._lock:
                return self._round()
        except KubeError as exc:
            log.warning("Lease %s/%s: %s", self.ref.namespace, self.ref.name, exc)
            self._renewed_at = None
            return False

    def _round(self) -> bool:
        lease = self.kube.get(self.ref)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.ref.name, "namespace": self.ref.namespace,
                                 "labels": {labels.MANAGED_BY: labels.MANAGER}},
                    "spec": self._spec(acquire=True, previous=None)}
            try:
                created = self.kube.create(body)
            except KubeError as exc:
                if exc.status == 409:  # another candidate created it first
                    self._renewed_at = None
                    return False
                raise
            self._note(LeaseRecord.of(created))
            self._renewed_at = self._clock()
            return True

        record = LeaseRecord.of(lease)
        self._note(record)
        mine = record.holder == self.identity
        expired = not record.holder or self._clock() > self._observed_at + max(record.duration, 1)
        if not mine and not expired:
            self._renewed_at = None
            return False
        updated = {**lease, "spec": {**(lease.get("spec") or {}), **self._spec(acquire=not mine, previous=record)}}
        try:
            stored = self.kube.replace(updated)
        except KubeError as exc:
            if exc.status == 409:  # someone else renewed or took it between our read and write
                self._renewed_at = None
                return False
            raise
        self._note(LeaseRecord.of(stored))
        self._renewed_at = self._clock()
        return True

    def _note(self, record: LeaseRecord) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()

    def release(self) -> None:
        """Give the lease up (on clean shutdown) so another replica takes over at once."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = self.kube.get(self.ref)
            if lease is not None and LeaseRecord.of(lease).holder == self.identity:
                spec = {**lease["spec"], "holderIdentity": None, "renewTime": micro_time(self._wall())}
                self.kube.replace({**lease, "spec": spec})
        except KubeError:
            pass


class LeaderGuard:
    """A Cluster whose writes fail fast once leadership is lost; reads (and dry runs) pass through."""

    def __init__(self, kube: Cluster, lease: LeaseLock) -> None:
        self._kube = kube
        self._lease = lease

    def _check(self, dry_run: bool = False) -> None:
        if not dry_run and not self._lease.held:
            raise KubeError(f"not the leader any more ({self._lease.identity} lost Lease "
                            f"{self._lease.ref.namespace}/{self._lease.ref.name}): write refused",
                            status=409, reason="LeadershipLost")

    def get(self, ref: ObjectRef) -> dict | None:
        return self._kube.get(ref)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> builtins.list[dict]:
        return self._kube.list(api_version, kind, namespace, label_selector)

    def apply(self, obj: dict, field_manager: str = labels.MANAGER, force: bool = True,
              dry_run: bool = False) -> dict:
        self._check(dry_run)
        return self._kube.apply(obj, field_manager=field_manager, force=force, dry_run=dry_run)

    def patch(self, ref: ObjectRef, patch: dict | builtins.list, type: PatchType = "merge",
              field_manager: str | None = labels.MANAGER, dry_run: bool = False) -> dict:
        self._check(dry_run)
        return self._kube.patch(ref, patch, type=type, field_manager=field_manager, dry_run=dry_run)

    def create(self, obj: dict, field_manager: str = labels.MANAGER) -> dict:
        self._check()
        return self._kube.create(obj, field_manager=field_manager)

    def replace(self, obj: dict, field_manager: str = labels.MANAGER) -> dict:
        self._check()
        return self._kube.replace(obj, field_manager=field_manager)

    def delete(self, ref: ObjectRef, propagation_policy: str = "Background", dry_run: bool = False) -> bool:
        self._check(dry_run)
        return self._kube.delete(ref, propagation_policy=propagation_policy, dry_run=dry_run)

    def wait_for_kind(self, api_version: str, kind: str, timeout: float) -> bool:
        return self._kube.wait_for_kind(api_version, kind, timeout)


if TYPE_CHECKING:
    def _satisfies_cluster(guard: LeaderGuard) -> Cluster:  # mypy checks the seam; never called
        return guard


class LeaseKeeper:
    """Renews the lease in a background thread every ``duration / 3`` seconds while running."""

    def __init__(self, lease: LeaseLock, *, interval: float | None = None) -> None:
        self.lease = lease
        self.interval = interval or max(0.2, lease.duration / 3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "LeaseKeeper":
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.lease.try_acquire_or_renew()
            self._stop.wait(self.interval)

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release:
            self.lease.release()
