"""The probe endpoint: ``/healthz`` and ``/readyz`` on their own port, apart from webhook traffic.

The kubelet restarts a container whose liveness probe fails, so whoever can starve the probe
endpoint can restart the reconciler. The webhook port faces GitHub (and whoever reaches the
ingress) and serves a thread per connection up to a cap; probes there compete with every idle
client for a slot. This listener (controller-runtime's ``--health-probe-bind-address`` idea) is
separate and cheap to hold open: one asyncio loop in one thread, where an idle connection costs a
coroutine and a file descriptor, not a thread. A connection must send its request head within
``head_timeout`` seconds or is closed; one peer address holds at most ``max_per_client``
connections at once and the listener at most ``max_connections``. Past either cap a new connection
is not refused: the oldest connection still waiting for its head (of that address, or of all) is
closed to make room, so clients holding idle connections from many addresses cannot fill the
listener and lock the kubelet out (a probe sends its head at once and is answered at once; an idle
connection is the only kind that lasts). It answers GET only, two paths, one request per connection.

* ``/healthz`` (liveness): the reconcile loop is alive, i.e. it turned recently (``Reconciler.health``).
  It says nothing about HTTP slots, Prometheus, git or the cluster.
* ``/readyz`` (readiness): the loop has started turning and is alive.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class ProbeLimits:
    head_timeout: float = 2.0   # seconds for the request line and headers (a kubelet sends them at once)
    max_per_client: int = 16    # connections one peer address may hold at once
    max_connections: int = 512  # in all (file descriptors, not threads)
    max_head: int = 8192        # bytes of request head


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` from ``checks`` on ``address`` in a thread of its own."""

    def __init__(self, address: tuple[str, int], *, live: Check, ready: Check | None = None,
                 limits: ProbeLimits = ProbeLimits()) -> None:
        self.address = address
        self.checks = {"/healthz": live, "/readyz": ready or live}
        self.limits = limits
        self.refused = 0  # connections closed for a cap (none of the connections there was idle)
        self.evicted = 0  # idle connections closed to make room for a new one past a cap
        self.cut = 0  # connections closed for a slow or oversized head
        self._conns: dict[asyncio.StreamWriter, tuple[str, bool]] = {}  # open: (peer, still idle), oldest first
        self._per_client: collections.Counter[str] = collections.Counter()
        self._open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server_address: tuple[str, int] = address

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HealthServer":
        self._thread = threading.Thread(target=self._run, name="reconciler-probes", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.address[0], self.address[1], backlog=128,
                                     limit=self.limits.max_head))
            self.server_address = self._server.sockets[0].getsockname()[:2]
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _make_room(self, peer: str) -> bool:
        """Below both caps, or an idle connection closed to get there; False when every connection at the
        cap is being answered (a moment: answering takes no wait)."""
        while self._per_client[peer] >= self.limits.max_per_client or self._open >= self.limits.max_connections:
            own = self._per_client[peer] >= self.limits.max_per_client
            victim = next((w for w, (p, idle) in self._conns.items() if idle and (p == peer or not own)), None)
            if victim is None:
                return False
            self._drop(victim)
            victim.transport.abort()
            self.evicted += 1
        return True

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        """Stop counting a connection (once: an evicted one is dropped before its handler ends)."""
        found = self._conns.pop(writer, None)
        if found is None:
            return
        self._open -= 1
        self._per_client[found[0]] -= 1
        if not self._per_client[found[0]]:
            del self._per_client[found[0]]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        if not self._make_room(peer):
            self.refused += 1
            writer.close()
            return
        self._open += 1
        self._per_client[peer] += 1
        self._conns[writer] = (peer, True)
        try:
            await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a closed or evicted connection, or the listener stopping
        finally:
            self._drop(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            self.cut += 1
            return
        if len(head) > self.limits.max_head:
            self.cut += 1
            return
        if writer in self._conns:
            self._conns[writer] = (self._conns[writer][0], False)  # being answered: not displaced any more
        await self._respond(head, writer)

    async def _respond(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].split("?", 1)[0]
        check = self.checks.get(path)
        if method != "GET" or check is None:
            code, text = 404, "not found"
        else:
            ok, text = check()
            code = 200 if ok else 503
        body = (text + "\n").encode()
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
        writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await asyncio.wait_for(writer.drain(), self.limits.head_timeout)
