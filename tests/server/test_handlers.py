"""The sidebar's REST API (rpremote.jupyter) in a real Jupyter Server (pytest-jupyter), over
real jobs on the local target: a real emulator with real workers, under a fresh RPREMOTE_HOME,
stopped by its PID at the end (``fresh_home``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from rpremote import config, journal, remote

REPO = Path(__file__).resolve().parents[2]
STATES = {"IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT",
          "UNKNOWN", "EXPIRED"}
JOB_FIELDS = {"id", "name", "kind", "target", "endpoint", "gpu", "status", "worker",
              "submitted_at", "started_at", "finished_at", "delay_ms", "execution_ms",
              "cost_usd", "error", "source", "cell", "source_path"}


@remote(gpu="ADA_24", workers=(0, 2), idle_timeout=30)
def greet(name):
    print(f"hello {name}", flush=True)
    print("second line", flush=True)
    return name


@remote(gpu="ADA_24", workers=(0, 2), idle_timeout=30)
def breaks(n):
    raise ValueError(f"bad number {n}\nmore words")


@remote(gpu="ADA_24", workers=(0, 2), idle_timeout=30)
def ticker(n, pause):
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(pause)
    return n


@pytest.fixture(autouse=True)
def quiet():
    config.configure(quiet=True)
    yield
    config.reset()


async def get(jp_fetch, *parts, **params):
    r = await jp_fetch("rpremote", "api", *parts, params=params or None)
    assert r.code == 200 and r.headers["Content-Type"].startswith("application/json")
    return json.loads(r.body)


async def fails(jp_fetch, code, *parts, method="GET", **kw):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("rpremote", "api", *parts, method=method,
                       **({"body": b""} if method == "POST" else {}), **kw)
    assert e.value.code == code, e.value.response.body
    body = json.loads(e.value.response.body)
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


async def eventually(check, timeout=30.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def test_the_repo_enables_the_extension():
    enabled = json.loads((REPO / "jupyter-config" / "jupyter_server_config.d" /
                          "rpremote.json").read_text())
    assert enabled == {"ServerApp": {"jpserver_extensions": {"rpremote.jupyter": True}}}
    import rpremote.jupyter

    assert rpremote.jupyter._jupyter_server_extension_points() == [{"module": "rpremote.jupyter"}]


async def test_every_route_needs_jupyters_token(jp_fetch, fresh_home):
    no_token = {"headers": {"Authorization": ""}}
    for parts, method in [(("jobs",), "GET"), (("jobs", "x"), "GET"),
                          (("jobs", "x", "logs"), "GET"), (("jobs", "x", "cancel"), "POST"),
                          (("endpoints",), "GET"), (("endpoints", "x"), "DELETE"),
                          (("pods",), "GET"), (("pods", "x", "stop"), "POST"),
                          (("pods", "x", "terminate"), "POST"), (("cost",), "GET")]:
        await fails(jp_fetch, 403, *parts, method=method, **no_token)
    # With the token, an empty journal and no emulator: answers, and nothing was started.
    listed = await get(jp_fetch, "jobs")
    assert listed["jobs"] == [] and listed["sources"] == [] and listed["now"] > 0
    local = (await get(jp_fetch, "endpoints"))["local"]
    assert local == {"running": False, "url": None, "endpoints": [], "error": None}
    assert not (fresh_home / "emulator" / "server.json").exists()


async def test_without_a_key_runpod_and_pods_say_so(jp_fetch, fresh_home, no_runpod_key):
    runpod = (await get(jp_fetch, "endpoints"))["runpod"]
    assert runpod["configured"] is False and runpod["endpoints"] == []
    assert "no RunPod API key" in runpod["error"]
    pods = await get(jp_fetch, "pods")
    assert pods["pods"] == [] and "no RunPod API key" in pods["error"]
    assert "no RunPod API key" in await fails(jp_fetch, 400, "pods", "abc", "stop",
                                              method="POST")
    assert "no RunPod API key" in await fails(jp_fetch, 400, "endpoints", "abc",
                                              method="DELETE", params={"target": "runpod"})
    cost = await get(jp_fetch, "cost")
    assert cost["today_usd"] == 0 and cost["month_usd"] == 0 and cost["burn_usd_per_h"] == 0


async def test_bad_ids_are_json_404s(jp_fetch, fresh_home):
    journal.record("abc-123", "rpremote-cpu-0", target="local", name="f", status="COMPLETED",
                   submitted_at=time.time())
    for parts in [("jobs", "no-such-job"), ("jobs", "no-such-job", "logs"),
                  ("jobs", "..%2F..%2Fetc"), ("nothing-here",), ("jobs", "a", "b", "c")]:
        await fails(jp_fetch, 404, *parts)
    assert "no job 'nope'" in await fails(jp_fetch, 404, "jobs", "nope", "cancel", method="POST")
    assert "not running" in await fails(jp_fetch, 404, "endpoints", "rpremote-x-00000000",
                                        method="DELETE")
    assert "whole number" in await fails(jp_fetch, 400, "jobs", "abc-123", "logs",
                                         params={"offset": "x"})
    # A known job of a stopped emulator: its row; its logs, done, say it is gone with it.
    assert (await get(jp_fetch, "jobs", "abc"))["id"] == "abc-123"

    async def logs_done():
        logs = await get(jp_fetch, "jobs", "abc-123", "logs")
        return logs if logs["done"] else None

    logs = await eventually(logs_done, timeout=10, what="done")
    assert logs["text"] == "" and logs["offset"] == 0
    assert "the local emulator is not running" in logs["note"]
    assert "not running" in await fails(jp_fetch, 409, "jobs", "abc-123", "cancel",
                                        method="POST")


async def test_jobs_detail_live_logs_cancel_endpoints_and_cost(jp_fetch, fresh_home,
                                                               no_runpod_key):
    t0 = time.time()
    assert await asyncio.to_thread(greet, "sidebar") == "sidebar"
    with pytest.raises(ValueError):
        await asyncio.to_thread(breaks, 7)
    done = journal.recent(limit=2)
    ok_id = next(e.id for e in done if e.name == "greet")
    failed_id = next(e.id for e in done if e.name == "breaks")

    # The list: newest first, every field, from this process's source.
    listed = await get(jp_fetch, "jobs")
    rows = listed["jobs"]
    assert [r["id"] for r in rows] == [failed_id, ok_id]
    assert all(set(r) == JOB_FIELDS for r in rows) and all(r["status"] in STATES for r in rows)
    ok = rows[1]
    assert ok["status"] == "COMPLETED" and ok["name"] == "greet" and ok["kind"] == "call"
    assert ok["target"] == "local" and ok["gpu"] == "ADA_24" and ok["worker"]
    assert t0 <= ok["submitted_at"] <= ok["started_at"] <= ok["finished_at"] <= time.time()
    assert ok["execution_ms"] >= 0 and ok["cost_usd"] > 0 and ok["error"] is None
    assert ok["source"] and listed["sources"] == [ok["source"]]
    assert rows[0]["error"] == "ValueError: bad number 7"
    assert [r["id"] for r in (await get(jp_fetch, "jobs", status="FAILED"))["jobs"]] == [failed_id]
    assert (await get(jp_fetch, "jobs", source="elsewhere.ipynb"))["jobs"] == []
    assert len((await get(jp_fetch, "jobs", limit="1"))["jobs"]) == 1

    # A job's detail: the traceback of a failed one, the size of its logs.
    detail = await get(jp_fetch, "jobs", failed_id)
    assert detail["status"] == "FAILED" and "ValueError" in detail["traceback"]
    assert "bad number 7" in detail["traceback"] and "more words" in detail["traceback"]
    detail = await get(jp_fetch, "jobs", ok_id)
    assert detail["traceback"] is None and detail["logs_size"] == len("hello sidebar\nsecond line\n")
    logs = await get(jp_fetch, "jobs", ok_id, "logs")
    assert logs == {"text": "hello sidebar\nsecond line\n", "offset": detail["logs_size"],
                    "done": True}
    again = await get(jp_fetch, "jobs", ok_id, "logs", offset=str(logs["offset"] - 12))
    assert again == {"text": "second line\n", "offset": logs["offset"], "done": True}

    # Endpoints: the local emulator and its endpoint, with workers and queue.
    endpoints = await get(jp_fetch, "endpoints")
    local = endpoints["local"]
    assert local["running"] is True and local["url"].startswith("http://127.0.0.1:")
    assert local["error"] is None
    (ep,) = [e for e in local["endpoints"] if e["id"] == ok["endpoint"]]
    assert ep["gpu"] == "ADA_24" and set(ep["workers"]) == {"idle", "running", "initializing"}
    assert set(ep["queue"]) == {"inQueue", "inProgress"}

    # A spawned job nobody follows: its logs come live through the server, which follows it.
    job = await asyncio.to_thread(ticker.spawn, 60, 0.25)
    seen = {"text": "", "offset": 0}

    async def more_logs():
        part = await get(jp_fetch, "jobs", job.id, "logs", offset=str(seen["offset"]))
        assert part["offset"] >= seen["offset"]
        seen["text"] += part["text"]
        seen["offset"] = part["offset"]
        assert not part["done"]
        return "tick 2\n" in seen["text"]

    await eventually(more_logs, timeout=60, what="the spawned job's lines in its logs")
    assert seen["text"].startswith("tick 0\ntick 1\ntick 2\n")
    running = await get(jp_fetch, "jobs", job.id)
    assert running["status"] == "IN_PROGRESS" and running["worker"]

    # While it runs, it burns: its GPU's flex price per hour.
    cost = await get(jp_fetch, "cost")
    assert cost["burn_usd_per_h"] == pytest.approx(0.00031 * 3600)
    costs = [e.cost_usd for e in journal.recent(limit=10) if e.cost_usd]
    assert cost["today_usd"] == pytest.approx(sum(costs)) and cost["today_usd"] > 0
    assert cost["month_usd"] >= cost["today_usd"]

    # Cancel: CANCELLED, the journal says so, and the function stops printing.
    cancelled = await fails_not(jp_fetch, "jobs", job.id, "cancel")
    assert cancelled == {"id": job.id, "status": "CANCELLED"}

    async def ended():
        part = await get(jp_fetch, "jobs", job.id, "logs", offset=str(seen["offset"]))
        seen["text"] += part["text"]
        seen["offset"] = part["offset"]
        return part["done"]

    await eventually(ended, timeout=30, what="the cancelled job's logs to say done")
    assert (await get(jp_fetch, "jobs", job.id))["status"] == "CANCELLED"
    ticks = seen["text"].count("tick ")
    await asyncio.sleep(1.5)
    last = await get(jp_fetch, "jobs", job.id, "logs")
    assert last["text"].count("tick ") == ticks < 60 and last["done"] is True
    assert (await get(jp_fetch, "cost"))["burn_usd_per_h"] == 0


async def fails_not(jp_fetch, *parts):
    r = await jp_fetch("rpremote", "api", *parts, method="POST", body=b"")
    assert r.code == 200
    return json.loads(r.body)


# -- with a key: rehearsed against `rpremote serve`'s control plane ---------------------------

KEY = "rpk-SIDEBAR-CANARY-0123456789abcdef"
POD_APP = Path(__file__).resolve().parents[1] / "handlers" / "pod_http.py"
POD_IMAGE = "rpremote-tests/pod-http:1.0"


def endpoint_body(name: str, marker: bool) -> dict:
    return {"name": name, "type": "QUEUE", "image": "rpremote/worker:py3.11",
            "env": {"RPREMOTE_MANAGED": "0.1.0"} if marker else {"FOO": "bar"},
            "gpu": {"pools": ["ADA_24"]}, "workers": {"min": 0, "max": 1},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}, "timeout": 600000}


def pod_body(name: str, marker: bool) -> dict:
    return {"name": name, "image": POD_IMAGE, "gpu": {"id": "NVIDIA GeForce RTX 4090"},
            "ports": ["8000/http"],
            "env": {"RPREMOTE_MANAGED": "0.1.0"} if marker else {"FOO": "bar"}}


async def test_runpod_endpoints_and_pods_with_a_key(jp_fetch, fresh_home, emulator_factory,
                                                    monkeypatch):
    from rpremote.client.control import ControlPlane

    emu = emulator_factory("--api-key", KEY, "--image", f"{POD_IMAGE}={sys.executable} {POD_APP}")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RPREMOTE_RUNPOD_API", emu.url)
    monkeypatch.setenv("RPREMOTE_RUNPOD_QUEUE", emu.url)
    monkeypatch.setenv("RPREMOTE_POD_PROXY", emu.url + "/pod-proxy/{pod_id}-{port}")
    with ControlPlane(emu.url, KEY) as cp:
        ours = cp.endpoints.create(endpoint_body("rpremote-ada-24-0123abcd", True))["id"]
        foreign = cp.endpoints.create(endpoint_body("my-endpoint", False))["id"]
        pod = cp.request("POST", "/v2/pods", json=pod_body("rpremote-pod", True))["id"]
        other_pod = cp.request("POST", "/v2/pods", json=pod_body("my-pod", False))["id"]
    try:
        runpod = (await get(jp_fetch, "endpoints"))["runpod"]
        assert runpod["configured"] is True and runpod["error"] is None
        (row,) = runpod["endpoints"]  # only rpremote's; the other is counted, never shown
        assert row["id"] == ours and runpod["notOurs"] == 1
        assert row["gpu"] == "ADA_24" and row["usd_per_h"] == pytest.approx(0.00031 * 3600)
        assert row["queue"] == {"inQueue": 0, "inProgress": 0}

        # Delete: never an endpoint rpremote did not make; an unknown one is a 404.
        assert "not made by rpremote" in await fails(
            jp_fetch, 403, "endpoints", foreign, method="DELETE", params={"target": "runpod"})
        await fails(jp_fetch, 404, "endpoints", "nope", method="DELETE",
                    params={"target": "runpod"})
        r = await jp_fetch("rpremote", "api", "endpoints", ours, method="DELETE",
                           params={"target": "runpod"})
        assert json.loads(r.body) == {"deleted": ours}
        assert (await get(jp_fetch, "endpoints"))["runpod"]["endpoints"] == []

        # Pods: rpremote's only, with price and the proxy URL; stop, then terminate.
        async def running_pods():
            listed = await get(jp_fetch, "pods")
            assert listed["error"] is None
            return listed["pods"] if listed["pods"] and listed["pods"][0]["status"] == "RUNNING" else None

        (p,) = await eventually(running_pods, timeout=60, what="rpremote's Pod running")
        assert p["id"] == pod and p["name"] == "rpremote-pod"
        assert p["gpu"] == "NVIDIA GeForce RTX 4090" and p["count"] == 1
        assert p["usd_per_h"] > 0 and p["uptime_s"] >= 0 and p["cost_so_far_usd"] >= 0
        assert p["url"] == f"{emu.url}/pod-proxy/{pod}-8000"
        burn = (await get(jp_fetch, "cost"))["burn_usd_per_h"]
        assert burn == pytest.approx(p["usd_per_h"])
        await fails(jp_fetch, 404, "pods", other_pod, "stop", method="POST")
        stopped = await fails_not(jp_fetch, "pods", pod, "stop")
        assert stopped["id"] == pod and stopped["status"] in ("EXITED", "STOPPING", "RUNNING")
        with ControlPlane(emu.url, KEY) as cp:
            assert cp.request("GET", f"/v2/pods/{pod}")["status"] == "EXITED"
        assert (await get(jp_fetch, "cost"))["burn_usd_per_h"] == 0
        assert await fails_not(jp_fetch, "pods", pod, "terminate") == {
            "id": pod, "status": "TERMINATED"}
        assert (await get(jp_fetch, "pods"))["pods"] == []
    finally:
        with ControlPlane(emu.url, KEY) as cp:
            for pod_id in (pod, other_pod):
                try:
                    cp.request("DELETE", f"/v2/pods/{pod_id}")
                except Exception:
                    pass


async def test_a_notebooks_jobs_say_which_notebook_and_cell(jp_fetch, jp_root_dir, fresh_home):
    notebook = jp_root_dir / "work" / "train.ipynb"
    journal.record("nb-job-1", "rpremote-cpu-0", target="local", name="cell_3", kind="cell",
                   status="COMPLETED", submitted_at=time.time(), source=str(notebook), cell="3")
    journal.record("py-job-1", "rpremote-cpu-0", target="local", name="f", status="COMPLETED",
                   submitted_at=time.time() - 5, source="/elsewhere/script.py")
    listed = await get(jp_fetch, "jobs")
    by_id = {r["id"]: r for r in listed["jobs"]}
    assert by_id["nb-job-1"]["source"] == str(notebook) and by_id["nb-job-1"]["cell"] == "3"
    assert by_id["nb-job-1"]["source_path"] == "work/train.ipynb"
    assert by_id["py-job-1"]["source_path"] is None  # not under the server's root
    assert listed["sources"] == [str(notebook), "/elsewhere/script.py"]
    only = await get(jp_fetch, "jobs", source=str(notebook))
    assert [r["id"] for r in only["jobs"]] == ["nb-job-1"]
    assert (await get(jp_fetch, "jobs", "nb-job-1"))["source_path"] == "work/train.ipynb"


def test_every_handler_is_authenticated(recwarn, jp_serverapp):
    """jupyter_server warns of handlers without an auth decorator: none of ours."""
    import rpremote.jupyter.handlers as handlers

    ours = [w for w in recwarn if "JupyterServerAuthWarning" in type(w.message).__name__
            and "rpremote" in str(w.message)]
    assert not ours, [str(w.message) for w in ours]
    for name in dir(handlers):
        cls = getattr(handlers, name)
        if isinstance(cls, type) and issubclass(cls, handlers._Base) and cls is not handlers._Base:
            for verb in ("get", "post", "delete"):
                method = cls.__dict__.get(verb)
                if method is not None:
                    assert getattr(method, "__wrapped__", None) is not None, (name, verb)
