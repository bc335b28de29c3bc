"""Outbound HTTP with a deadline for the whole request, not for each read.

httpx's ``timeout`` bounds each socket operation: a peer that sends one byte a second never trips
a 10 s read timeout and holds the caller for as long as it likes (encode/httpx#1450 asks for a
total timeout; it does not exist yet). Every outbound call of the reconciler (Prometheus, GitHub,
notification webhooks, image registries, confirm-promotion hooks) goes through ``client()``: the
client's ``send`` sets a monotonic deadline, and the connection pool's network streams give every
connect, TLS handshake, write and read only the time left before it. A request that is not done
(redirects, auth round trips and the body included) by its deadline raises ``DeadlineExceeded``, a
``httpx.TimeoutException``, so ``except httpx.HTTPError`` keeps catching it.

The same streams count the bytes a request reads: past ``max_bytes`` (default ``MAX_BYTES``) the
request fails with ``ResponseTooLarge``, an ``httpx.ReadError``, so a peer that answers a huge body
at full speed (or a gzip bomb: the decoded body is counted too) costs a bounded amount of memory,
not whatever it sends within the deadline.

The streams are installed on the pools of httpx's own transports (the direct one and any proxy
mounts), so TLS, proxies and certificates stay httpx's. A response opened with ``stream=True``
is bounded only while ``send`` runs (its headers): the callers here read whole bodies.
"""

from __future__ import annotations

import contextvars
import time
import typing
from typing import Any

import httpcore
import httpx

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("reconciler_net_deadline", default=None)
# [bytes read so far, the most this request may read]
_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("reconciler_net_budget", default=None)

MAX_BYTES = 32 * 1024 * 1024  # one answer (headers, redirect hops and the decoded body): far above any the reconciler reads


class DeadlineExceeded(httpx.TimeoutException):
    """The whole request (connect, send, headers, body) took longer than its deadline."""


class ResponseTooLarge(httpx.ReadError):
    """The peer's answer is larger than the request's byte bound."""


def _left(timeout: float | None, *, read: bool = True) -> float | None:
    """The socket timeout for one operation: the smaller of httpx's per-operation timeout and the
    time left before the request's deadline."""
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise (httpcore.ReadTimeout if read else httpcore.ConnectTimeout)("deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, _left(timeout))
        budget = _BUDGET.get()
        if budget is not None:
            budget[0] += len(data)
            if budget[0] > budget[1]:
                raise httpcore.ReadError(f"the answer is larger than {budget[1]:,} bytes")
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, read=False))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout, read=False)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout, read=False), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _left(timeout, read=False), socket_options))

    def sleep(self, seconds: float) -> None:
        left = _left(None)
        self._inner.sleep(seconds if left is None else min(seconds, left))


def _install(transport: Any) -> bool:
    """Give an httpx.HTTPTransport's pool the deadline streams. False for other transports (a test's
    MockTransport answers in process: there is no socket to bound)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        return False
    if not isinstance(backend, _Backend):
        pool._network_backend = _Backend(backend)  # type: ignore[union-attr]
    return True


class DeadlineClient(httpx.Client):
    """An httpx.Client whose every ``send`` must be complete within ``deadline`` seconds."""

    def __init__(self, *, deadline: float, max_bytes: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", deadline)
        super().__init__(**kwargs)
        self.deadline = deadline
        self.max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        self.bounded = [_install(t) for t in [self._transport, *self._mounts.values()] if t is not None]

    def send(self, request: httpx.Request, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        started = time.monotonic()
        token = _DEADLINE.set(started + self.deadline)
        budget = _BUDGET.set([0, self.max_bytes])
        try:
            response = super().send(request, stream=True, **kwargs)
            if not stream:
                try:
                    self._read(response)
                finally:
                    response.close()
            return response
        except httpx.TimeoutException as exc:
            if time.monotonic() - started >= self.deadline * 0.999:
                raise DeadlineExceeded(f"no complete answer within the {self.deadline:g} s deadline "
                                       f"(a slow or stalled peer)", request=request) from exc
            raise
        except httpx.ReadError as exc:
            if (_BUDGET.get() or [0, 1])[0] > self.max_bytes:
                raise ResponseTooLarge(f"the answer is larger than the {self.max_bytes:,}-byte bound "
                                       "(a runaway or hostile peer)", request=request) from exc
            raise
        finally:
            _BUDGET.reset(budget)
            _DEADLINE.reset(token)

    def _read(self, response: httpx.Response) -> None:
        """Response.read(), counting the decoded body against the byte bound (a gzip bomb is small on the wire)."""
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise ResponseTooLarge(f"the decoded answer is larger than the {self.max_bytes:,}-byte bound "
                                       "(a runaway or hostile peer)", request=response.request)
            chunks.append(chunk)
        response._content = b"".join(chunks)  # what Response.read() sets


def client(deadline: float, **kwargs: Any) -> DeadlineClient:
    """An httpx client for one outbound peer: ``deadline`` seconds and ``max_bytes`` (default MAX_BYTES)
    for each whole request."""
    return DeadlineClient(deadline=deadline, **kwargs)


def post(url: str, *, deadline: float, **kwargs: Any) -> httpx.Response:
    """One POST within ``deadline`` seconds (httpx.post with a whole-request deadline)."""
    with client(deadline) as c:
        return c.post(url, **kwargs)
