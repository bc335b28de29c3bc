"""A loopback HTTP peer that answers one byte at a time: the slow peer of the deadline tests.

A stand-in because no real Prometheus, GitHub, registry or webhook receiver can be told to drip its
answer; everything else about those peers is tested against the real ones. Each connection reads the
request head, then sends ``response`` one byte every ``interval`` seconds (from the status line on,
or after the head when ``head_at_once``), so a client with per-read timeouts never times out and
would wait ``len(response) * interval`` seconds. The server counts connections and the bytes it
sent each, and notices when the client hung up.

    with Drip(interval=1.0) as drip:
        httpx.get(drip.url)  # 1 byte a second for ~2 minutes
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

BODY = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


def answer(body: bytes = BODY, status: str = "200 OK", content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@dataclass
class Drip:
    interval: float = 1.0
    response: bytes = field(default_factory=answer)
    head_at_once: bool = False
    connections: int = 0
    sent: list[int] = field(default_factory=list)   # bytes sent per connection, in order
    hung_up: list[bool] = field(default_factory=list)  # the client closed before the whole answer

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)  # accept() wakes up to see the stop flag
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def __enter__(self) -> "Drip":
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
                self.sent.append(0)
                self.hung_up.append(False)
            t = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, index: int) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
            except OSError:
                return
            start = 0
            if self.head_at_once:
                start = self.response.index(b"\r\n\r\n") + 4
                conn.sendall(self.response[:start])
                self.sent[index] = start
            for i in range(start, len(self.response)):
                if self._stop.wait(self.interval):
                    return
                try:
                    conn.sendall(self.response[i:i + 1])
                except OSError:
                    self.hung_up[index] = True
                    return
                self.sent[index] = i + 1
                if _closed(conn):
                    self.hung_up[index] = True
                    return


def _closed(conn: socket.socket) -> bool:
    """The peer hung up (a readable socket with nothing to read)."""
    try:
        conn.setblocking(False)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        finally:
            conn.setblocking(True)
            conn.settimeout(5)
    except OSError:
        return True


@dataclass
class Flood:
    """A loopback HTTP peer that answers a huge body at full speed (``size`` bytes of zeros; gzip-compressed
    on the wire when ``gzip``, a decompression bomb: about 1 KB per MB). Counts the bytes it managed to send."""

    size: int = 256 * 1024 * 1024
    gzip: bool = False
    sent: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "Flood":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        self._thread.join(timeout=5)

    def _body(self):
        chunk = bytes(1024 * 1024)
        if not self.gzip:
            for _ in range(self.size // len(chunk)):
                yield chunk
            return
        import zlib  # only the bomb needs it

        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
        for _ in range(self.size // len(chunk)):
            yield packer.compress(chunk)
        yield packer.flush()

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536) or b"\r\n\r\n"
                encoding = "Content-Encoding: gzip\r\n" if self.gzip else f"Content-Length: {self.size}\r\n"
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{encoding}"
                             "Connection: close\r\n\r\n".encode())
                for piece in self._body():
                    conn.sendall(piece)
                    self.sent += len(piece)
            except OSError:
                return
