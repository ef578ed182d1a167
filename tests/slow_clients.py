"""Slow clients (issue 17, row 4): connections that trickle their request, and probes that time everyone else.

A slow client is an attacker's cheapest tool against a server that gives a process or a
thread to a connection from its first byte: it sends a request line, then one more
header line (or one body byte) a second, and never finishes.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import requests

SEND_EVERY_SECONDS = 1.0  # the issue's: a header line a second


@dataclass
class SlowConnection:
    sock: socket.socket
    kind: str  # "header" or "body"
    closed_after_s: float | None = None  # when the server closed it, counted from the start


@dataclass
class SlowClients:
    """``headers`` connections trickling header lines and ``bodies`` trickling a POST body, to host:port.

    A context manager: entering returns once every connection has sent its first bytes (a
    server that takes a connection's first byte has taken it); leaving closes them all.
    """

    host: str
    port: int
    headers: int = 0
    bodies: int = 0
    connections: list[SlowConnection] = field(default_factory=list)

    def __enter__(self) -> SlowClients:
        self._stop = threading.Event()
        self._started = time.monotonic()
        for kind, count in (("header", self.headers), ("body", self.bodies)):
            for i in range(count):
                sock = socket.create_connection((self.host, self.port), timeout=5)
                sock.sendall(self._opening(kind, i))
                self.connections.append(SlowConnection(sock, kind))
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.sock.close()

    @property
    def open(self) -> int:
        return sum(c.closed_after_s is None for c in self.connections)

    def _opening(self, kind: str, i: int) -> bytes:
        host = f"Host: {self.host}:{self.port}\r\n"
        if kind == "header":
            return f"GET /healthz?slow={i} HTTP/1.1\r\n{host}".encode()
        # Headers complete at once; the body then comes a byte a second.
        return (
            f"POST /api/v1/events/ HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            f"Content-Length: 100000\r\n\r\n{{"
        ).encode()

    def _trickle(self) -> None:
        # Event.wait paces the attack (a line a second); it synchronises nothing.
        while not self._stop.wait(SEND_EVERY_SECONDS):
            for i, connection in enumerate(self.connections):
                if connection.closed_after_s is not None:
                    continue
                more = f"X-Slow-{i}: 1\r\n".encode() if connection.kind == "header" else b" "
                try:
                    connection.sock.sendall(more)
                    # An answer (a 408, a 400) or an EOF means the server has given up on it.
                    connection.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
                except BlockingIOError:  # nothing to read: the server is still waiting for the rest
                    continue
                except OSError:  # reset
                    pass
                connection.closed_after_s = time.monotonic() - self._started


def probe(url: str, *, requests_count: int, timeout: float) -> list[float | None]:
    """Time ``requests_count`` GETs of ``url`` one after another, each on a new connection.

    Each entry is the seconds to a 200, or None when none came within ``timeout`` (or no connection).
    """
    times: list[float | None] = []
    for _ in range(requests_count):
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=timeout, headers={"Connection": "close"})
        except requests.RequestException:  # timed out, refused, reset
            times.append(None)
            continue
        times.append(time.monotonic() - started if response.status_code == 200 else None)
    return times
