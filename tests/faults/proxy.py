"""A TCP proxy the fault tests put between the app's processes and PostgreSQL or Redis.

``cut()`` closes every open connection and stops listening, so new connections are
refused; ``restore()`` listens again on the same port. For a client that is what a
stopped server looks like (connections end, connects fail with ECONNREFUSED), without
touching the real server, which other test runs on the machine share.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

ACCEPT_POLL_SECONDS = 0.1
CHUNK = 65536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target``; ``cut()`` and ``restore()`` the path."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def __repr__(self) -> str:
        return f"TcpProxy(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]})"

    def restore(self) -> None:
        """Listen again on the same port (no-op when listening)."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            listener.settimeout(ACCEPT_POLL_SECONDS)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"proxy-{self.port}", daemon=True).start()

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones until ``restore()``."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            # shutdown() takes it out of LISTEN at once; close() alone would wait for the
            # accept thread's poll to return, and connects would succeed until then.
            _close(listener)
        for sock in sockets:
            _close(sock)

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue  # look at self._listener again: cut() may have replaced it
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    # shutdown() first: it wakes a thread blocked in recv() on this socket, close() alone does not.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class ProxyProcess:
    """A TcpProxy in a child process, driven over its stdin: the same ``port``, ``cut()``, ``restore()``.

    In its own process the proxy's forwarding threads do not compete for the GIL with
    the test's client threads, so the test's own load cannot slow the app's "network".
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.proxy", target_host, str(target_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self.port = int(self._process.stdout.readline())

    def __repr__(self) -> str:
        return f"ProxyProcess(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]})"

    def _command(self, command: str) -> None:
        self._process.stdin.write(command + "\n")
        answer = self._process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"proxy answered {answer!r} to {command!r}")

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones; return once done."""
        self._command("cut")

    def restore(self) -> None:
        self._command("restore")

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # EOF: the child exits
            self._process.wait(timeout=10)


def main() -> None:
    """``python -m tests.faults.proxy HOST PORT``: print the port, then obey "cut"/"restore" lines on stdin."""
    proxy = TcpProxy(sys.argv[1], int(sys.argv[2]))
    print(proxy.port, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command in ("cut", "restore"):
            getattr(proxy, command)()
            print("ok", flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)
    proxy.cut()
    os._exit(0)  # don't wait for the daemon threads


if __name__ == "__main__":
    main()
