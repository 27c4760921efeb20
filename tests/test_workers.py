"""Worker processes: loss, restarts of the emulator, scaling, and many jobs exactly once."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import handler_cmd, wait_for, wait_status

DOCS = handler_cmd("docs_handlers.py")


def workers(c, ep):
    return c.get(f"/rpremote/v1/endpoints/{ep}").json()["workers"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_sigkilled_worker_fails_its_job_and_is_replaced(emulator_factory):
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1",
                           "--workers-max", "1")
    with emu.client() as c:
        job = c.post("/v2/docs/run", json={"input": {"mode": "pid", "seconds": 120}}).json()
        body = wait_for(lambda: (s := c.get(f"/v2/docs/status/{job['id']}").json()).get("output")
                        and s, what="the job to report its pid")
        worker_pid, worker_id = body["output"]["pid"], body["workerId"]
        killed_at = time.time()
        os.kill(worker_pid, signal.SIGKILL)
        failed = wait_status(c, "docs", job["id"], "FAILED", timeout=15)
        assert time.time() - killed_at < 5  # noticed from the process exit, not a timeout
        err = json.loads(failed["error"])
        assert err["error_type"] == "WorkerLost" and worker_id in err["error_message"]
        assert "SIGKILL" in err["error_message"]
        # a replacement worker takes the next job
        nxt = c.post("/v2/docs/runsync", json={"input": {"mode": "echo"}}).json()
        assert nxt["status"] == "COMPLETED" and nxt["workerId"] != worker_id
        # the dead worker's heartbeat process went with it
        assert all(w["id"] != worker_id for w in workers(c, "docs"))


def test_restart_keeps_queued_jobs_and_finished_results(emulator_factory, tmp_path):
    state = tmp_path / "restart"
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1",
                           "--endpoint", "later", state=state)
    with emu.client() as c:
        done = c.post("/v2/docs/runsync", json={"input": {"mode": "echo", "k": 1}}).json()
        assert done["status"] == "COMPLETED"
        queued = [c.post("/v2/later/run", json={"input": {"mode": "echo", "k": i}}).json()["id"]
                  for i in range(3)]
        worker_pids = [w["pid"] for w in workers(c, "docs")]
    emu.stop(signal.SIGKILL)  # no chance to clean up
    # the workers do not outlive the emulator (parent-death signal through the reaper)
    wait_for(lambda: not any(pid_alive(p) for p in worker_pids), timeout=15,
             what="workers of the killed emulator to exit")

    emu2 = emulator_factory("--endpoint", "later", "--worker-cmd", DOCS, "--workers-min", "1",
                            state=state)
    with emu2.client() as c:
        again = c.get(f"/v2/docs/status/{done['id']}").json()
        assert again["status"] == "COMPLETED" and again["output"]["echo"]["k"] == 1
        for i, job_id in enumerate(queued):
            body = wait_status(c, "later", job_id, "COMPLETED", timeout=60)
            assert body["output"]["echo"]["k"] == i


def test_job_running_when_the_emulator_dies_is_failed_after_restart(emulator_factory, tmp_path):
    state = tmp_path / "crash"
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1", state=state)
    with emu.client() as c:
        job = c.post("/v2/docs/run", json={"input": {"mode": "sleep", "seconds": 60}}).json()
        wait_status(c, "docs", job["id"], "IN_PROGRESS")
    emu.stop(signal.SIGKILL)
    emu2 = emulator_factory(state=state)
    with emu2.client() as c:
        body = c.get(f"/v2/docs/status/{job['id']}").json()
        assert body["status"] == "FAILED"
        assert "emulator restarted" in json.loads(body["error"])["error_message"]


def test_500_jobs_through_2_workers_exactly_once(emulator_factory, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "2",
                           "--workers-max", "2", "--env", "HANDLER_CONCURRENCY=25")
    with emu.client() as c:
        ids = {}
        for i in range(500):
            ids[c.post("/v2/docs/run", json={"input": {"mode": "count", "n": i, "dir": str(runs)}}
                       ).json()["id"]] = i
        assert len(ids) == 500
        wait_for(lambda: c.get("/v2/docs/health").json()["jobs"]["completed"] == 500,
                 timeout=240, interval=0.5, what="500 completed jobs")
        used = set()
        for job_id, i in ids.items():
            body = c.get(f"/v2/docs/status/{job_id}").json()
            assert body["status"] == "COMPLETED" and body["output"]["n"] == i
            used.add(body["output"]["worker"])
        assert len(used) == 2
        health = c.get("/v2/docs/health").json()["jobs"]
        assert health["failed"] == 0 and health["inQueue"] == 0 and health["inProgress"] == 0
    executed = [line for f in runs.iterdir() for line in f.read_text().split()]
    assert len(executed) == 500 and set(executed) == set(ids)


def test_request_count_scaler_and_idle_timeout(emulator_factory):
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "0",
                           "--workers-max", "3", "--scaler", "REQUEST_COUNT", "--scaler-value", "1",
                           "--idle-timeout", "2")
    with emu.client() as c:
        assert c.get("/v2/docs/health").json()["workers"]["initializing"] == 0
        jobs = [c.post("/v2/docs/run", json={"input": {"mode": "sleep", "seconds": 4}}).json()["id"]
                for _ in range(3)]
        h = c.get("/v2/docs/health").json()["workers"]
        assert h["initializing"] == 3  # ceil(3 / 1) workers, started at once
        for j in jobs:
            wait_status(c, "docs", j, "COMPLETED", timeout=60)
        assert len({c.get(f"/v2/docs/status/{j}").json()["workerId"] for j in jobs}) == 3
        # idle for longer than idleTimeout: back to workersMin = 0
        wait_for(lambda: not workers(c, "docs"), timeout=30, what="scale down to 0")


def test_queue_delay_scaler_adds_a_worker_when_jobs_wait(emulator_factory):
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1",
                           "--workers-max", "2", "--scaler", "QUEUE_DELAY", "--scaler-value", "1",
                           "--idle-timeout", "3")
    with emu.client() as c:
        wait_for(lambda: c.get("/v2/docs/health").json()["workers"]["idle"] == 1, what="1 idle worker")
        first = c.post("/v2/docs/run", json={"input": {"mode": "sleep", "seconds": 6}}).json()["id"]
        wait_status(c, "docs", first, "IN_PROGRESS")
        assert len(workers(c, "docs")) == 1
        second = c.post("/v2/docs/run", json={"input": {"mode": "echo"}}).json()["id"]
        time.sleep(0.5)
        assert len(workers(c, "docs")) == 1  # waited less than scalerValue: no new worker yet
        body = wait_status(c, "docs", second, "COMPLETED", timeout=30)
        assert body["delayTime"] >= 1000
        assert len(workers(c, "docs")) == 2
        # Once nothing waits, idle workers beyond workersMin go after idleTimeout.
        wait_status(c, "docs", first, "COMPLETED", timeout=30)
        wait_for(lambda: len(workers(c, "docs")) == 1, timeout=20, what="scale down to workersMin")


def test_crashing_worker_is_restarted_with_backoff_and_reported_unhealthy(emulator_factory):
    emu = emulator_factory("--endpoint", "bad", "--worker-cmd", handler_cmd("crash_on_start.py"),
                           "--workers-min", "1")
    with emu.client() as c:
        wait_for(lambda: c.get("/v2/bad/health").json()["workers"]["unhealthy"] >= 2, timeout=30,
                 what="repeated crashes to show as unhealthy")
        time.sleep(3)
        crashes = emu.output().count("ended unexpectedly")
        assert 2 <= crashes <= 8  # restarted, but backing off rather than in a hot loop
        assert "simulated broken worker image" in (emu.state / "logs" / "bad").joinpath(
            os.listdir(emu.state / "logs" / "bad")[0]).read_text()


def test_idle_worker_killed_is_replaced_to_keep_workers_min(emulator_factory):
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1")
    with emu.client() as c:
        wait_for(lambda: c.get("/v2/docs/health").json()["workers"]["idle"] == 1, what="idle worker")
        [w] = workers(c, "docs")
        os.kill(w["pid"], signal.SIGKILL)  # the reaper process: the whole worker goes
        wait_for(lambda: [x for x in workers(c, "docs") if x["id"] != w["id"] and x["state"] == "idle"],
                 timeout=30, what="a replacement worker")


def test_worker_ignoring_a_stop_is_refreshed(emulator_factory):
    emu = emulator_factory("--endpoint", "docs", "--worker-cmd", DOCS, "--workers-min", "1",
                           "--workers-max", "1")
    with emu.client() as c:
        job = c.post("/v2/docs/run", json={"input": {"mode": "block", "seconds": 60}}).json()
        body = wait_status(c, "docs", job["id"], "IN_PROGRESS")
        stubborn = body["workerId"]
        c.post(f"/v2/docs/cancel/{job['id']}")
        # a blocking handler cannot see the stop; after --stop-grace the worker is replaced
        wait_for(lambda: all(w["id"] != stubborn for w in workers(c, "docs")), timeout=30,
                 what="the stubborn worker to be refreshed")
        assert "ignores the stop" in emu.output()
        assert c.post("/v2/docs/runsync", json={"input": {"mode": "echo"}}).json()["status"] == "COMPLETED"


def test_external_worker_is_served_and_lost_by_heartbeat_silence(emulator_factory, tmp_path):
    """A worker the emulator did not start (any `runpod` worker pointed at it by hand)."""
    import subprocess
    import sys

    from rpremote.local.supervisor import worker_urls

    emu = emulator_factory("--endpoint", "ext")
    env = {**os.environ, **worker_urls(emu.url, "ext", "CPU"), "RUNPOD_AI_API_KEY": emu.key,
           "RUNPOD_POD_ID": "externalworker", "RUNPOD_PING_INTERVAL": "1000",
           "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_LOG_LEVEL": "WARN", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, DOCS.split()[-1]], env=env, start_new_session=True)
    try:
        with emu.client() as c:
            body = c.post("/v2/ext/runsync", json={"input": {"mode": "echo"}}).json()
            assert body["status"] == "COMPLETED" and body["workerId"] == "externalworker"
            job = c.post("/v2/ext/run", json={"input": {"mode": "sleep", "seconds": 60}}).json()
            wait_status(c, "ext", job["id"], "IN_PROGRESS")
            os.killpg(proc.pid, signal.SIGKILL)  # worker and its heartbeat process
            body = wait_status(c, "ext", job["id"], "FAILED", timeout=20)
            assert "no heartbeat" in json.loads(body["error"])["error_message"]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
