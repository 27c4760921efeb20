"""How a blocking call travels: one /runsync while it is short, /run + /stream once it runs
long (so its printed lines arrive as they are printed), and the local target's lean sender."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import httpx
import pytest

from rpremote import remote
from rpremote.client import targets
from rpremote.client.loopback import LoopbackSender, is_loopback_http
from rpremote.client.queue import QueueClient

pytestmark = pytest.mark.usefixtures("rpremote_home")


@pytest.fixture
def sent(monkeypatch):
    """The (method, path) of every queue request this process sends, in order."""
    requests: list[tuple[str, str]] = []
    send = QueueClient._send

    def recording(self, action):
        requests.append((action[1], action[2].split("/")[3]))
        return send(self, action)

    monkeypatch.setattr(QueueClient, "_send", recording)
    return requests


@remote(workers=(0, 1), idle_timeout=60)
def quick(x):
    return x * 2


@remote(workers=(0, 1), idle_timeout=60)
def talks_then_works(seconds):
    import time

    print("started", flush=True)
    time.sleep(seconds)
    return "done"


def test_a_short_call_is_one_request(sent):
    assert quick(1) == 2  # warm-up: the endpoint exists, a worker is up
    sent.clear()
    assert quick(21) == 42
    assert sent == [("POST", "runsync")]


def test_a_call_that_ran_long_streams_its_output_next_time(sent, reporter):
    assert talks_then_works(0.3) == "done"  # its first call: one /runsync
    assert sent[-1] == ("POST", "runsync")
    sent.clear()
    t0 = time.monotonic()
    assert talks_then_works(2.0) == "done"
    ended = time.monotonic()
    assert sent[:2] == [("POST", "run"), ("GET", "stream")]
    first = next(t for t, _, text in reporter.logs if "started" in text and t >= t0)
    # Through /runsync the line would wait for its answer, a second after the start.
    assert ended - first > 1.5, "the printed line must arrive as it is printed"
    sent.clear()
    assert talks_then_works(0.0) == "done"  # back to short: one request again next time
    assert quick(2) == 4  # (another function keeps its own history)
    sent.clear()
    assert talks_then_works(0.0) == "done"
    assert sent == [("POST", "runsync")]


def test_the_local_target_uses_the_lean_sender():
    target = targets.current()
    assert target.queue._lean is not None
    assert is_loopback_http("http://127.0.0.1:8000") and is_loopback_http("http://localhost:1")
    assert not is_loopback_http("https://127.0.0.1:8000")
    assert is_loopback_http("http://[::1]:8000")
    assert not is_loopback_http("http://api.runpod.ai/v2")
    assert not is_loopback_http("http://127.example.com/")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 0.3  # an idle connection is closed by the server after this, without a word
    connections: set = set()

    def do_GET(self):
        self.connections.add(self.client_address)
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        body = b'{"path":"%s"}' % self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.connections = set()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_lean_sender_keeps_connections_and_notices_ones_the_server_closed(http_server):
    sender = LoopbackSender(http_server, {"Authorization": "Bearer k"})
    try:
        assert sender.request("GET", "/a", params={"wait": 5}).json() == {"path": "/a?wait=5"}
        assert sender.request("GET", "/b").json() == {"path": "/b"}
        assert len(_Handler.connections) == 1, "the second request reuses the connection"
        time.sleep(0.6)  # the server drops the idle connection
        assert sender.request("GET", "/c").status_code == 200  # a new one, no error
        assert len(_Handler.connections) == 2
        with pytest.raises(httpx.ReadTimeout):
            sender.request("GET", "/slow", timeout=0.2)
        assert sender.request("GET", "/d").json() == {"path": "/d"}
    finally:
        sender.close()


def test_lean_sender_raises_connect_error_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = LoopbackSender(f"http://127.0.0.1:{port}", {})
    with pytest.raises(httpx.ConnectError):
        sender.request("GET", "/x")
