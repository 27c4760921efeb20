"""The queue client against a real, misbehaving HTTP server on 127.0.0.1: what it repeats and
what it must not (a job is never sent twice)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rpremote.client.queue import QueueClient
from rpremote.errors import RpremoteError


class Flaky:
    """Serves /v2/ep/...: the first ``drops`` requests per path lose their connection, the next
    ``busy`` get 429; after that it answers. Counts what it received."""

    def __init__(self, drops: int = 0, busy: int = 0):
        self.drops, self.busy = drops, busy
        self.seen: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_any(self):
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                n = outer.seen[path] = outer.seen.get(path, 0) + 1
                if n <= outer.drops:
                    self.close_connection = True
                    self.connection.shutdown(2)  # drop: no response at all
                    return
                if n <= outer.drops + outer.busy:
                    return self.reply(429, {"error": "slow down"}, {"Retry-After": "0"})
                self.reply(200, {"id": "job-1", "status": "IN_QUEUE"})

            def reply(self, code, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    servers = []

    def make(**kw):
        s = Flaky(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_dropped_connections_are_retried_for_reads(flaky):
    server = flaky(drops=2)
    q = QueueClient(server.url, "key")
    assert q.status("ep", "job-1")["id"] == "job-1"
    assert server.seen["/v2/ep/status/job-1"] == 3


def test_a_dropped_run_is_not_repeated(flaky):
    server = flaky(drops=1)
    q = QueueClient(server.url, "key")
    with pytest.raises(RpremoteError, match="not repeated"):
        q.run("ep", {"input": {}})
    assert server.seen["/v2/ep/run"] == 1  # never sent twice


def test_429_is_retried_even_for_run_and_makes_one_job(flaky):
    server = flaky(busy=2)
    q = QueueClient(server.url, "key")
    assert q.run("ep", {"input": {}})["id"] == "job-1"
    assert server.seen["/v2/ep/run"] == 3  # two refusals, one accepted job


def test_unreachable_server_says_so(flaky, monkeypatch):
    server = flaky()
    url = server.url
    server.close()
    monkeypatch.setattr("rpremote.client.queue.RETRY_DELAYS_S", (0.01,))
    with pytest.raises(RpremoteError, match="cannot reach"):
        QueueClient(url, "key").status("ep", "x")
