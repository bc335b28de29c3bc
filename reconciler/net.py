"""Outbound HTTP with a deadline for the whole request, not for each read.

httpx's ``timeout`` bounds each socket operation: a peer that sends one byte a second never trips
a 10 s read timeout and holds the caller for as long as it likes (encode/httpx#1450 asks for a
total timeout; it does not exist yet). Every outbound call of the reconciler (Prometheus, GitHub,
notification webhooks, image registries, confirm-promotion hooks) goes through ``client()``: the
client's ``send`` sets a monotonic deadline, and the connection pool's network streams give every
connect, TLS handshake, write and read only the time left before it. A request that is not done
(redirects, auth round trips and the body included) by its deadline raises ``DeadlineExceeded``, a
``httpx.TimeoutException``, so ``except httpx.HTTPError`` keeps catching it.

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


class DeadlineExceeded(httpx.TimeoutException):
    """The whole request (connect, send, headers, body) took longer than its deadline."""


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
        return self._inner.read(max_bytes, _left(timeout))

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

    def __init__(self, *, deadline: float, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", deadline)
        super().__init__(**kwargs)
        self.deadline = deadline
        self.bounded = [_install(t) for t in [self._transport, *self._mounts.values()] if t is not None]

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        started = time.monotonic()
        token = _DEADLINE.set(started + self.deadline)
        try:
            return super().send(request, **kwargs)
        except httpx.TimeoutException as exc:
            if time.monotonic() - started >= self.deadline * 0.999:
                raise DeadlineExceeded(f"no complete answer within the {self.deadline:g} s deadline "
                                       f"(a slow or stalled peer)", request=request) from exc
            raise
        finally:
            _DEADLINE.reset(token)


def client(deadline: float, **kwargs: Any) -> DeadlineClient:
    """An httpx client for one outbound peer: ``deadline`` seconds for each whole request."""
    return DeadlineClient(deadline=deadline, **kwargs)


def post(url: str, *, deadline: float, **kwargs: Any) -> httpx.Response:
    """One POST within ``deadline`` seconds (httpx.post with a whole-request deadline)."""
    with client(deadline) as c:
        return c.post(url, **kwargs)
