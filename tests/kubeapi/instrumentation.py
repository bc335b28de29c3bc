"""Request accounting (:class:`Stats`) and fault injection (:class:`Fault`) for the stand-in."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

READ_VERBS = frozenset({"get", "list", "watch", "discovery"})


class Stats:
    """Thread-safe request counters.

    Every request that reaches the server counts in ``total`` and ``by_verb`` (injected faults
    included, also counted in ``faults``). Verbs follow the apiserver's audit verbs, except that
    server-side apply is ``apply`` (the apiserver says ``patch``) and discovery/version GETs are
    ``discovery``. ``reads`` = get+list+watch+discovery; ``writes`` = the write verbs without
    ``dryRun`` (dry-run writes count in ``dry_runs`` only); ``persisted`` counts
    resourceVersion bumps (no-op writes do not bump it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.reads = 0
            self.writes = 0
            self.dry_runs = 0
            self.faults = 0
            self.persisted = 0
            self.by_verb: Counter[str] = Counter()
            self.by_resource: Counter[tuple[str, str]] = Counter()

    def record(self, verb: str, resource: str, dry_run: bool, faulted: bool) -> None:
        with self._lock:
            self.total += 1
            self.by_verb[verb] += 1
            self.by_resource[(verb, resource)] += 1
            if faulted:
                self.faults += 1
            if verb in READ_VERBS:
                self.reads += 1
            elif dry_run:
                self.dry_runs += 1
            else:
                self.writes += 1

    def record_persisted(self) -> None:
        with self._lock:
            self.persisted += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"total": self.total, "reads": self.reads, "writes": self.writes,
                    "dry_runs": self.dry_runs, "faults": self.faults,
                    "persisted": self.persisted, "by_verb": dict(self.by_verb),
                    "by_resource": {f"{v} {r}": n for (v, r), n in self.by_resource.items()}}


@dataclass
class Fault:
    """A failure to serve instead of the real answer, ``count`` times, to matching requests.

    ``path`` is a regex searched in the request target (path and query string), ``method`` an
    HTTP method (None matches any). Exactly one effect: ``status`` (429/500/503/... answered
    with a Status body, plus ``Retry-After`` when ``retry_after`` is set) or ``delay`` seconds
    of silence after which the connection is closed without an answer (a client whose timeout
    is shorter sees a read timeout; otherwise it sees the connection dropped).
    """

    path: str = ""
    method: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float | None = None
    count: int = 1
    _pattern: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if (self.status is None) == (self.delay is None):
            raise ValueError("a Fault needs exactly one of status= or delay=")
        self._pattern = re.compile(self.path)

    def matches(self, method: str, target: str) -> bool:
        return ((self.method is None or self.method.upper() == method)
                and self._pattern.search(target) is not None)


class FaultQueue:
    """Pending faults, consumed in injection order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.matches(method, target):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
