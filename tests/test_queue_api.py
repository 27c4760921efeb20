"""The client-facing queue API over real HTTP: shapes, states, limits, policy and retention."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import handler_cmd, start_emulator, wait_for, wait_status

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emu = start_emulator(
        tmp_path_factory.mktemp("queue"),
        "--retention-run", "4", "--retention-sync", "2", "--webhook-retry-delay", "0.5",
        "--endpoint", "docs", "--worker-cmd", handler_cmd("docs_handlers.py"),
        "--workers-min", "1", "--workers-max", "1", "--env", "HANDLER_CONCURRENCY=4",
        "--endpoint", "gen", "--worker-cmd", handler_cmd("generator_handler.py"), "--workers-min", "1",
        "--endpoint", "idle",  # no workers: jobs stay queued
    )
    yield emu
    emu.stop()


@pytest.fixture
def c(emu):
    with emu.client() as client:
        yield client


def test_auth_is_required(emu, c):
    with httpx.Client(base_url=emu.url) as anon:
        r = anon.post("/v2/docs/run", json={"input": {}})
        assert r.status_code == 401 and "Authorization" in r.json()["error"]
        r = anon.get("/v2/docs/health", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # the docs' curl samples send the key without "Bearer"; that works too
        assert anon.get("/v2/docs/health", headers={"Authorization": emu.key}).status_code == 200
    assert emu.key not in emu.output()


def test_job_ids_have_the_platform_shape(c):
    run = c.post("/v2/idle/run", json={"input": {"a": 1}}).json()
    assert run["status"] == "IN_QUEUE" and re.fullmatch(UUID + "-u1", run["id"])
    sync = c.post("/v2/idle/runsync?wait=1000", json={"input": {"a": 1}}).json()
    assert sync["status"] == "IN_QUEUE" and re.fullmatch("sync-" + UUID, sync["id"])
    assert c.post("/v2/idle/purge-queue").json() == {"removed": 2, "status": "completed"}


def test_runsync_waits_then_returns_the_non_terminal_status(c):
    t0 = time.time()
    body = c.post("/v2/idle/runsync?wait=1500", json={"input": {}}).json()
    assert 1.4 < time.time() - t0 < 5
    assert body["status"] == "IN_QUEUE" and "output" not in body
    assert c.get(f"/v2/idle/status/{body['id']}").json()["status"] == "IN_QUEUE"
    c.post("/v2/idle/purge-queue")


def test_runsync_returns_the_finished_job(c):
    body = c.post("/v2/docs/runsync", json={"input": {"mode": "echo", "v": "héllo ✓"}}).json()
    assert body["status"] == "COMPLETED"
    assert body["output"]["echo"]["v"] == "héllo ✓"
    assert {"delayTime", "executionTime", "id", "workerId"} <= set(body)


@pytest.mark.parametrize("path", ["/v2/nope/run", "/v2/nope/health", "/v2/docs/status/nope",
                                  "/v2/docs/stream/nope"])
def test_unknown_endpoint_or_job_is_404_json(c, path):
    r = c.post(path, json={"input": {}}) if path.endswith("run") else c.get(path)
    assert r.status_code == 404
    assert "not found" in r.json()["error"]


def test_bad_requests_are_400_json(c):
    r = c.post("/v2/docs/run", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = c.post("/v2/docs/run", json={"inptu": {}})
    assert r.status_code == 400 and "'input'" in r.json()["error"]
    r = c.post("/v2/docs/run", json={"input": {}, "policy": {"executionTimeout": 10}})
    assert r.status_code == 400 and "executionTimeout" in r.json()["error"]
    r = c.post("/v2/docs/run", json={"input": {}, "policy": {"ttl": 5}})
    assert r.status_code == 400 and "ttl" in r.json()["error"]
    assert c.get("/v2/docs/run").status_code == 405


def test_payload_limits(c):
    eleven_mb = {"input": {"blob": "x" * (11 * 1024 * 1024)}}
    r = c.post("/v2/idle/run", json=eleven_mb)
    assert r.status_code == 413 and "10 MB" in r.json()["error"]
    # 11 MB is fine for /runsync (20 MB) ...
    r = c.post("/v2/idle/runsync?wait=1000", json=eleven_mb)
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
    c.post("/v2/idle/purge-queue")
    # ... but 21 MB is not
    r = c.post("/v2/idle/runsync", json={"input": {"blob": "x" * (21 * 1024 * 1024)}})
    assert r.status_code == 413 and "20 MB" in r.json()["error"]


def test_cancel_queued_job_removes_it_from_the_queue(c):
    job = c.post("/v2/idle/run", json={"input": {}}).json()
    assert c.get("/v2/idle/health").json()["jobs"]["inQueue"] == 1
    assert c.post(f"/v2/idle/cancel/{job['id']}").json() == {"id": job["id"], "status": "CANCELLED"}
    assert c.get("/v2/idle/health").json()["jobs"]["inQueue"] == 0
    assert c.get(f"/v2/idle/status/{job['id']}").json()["status"] == "CANCELLED"


def test_retry_only_failed_or_timed_out(c):
    job = c.post("/v2/docs/run", json={"input": {"mode": "raise"}}).json()
    wait_status(c, "docs", job["id"], "FAILED")
    assert c.post(f"/v2/docs/retry/{job['id']}").json() == {"id": job["id"], "status": "IN_QUEUE"}
    body = wait_status(c, "docs", job["id"], "FAILED")
    assert body["retries"] == 1
    assert c.get("/v2/docs/health").json()["jobs"]["retried"] >= 1
    ok = c.post("/v2/docs/runsync", json={"input": {"mode": "echo"}}).json()
    r = c.post(f"/v2/docs/retry/{ok['id']}")
    assert r.status_code == 400 and "only FAILED or TIMED_OUT" in r.json()["error"]


def test_execution_timeout_times_out_and_stops_the_handler(c, tmp_path):
    marker = tmp_path / "stopped"
    job = c.post("/v2/docs/run", json={
        "input": {"mode": "sleep", "seconds": 60, "cancel_marker": str(marker)},
        "policy": {"executionTimeout": 5000},
    }).json()
    body = wait_status(c, "docs", job["id"], "TIMED_OUT", timeout=30)
    assert 5000 <= body["executionTime"] < 8000
    assert "5000 ms" in body["error"]
    wait_for(marker.exists, timeout=10, what="the handler to be stopped")


def test_ttl_deletes_the_job(c):
    job = c.post("/v2/idle/run", json={"input": {}, "policy": {"ttl": 10000}}).json()
    assert c.get(f"/v2/idle/status/{job['id']}").status_code == 200
    wait_for(lambda: c.get(f"/v2/idle/status/{job['id']}").status_code == 404,
             timeout=20, what="TTL expiry")


def test_retention_run_and_runsync(c):
    run = c.post("/v2/docs/run", json={"input": {"mode": "echo"}}).json()
    sync = c.post("/v2/docs/runsync", json={"input": {"mode": "echo"}}).json()
    wait_status(c, "docs", run["id"], "COMPLETED")
    done_at = time.time()
    # this emulator keeps /runsync results 2 s and /run results 4 s
    wait_for(lambda: c.get(f"/v2/docs/status/{sync['id']}").status_code == 404, timeout=10,
             what="runsync retention")
    assert c.get(f"/v2/docs/status/{run['id']}").status_code == 200
    wait_for(lambda: c.get(f"/v2/docs/status/{run['id']}").status_code == 404, timeout=10,
             what="run retention")
    assert time.time() - done_at >= 3.5


def test_stream_delivers_each_chunk_once(c):
    job = c.post("/v2/gen/run", json={"input": {"n": 5, "delay": 0.3}}).json()
    got, calls = [], 0
    while True:
        body = c.get(f"/v2/gen/stream/{job['id']}").json()
        calls += 1
        assert set(body) == {"id", "status", "stream"}
        got += [item["output"]["token"] for item in body["stream"]]
        if body["status"] == "COMPLETED" and not body["stream"]:
            break
    assert got == [0, 1, 2, 3, 4]
    assert calls >= 2
    assert c.get(f"/v2/gen/stream/{job['id']}").json()["stream"] == []


def test_stream_long_polls_when_nothing_is_ready(c):
    job = c.post("/v2/idle/run", json={"input": {}}).json()
    t0 = time.time()
    body = c.get(f"/v2/idle/stream/{job['id']}").json()
    assert body == {"id": job["id"], "status": "IN_QUEUE", "stream": []}
    assert 0.9 < time.time() - t0 < 3  # held for --stream-hold 1
    c.post("/v2/idle/purge-queue")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append(body)
        self.send_response(500 if len(self.received) == 1 else 200)  # fail once
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_posted_and_retried(c):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = c.post("/v2/docs/run", json={"input": {"mode": "echo", "w": 1}, "webhook": hook}).json()
        wait_for(lambda: len(_Hook.received) >= 2, timeout=30, what="webhook retry")
        time.sleep(1.0)
        assert len(_Hook.received) == 2  # failed once, delivered on the first retry
        body = _Hook.received[-1]
        assert body["id"] == job["id"] and body["status"] == "COMPLETED"
        assert body["output"]["echo"] == {"mode": "echo", "w": 1}
        assert body == c.get(f"/v2/docs/status/{job['id']}").json()
    finally:
        server.shutdown()


def test_cancel_right_after_pickup_still_reaches_the_handler(c, tmp_path):
    """The SDK drops a stop that lands before the job became a task; the emulator re-sends it."""
    for i in range(5):
        marker = tmp_path / f"stopped-{i}"
        job = c.post("/v2/docs/run", json={
            "input": {"mode": "sleep", "seconds": 60, "cancel_marker": str(marker)}}).json()
        wait_for(lambda: c.get(f"/v2/docs/status/{job['id']}").json()["status"] == "IN_PROGRESS",
                 interval=0.002, what="pickup")
        assert c.post(f"/v2/docs/cancel/{job['id']}").json()["status"] == "CANCELLED"
        wait_for(marker.exists, timeout=15, what=f"handler {i} to see CancelledError")
