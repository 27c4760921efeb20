"""The official `runpod` client (1.12.0) against the emulator, with real SDK workers behind it.

Handlers are written as in RunPod's docs (tests/handlers). What each call returns is what
docs/runpod-contract.md documents for the platform.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from conftest import handler_cmd, start_emulator, wait_for


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emu = start_emulator(
        tmp_path_factory.mktemp("official"),
        "--endpoint", "docs", "--worker-cmd", handler_cmd("docs_handlers.py"),
        "--workers-min", "1", "--workers-max", "2", "--env", "HANDLER_CONCURRENCY=4",
        "--endpoint", "gen", "--worker-cmd", handler_cmd("generator_handler.py"), "--workers-min", "1",
        "--endpoint", "genagg", "--worker-cmd", handler_cmd("generator_handler.py"),
        "--workers-min", "1", "--env", "AGGREGATE=1",
    )
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def runpod_client(emu):
    """`import runpod` with RUNPOD_ENDPOINT_BASE_URL pointing at the emulator, as users would."""
    os.environ["RUNPOD_ENDPOINT_BASE_URL"] = f"{emu.url}/v2"
    import runpod

    if runpod.endpoint_url_base != f"{emu.url}/v2":  # imported earlier by another module
        runpod.endpoint_url_base = f"{emu.url}/v2"
    runpod.api_key = emu.key
    return runpod


def test_base_url_comes_from_the_environment(runpod_client, emu):
    assert runpod_client.endpoint_url_base == f"{emu.url}/v2"


def test_run_sync_returns_the_output(runpod_client):
    ep = runpod_client.Endpoint("docs")
    out = ep.run_sync({"mode": "echo", "x": 1}, timeout=60)
    assert out["echo"] == {"mode": "echo", "x": 1}
    assert len(out["worker"]) == 14


def test_run_status_output(runpod_client, emu):
    ep = runpod_client.Endpoint("docs")
    job = ep.run({"mode": "sleep", "seconds": 1})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
    assert job.output(timeout=60) == {"slept": 1}
    assert job.status() == "COMPLETED"
    with emu.client() as c:
        body = c.get(f"/v2/docs/status/{job.job_id}").json()
    assert body["delayTime"] >= 0 and body["executionTime"] >= 900
    assert body["workerId"] and body["id"].endswith("-u1")


def test_raising_handler_fails_with_json_error(runpod_client, emu):
    job = runpod_client.Endpoint("docs").run({"mode": "raise", "message": "boom"})
    assert job.output(timeout=60) is None  # the SDK client drops the error, as documented
    assert job.status() == "FAILED"
    with emu.client() as c:
        body = c.get(f"/v2/docs/status/{job.job_id}").json()
    err = json.loads(body["error"])
    assert err["error_type"] == "<class 'ValueError'>"
    assert err["error_message"] == "boom"
    assert "Traceback" in err["error_traceback"]


def test_returned_error_dict_fails_and_keeps_partial_output(runpod_client, emu):
    job = runpod_client.Endpoint("docs").run({"mode": "error", "message": "handler said bad"})
    wait_for(lambda: job.status() == "FAILED", what="FAILED")
    with emu.client() as c:
        body = c.get(f"/v2/docs/status/{job.job_id}").json()
    assert body["error"] == "handler said bad"
    assert body["output"] == {"partial": 1}


def test_empty_dict_completes_without_output_and_string_output(runpod_client, emu):
    ep = runpod_client.Endpoint("docs")
    empty = ep.run({"mode": "empty"})
    assert empty.output(timeout=60) is None
    with emu.client() as c:
        body = c.get(f"/v2/docs/status/{empty.job_id}").json()
    assert body["status"] == "COMPLETED" and "output" not in body
    assert ep.run_sync({"mode": "string"}) == "just a string"


def test_progress_update_is_visible_while_in_progress(runpod_client):
    job = runpod_client.Endpoint("docs").run({"mode": "progress", "seconds": 3})
    seen = []

    def progress_seen():
        s = job._fetch_job()
        seen.append((s["status"], s.get("output")))
        return s["status"] == "IN_PROGRESS" and s.get("output") == {"pct": 50}

    wait_for(progress_seen, timeout=30, interval=0.1, what="progress output")
    assert job.output(timeout=60) == {"done": True}


def test_stream_yields_chunks_before_the_generator_ends(runpod_client):
    job = runpod_client.Endpoint("gen").run({"n": 4, "delay": 1.0})
    arrivals = []
    for chunk in job.stream():
        arrivals.append((time.time(), chunk))
    assert [c["token"] for _, c in arrivals] == [0, 1, 2, 3]
    # token 0 was produced ~3 s before the generator finished; it must arrive long before the end
    first_arrival, first = arrivals[0]
    last_produced = arrivals[-1][1]["t"]
    assert first_arrival < last_produced - 1.0
    assert job.status() == "COMPLETED"
    assert job.output() == []  # without return_aggregate_stream the final output is []


def test_aggregate_stream_is_the_final_output(runpod_client):
    out = runpod_client.Endpoint("genagg").run_sync({"n": 3, "delay": 0.1}, timeout=60)
    assert [c["token"] for c in out] == [0, 1, 2]


def test_generator_failing_midway(runpod_client, emu):
    job = runpod_client.Endpoint("gen").run({"n": 2, "delay": 0.1, "fail": True})
    chunks = list(job.stream())
    assert [c["token"] for c in chunks] == [0, 1]
    assert job.status() == "FAILED"
    with emu.client() as c:
        body = c.get(f"/v2/gen/status/{job.job_id}").json()
    assert "generator failed midway" in body["error"]


def test_cancel_reaches_the_running_handler(runpod_client, tmp_path):
    marker = tmp_path / "cancelled"
    job = runpod_client.Endpoint("docs").run(
        {"mode": "sleep", "seconds": 60, "cancel_marker": str(marker)}
    )
    wait_for(lambda: job.status() == "IN_PROGRESS", what="IN_PROGRESS")
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    wait_for(marker.exists, timeout=15, what="handler to see CancelledError")
    assert marker.read_text() == job.job_id


def test_health_and_purge_queue(runpod_client, emu):
    ep = runpod_client.Endpoint("docs")
    health = ep.health()
    assert set(health["jobs"]) >= {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) >= {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}
    # Fill both workers (4 slots each) with long jobs, then queue more and purge them.
    blockers = [ep.run({"mode": "sleep", "seconds": 8}) for _ in range(8)]
    wait_for(lambda: ep.health()["jobs"]["inProgress"] == 8, timeout=60, what="8 in progress")
    queued = [ep.run({"mode": "echo"}) for _ in range(3)]
    assert ep.health()["jobs"]["inQueue"] == 3
    assert ep.purge_queue() == {"removed": 3, "status": "completed"}
    assert ep.health()["jobs"]["inQueue"] == 0
    with emu.client() as c:
        assert c.get(f"/v2/docs/status/{queued[0].job_id}").status_code == 404
        for b in blockers:
            c.post(f"/v2/docs/cancel/{b.job_id}")


def test_refresh_worker_replaces_the_worker(runpod_client, emu):
    ep = runpod_client.Endpoint("gen")  # one worker, min 1: easy to follow
    with emu.client() as c:
        before = {w["id"] for w in c.get("/rpremote/v1/endpoints/docs").json()["workers"]}
    out = runpod_client.Endpoint("docs").run_sync({"mode": "refresh"})
    assert out == {"answer": 42}  # refresh_worker is popped out of the output

    def replaced():
        with emu.client() as c:
            ws = c.get("/rpremote/v1/endpoints/docs").json()["workers"]
        return len(before - {w["id"] for w in ws}) == 1
    wait_for(replaced, timeout=30, what="the refreshed worker to be retired")
    assert ep.run_sync({"n": 1, "delay": 0}) == []


def test_asyncio_endpoint(runpod_client):
    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as session:
            ep = runpod_client.AsyncioEndpoint("docs", session)
            job = await ep.run({"mode": "echo", "y": 2})
            out = await job.output(timeout=60)
            return out, await job.status()

    out, status = asyncio.run(main())
    # AsyncioEndpoint always wraps its argument in {"input": ...}
    assert out["echo"] == {"mode": "echo", "y": 2}
    assert status == "COMPLETED"
