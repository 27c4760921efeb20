"""A lean blocking HTTP/1.1 sender for the local emulator, on this machine.

httpx builds every request through layers (URL parsing and merging, cookies, auth, redirects,
its connection pool, h11) that cost about 0.3 ms of CPU a request here: more than the
emulator takes to answer a warm call. The local target's ``QueueClient`` sends through this
instead; every other target (RunPod, a Pod, their rehearsals) keeps httpx, so the code that
talks to the cloud is the code that is tested against the emulator.

What it keeps of httpx: keep-alive connections, one per concurrent request; a connection the
server closed while idle is noticed before it is reused (as httpcore does), so a request is
never written into a dead socket; and failures are raised as httpx's exception types, so
``QueueClient``'s retry rules read them the same way (``ConnectError``: never reached the
server; other ``TransportError``: it may have). Headers and body leave in one write, so the
server wakes once per request.
"""

from __future__ import annotations

import http.client
import ipaddress
import json as jsonlib
import select
import socket
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
MAX_IDLE = 8


class Response:
    """What ``QueueClient`` reads of an answer: ``status_code``, ``headers``, ``text``, ``json()``."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: http.client.HTTPMessage, content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class LoopbackSender:
    """``request(method, path, json=, params=, timeout=)`` to ``base_url``, an ``http://`` URL."""

    def __init__(self, base_url: str, headers: dict[str, str]):
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"not a plain http URL: {base_url}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.headers = {"Host": f"{self.host}:{self.port}", "Accept": "*/*", **headers}
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, timeout: Any = None) -> Response:
        seconds = timeout if isinstance(timeout, (int, float)) else DEFAULT_TIMEOUT_S
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        headers = self.headers
        body = None
        if json is not None:
            body = _dumps(json)
            headers = {**headers, "Content-Type": "application/json"}
        conn = self._connection()
        try:
            conn.sock.settimeout(seconds)  # type: ignore[union-attr]
            # Bytes with headers: http.client sends both in one write.
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except socket.timeout as e:
            conn.close()
            raise httpx.ReadTimeout(f"no answer within {seconds:g} s") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise httpx.ReadError(f"{type(e).__name__}: {e}") from e
        if answer.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Response(answer.status, answer.headers, content)

    def _connection(self) -> http.client.HTTPConnection:
        """An idle connection still open, else a new one (connect errors: ``ConnectError``)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not _readable(conn.sock):
                return conn
            conn.close()  # the server closed it meanwhile (keep-alive timeout), or sent junk
        conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
        except socket.timeout as e:
            raise httpx.ConnectTimeout(f"{self.host}:{self.port}: {e}") from e
        except OSError as e:
            raise httpx.ConnectError(f"{self.host}:{self.port}: {e}") from e
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        return conn

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()


def is_loopback_http(url: str) -> bool:
    """Whether ``url`` is plain http to this machine (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a name, such as 127.example.com: not this machine
        return False


def _readable(sock: socket.socket | None) -> bool:
    """An idle keep-alive socket that is readable has been closed (or broken) by the server."""
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _dumps(value: Any) -> bytes:
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
