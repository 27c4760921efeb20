"""Pods in the emulator (runpod-rest-v2.md §4), over real HTTP, with real processes.

A Pod here is a process (tests/handlers/pod_http.py: a tiny HTTP app that binds the port
RPREMOTE_PORT_MAP names), reached through the emulator's RunPod proxy at
/pod-proxy/{id}-{port}/. Shapes are written from the doc (§4.3, §4.4, §4.6, §1.4), not the code.
Every process a test starts is gone at its end (checked by pid).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import gone, start_emulator, wait_for

APP = Path(__file__).parent / "handlers" / "pod_http.py"
IMAGE = "rpremote-tests/pod-http:1.0"
RTX = "NVIDIA GeForce RTX 4090"
H200 = "NVIDIA H200"  # the emulator below has 1 of these free
NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")
# §4.3: required fields (+ gpu for GPU Pods; [DTS] entrypoint/cmd)
POD_FIELDS = {"id", "name", "status", "actions", "image", "args", "entrypoint", "cmd", "disk",
              "mounts", "ports", "env", "registry", "cloud", "dataCenterId", "cudaVersion", "ssh",
              "template", "cost", "locked", "runtime", "createdAt", "startedAt",
              "globalNetworking", "gpu"}
ALLOWED = {"PROVISIONING": ["stop", "terminate"], "STARTING": ["stop", "terminate"],
           "RUNNING": ["stop", "restart", "terminate"], "EXITED": ["start", "terminate"],
           "ERROR": ["start", "terminate"]}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("pods") / "state",
                         "--image", f"{IMAGE}={sys.executable} {APP}",
                         "--pod-capacity", f"{H200}=1", "--pod-proxy-timeout", "2")
    try:
        yield emu
    finally:
        emu.stop()
        assert gone(emu.pid)


@pytest.fixture
def c(emu):
    with emu.client(timeout=30) as client:
        yield client


@pytest.fixture
def cleanup(emu):
    """Terminates the Pods a test names, and checks that their processes are gone."""
    pods: list[str] = []
    pids: list[int] = []
    yield pods, pids
    with emu.client() as client:
        for pod_id in pods:
            client.delete(f"/v2/pods/{pod_id}")
    for pid in pids:
        wait_for(lambda: gone(pid, reap=False), 15, what=f"process {pid} gone")


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def body(**over) -> dict:
    out = {"name": "pod-test", "image": IMAGE, "gpu": {"id": RTX}, "ports": ["8000/http"]}
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}  # gpu=None: a CPU Pod


def proxy(emu, pod_id: str, path: str, method: str = "GET", **kw) -> httpx.Response:
    """Through the proxy, with no emulator key: it is public, as RunPod's."""
    return httpx.request(method, f"{emu.url}/pod-proxy/{pod_id}-8000/{path}", timeout=30, **kw)


def up(emu, pod_id: str, timeout: float = 20) -> dict:
    """The app's /env once it answers through the proxy (502 until then)."""
    def answer():
        r = proxy(emu, pod_id, "env?k=RUNPOD_POD_ID")
        assert r.status_code in (200, 502), r.text
        return r.json() if r.status_code == 200 else None
    return wait_for(answer, timeout, 0.1, f"pod {pod_id} answering through the proxy")


def env_of(emu, pod_id: str, *keys: str) -> dict:
    r = proxy(emu, pod_id, "env", params=[("k", k) for k in keys])
    assert r.status_code == 200, r.text
    return r.json()


def status(c: httpx.Client, pod_id: str) -> dict:
    pod = c.get(f"/v2/pods/{pod_id}").json()
    assert pod["actions"] == ALLOWED[pod["status"]]
    return pod


def reaper_pid(app_pid: int) -> int:
    """The reaper a Pod's app runs under (its parent): gone too when the Pod stops."""
    with open(f"/proc/{app_pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# -- the lifecycle -----------------------------------------------------------------------------

def test_pod_runs_its_image_behind_the_proxy_and_stops_starts_restarts_terminates(emu, c, cleanup):
    pods, pids = cleanup
    r = c.post("/v2/pods", json=body(env={"START_DELAY": "1.5", "GREETING": "hi"},
                                     ports=["8000/http", "22/tcp"]))
    assert r.status_code == 201, r.text
    pod = r.json()
    pods.append(pod["id"])
    assert set(pod) == POD_FIELDS
    assert len(pod["id"]) == 14 and pod["id"].isalnum() and pod["id"].islower()
    assert pod["status"] == "PROVISIONING" and pod["actions"] == ALLOWED["PROVISIONING"]
    assert pod["gpu"]["id"] == RTX and pod["gpu"]["count"] == 1 and pod["cost"] > 0
    assert pod["runtime"] is None and pod["startedAt"] is None and pod["mounts"] == {}

    # the app is not up yet: the proxy's 502 (RunPod's: for a while after RUNNING)
    bad = proxy(emu, pod["id"], "env")
    assert bad.status_code == 502 and "text/html" in bad.headers["content-type"]
    running = status(c, pod["id"])
    assert running["status"] == "RUNNING" and running["startedAt"]
    first = up(emu, pod["id"])
    pids += [first["pid"], reaper_pid(first["pid"])]

    # what the process got (§4.9 + the emulator's RPREMOTE_PORT_MAP), seen through the proxy
    env = env_of(emu, pod["id"], "RUNPOD_POD_ID", "RUNPOD_API_KEY", "RUNPOD_GPU_COUNT",
                 "RUNPOD_PUBLIC_IP", "RUNPOD_POD_HOSTNAME", "RUNPOD_DC_ID", "RUNPOD_CPU_COUNT",
                 "RPREMOTE_PORT_MAP", "RUNPOD_TCP_PORT_22", "HOME", "GREETING",
                 "RPREMOTE_RUNPOD_API", "RUNPOD_API_BASE_URL", "RPREMOTE_VOLUME_MOUNT")["env"]
    assert env["RUNPOD_POD_ID"] == pod["id"] and env["GREETING"] == "hi"
    assert env["RUNPOD_API_KEY"] and env["RUNPOD_API_KEY"] != emu.key
    assert env["RUNPOD_GPU_COUNT"] == "1" and env["RUNPOD_PUBLIC_IP"] == "127.0.0.1"
    assert env["RUNPOD_POD_HOSTNAME"] and env["RUNPOD_DC_ID"] == running["dataCenterId"]
    assert env["RPREMOTE_RUNPOD_API"] == env["RUNPOD_API_BASE_URL"] == emu.url
    assert env["RPREMOTE_VOLUME_MOUNT"] is None  # no mounts: no volume
    mapped = json.loads(env["RPREMOTE_PORT_MAP"])
    ports = {p["private"]: p for p in status(c, pod["id"])["runtime"]["ports"]}
    assert mapped == {"8000": ports[8000]["public"], "22": ports[22]["public"]}
    assert env["RUNPOD_TCP_PORT_22"] == str(mapped["22"])
    assert ports[8000]["type"] == "http" and ports[22]["ip"] == "127.0.0.1"
    disk = Path(env["HOME"])
    assert disk.is_dir() and pod["id"] in str(disk)

    # any method, query, headers and body go through; repeated headers come back
    echo = proxy(emu, pod["id"], "echo/x?a=1&a=2", "PUT", content=b"payload",
                 headers={"X-Custom": "yes", "Authorization": "Bearer app-key"})
    got = echo.json()
    assert got["method"] == "PUT" and got["path"] == "/echo/x?a=1&a=2" and got["body"] == "payload"
    assert got["headers"]["x-custom"] == "yes" and got["headers"]["authorization"] == "Bearer app-key"
    assert got["headers"]["x-forwarded-prefix"] == f"/pod-proxy/{pod['id']}-8000"
    assert echo.headers.get_list("set-cookie") == ["a=1", "b=2"]
    # streamed, not buffered: the first chunk arrives before the app wrote the last
    with httpx.stream("GET", f"{emu.url}/pod-proxy/{pod['id']}-8000/chunks?n=3&gap=0.6",
                      timeout=30) as s:
        lines = s.iter_lines()
        first_line = next(lines)
        got_first = time.time()
        rest = list(lines)
    assert first_line.startswith("chunk 0") and len(rest) == 2
    assert float(rest[-1].split()[2]) > got_first - 0.05
    # a port the Pod does not expose as /http, and a Pod that does not exist: 404
    assert httpx.get(f"{emu.url}/pod-proxy/{pod['id']}-22/").status_code == 404
    assert httpx.get(f"{emu.url}/pod-proxy/nosuchpod00000-8000/").status_code == 404

    assert proxy(emu, pod["id"], "write?name=kept.txt").status_code == 200
    # §4.4: restart needs RUNNING; start is not allowed while it runs (409); no v1 reset (422)
    conflict = problem(c.post(f"/v2/pods/{pod['id']}/action", json={"action": "start"}), 409)
    assert "RUNNING" in conflict["detail"]
    errors = problem(c.post(f"/v2/pods/{pod['id']}/action", json={"action": "reset"}), 422)
    assert "action" in " ".join(errors["errors"])
    problem(c.post(f"/v2/pods/{pod['id']}/stop"), 404)  # v1 paths are 404 (§4.4)

    # stop: EXITED, no cost, the process gone, the proxy 502
    stopped = c.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "EXITED" and stopped.json()["actions"] == ALLOWED["EXITED"]
    assert stopped.json()["cost"] == 0.0 and stopped.json()["runtime"] is None
    for pid in pids:
        wait_for(lambda: gone(pid, reap=False), 10, what=f"process {pid} gone after stop")
    assert proxy(emu, pod["id"], "env").status_code == 502
    problem(c.post(f"/v2/pods/{pod['id']}/action", json={"action": "restart"}), 409)
    problem(c.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"}), 409)

    # start: the same container disk, a new process on new ports
    started = c.post(f"/v2/pods/{pod['id']}/action", json={"action": "start"}).json()
    assert started["status"] == "RUNNING"
    second = up(emu, pod["id"])
    pids += [second["pid"], reaper_pid(second["pid"])]
    assert second["pid"] != first["pid"]
    assert "kept.txt" in proxy(emu, pod["id"], "files").json()["files"]
    assert json.loads(env_of(emu, pod["id"], "RPREMOTE_PORT_MAP")["env"]["RPREMOTE_PORT_MAP"]) != mapped

    # restart: in place, same disk
    again = c.post(f"/v2/pods/{pod['id']}/action", json={"action": "restart"})
    assert again.status_code == 200 and again.json()["status"] == "RUNNING"
    third = up(emu, pod["id"])
    pids += [third["pid"], reaper_pid(third["pid"])]
    assert third["pid"] != second["pid"] and gone(second["pid"], reap=False)
    assert "kept.txt" in proxy(emu, pod["id"], "files").json()["files"]

    # the log: the app's lines and the emulator's about the Pod
    logs = _log_lines(emu, c, pod["id"])
    assert any(l["source"] == "container" and "pod app listening" in l["line"] for l in logs)
    assert any(l["source"] == "system" and "container stopped" in l["line"] for l in logs)
    # in the order it happened: each run's start, then what that run printed
    story = [("started" if "container started" in l["line"] else
              "stopped" if "container stopped" in l["line"] else
              "listening" if "pod app listening" in l["line"] else None) for l in logs]
    story = [s for s in story if s]
    assert story == ["started", "listening", "stopped", "started", "listening", "stopped",
                     "started", "listening"], logs

    # terminate (the action): 204, the disk gone, 404 after, gone from the list
    done = c.post(f"/v2/pods/{pod['id']}/action", json={"action": "terminate"})
    assert done.status_code == 204 and done.content == b""
    assert not disk.exists()
    problem(c.get(f"/v2/pods/{pod['id']}"), 404)
    assert pod["id"] not in [p["id"] for p in c.get("/v2/pods").json()["pods"]]
    assert httpx.get(f"{emu.url}/pod-proxy/{pod['id']}-8000/env").status_code == 404


def _log_lines(emu, c: httpx.Client, pod_id: str) -> list[dict]:
    """The history of GET /v2/pods/{id}/logs (§4.8), read until the stream goes quiet."""
    lines = []
    try:
        with c.stream("GET", f"/v2/pods/{pod_id}/logs", params={"tail": 500},
                      timeout=httpx.Timeout(30, read=1.5)) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            for line in s.iter_lines():
                if line.startswith("data: "):
                    lines.append(json.loads(line[6:]))
    except httpx.ReadTimeout:
        pass
    return lines


def test_a_process_that_exits_is_restarted_and_the_pod_keeps_running(emu, c, cleanup):
    pods, pids = cleanup
    pod = c.post("/v2/pods", json=body()).json()
    pods.append(pod["id"])
    first = up(emu, pod["id"])
    pids += [first["pid"], reaper_pid(first["pid"])]
    assert proxy(emu, pod["id"], "exit").status_code == 200
    wait_for(lambda: gone(first["pid"], reap=False), 10, what="the app exited")
    # RunPod restarts the container (§4.9): STARTING meanwhile, never EXITED
    assert status(c, pod["id"])["status"] in ("STARTING", "RUNNING")
    second = up(emu, pod["id"])
    pids += [second["pid"], reaper_pid(second["pid"])]
    assert second["pid"] != first["pid"] and status(c, pod["id"])["status"] == "RUNNING"
    logs = _log_lines(emu, c, pod["id"])
    assert any("exited (exit code 3)" in l["line"] and l["source"] == "system" for l in logs)


def test_the_proxy_answers_524_after_its_timeout(emu, c, cleanup):
    pods, pids = cleanup
    pod = c.post("/v2/pods", json=body()).json()
    pods.append(pod["id"])
    app = up(emu, pod["id"])
    pids += [app["pid"], reaper_pid(app["pid"])]
    t0 = time.monotonic()
    r = proxy(emu, pod["id"], "slow?s=5")
    took = time.monotonic() - t0
    assert r.status_code == 524 and "text/html" in r.headers["content-type"]
    assert 1.9 < took < 4.5
    assert proxy(emu, pod["id"], "slow?s=0.5").json() == {"slept": 0.5}  # within it: fine
    # a response that stalls that long after it began is cut off, never shown complete
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", f"{emu.url}/pod-proxy/{pod['id']}-8000/chunks?n=2&gap=4",
                          timeout=30) as s:
            list(s.iter_lines())


# -- capacity (§4.6) -----------------------------------------------------------------------------

def test_no_capacity_is_runpods_400_and_capacity_frees_with_the_pod(emu, c, cleanup):
    pods, pids = cleanup
    refused = problem(c.post("/v2/pods", json=body(gpu={"id": H200, "count": 2})), 400)
    assert refused == {"title": "Bad Request", "status": 400, "detail": NO_CAPACITY}
    one = c.post("/v2/pods", json=body(gpu={"id": H200})).json()
    pods.append(one["id"])
    assert problem(c.post("/v2/pods", json=body(gpu={"id": H200})), 400)["detail"] == NO_CAPACITY
    rtx = c.post("/v2/pods", json=body(gpu={"id": RTX}))  # other types: no limit
    assert rtx.status_code == 201
    pods.append(rtx.json()["id"])
    # a stopped Pod releases its GPU; starting it again needs the GPU back
    c.post(f"/v2/pods/{one['id']}/action", json={"action": "stop"})
    two = c.post("/v2/pods", json=body(gpu={"id": H200}))
    assert two.status_code == 201
    pods.append(two.json()["id"])
    assert problem(c.post(f"/v2/pods/{one['id']}/action", json={"action": "start"}),
                   400)["detail"] == NO_CAPACITY
    for pod_id in pods:
        app = up(emu, pod_id) if status(c, pod_id)["status"] != "EXITED" else None
        if app:
            pids += [app["pid"], reaper_pid(app["pid"])]
    # the catalog shows every GPU type for Pods (its stock is a hint; the create decides)
    gpus = c.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD"}).json()
    assert {g["id"]: g["availability"] for g in gpus["gpus"]}[H200] == "HIGH"


# -- the pod-scoped key (§4.9) ---------------------------------------------------------------------

def test_a_pods_own_key_acts_on_its_own_pod_only(emu, c, cleanup):
    pods, pids = cleanup
    a = c.post("/v2/pods", json=body(name="a")).json()
    b = c.post("/v2/pods", json=body(name="b")).json()
    pods += [a["id"], b["id"]]
    app_a, app_b = up(emu, a["id"]), up(emu, b["id"])
    pids += [app_a["pid"], reaper_pid(app_a["pid"]), app_b["pid"], reaper_pid(app_b["pid"])]
    key = env_of(emu, a["id"], "RUNPOD_API_KEY")["env"]["RUNPOD_API_KEY"]
    own = httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    with own:
        assert own.get(f"/v2/pods/{a['id']}").json()["status"] == "RUNNING"
        for r in (own.get(f"/v2/pods/{b['id']}"), own.get("/v2/pods"),
                  own.post("/v2/pods", json=body()), own.patch(f"/v2/pods/{a['id']}", json={"name": "x"}),
                  own.post(f"/v2/pods/{b['id']}/action", json={"action": "stop"}),
                  own.delete(f"/v2/pods/{b['id']}"), own.get("/v2/serverless"),
                  own.get("/v2/network-volumes")):
            assert problem(r, 403)["detail"].startswith("access denied")
        assert status(c, b["id"])["status"] == "RUNNING"
    # the Pod stops itself from inside, with its own key (what a server in a Pod does)
    assert proxy(emu, a["id"], "api", params={"method": "GET", "path": "self"}).json() == {"status": 200}
    assert proxy(emu, a["id"], "api", params={"method": "GET", "path": f"/v2/pods/{b['id']}"}
                 ).json() == {"status": 403}
    assert proxy(emu, a["id"], "selfstop").status_code == 200
    wait_for(lambda: status(c, a["id"])["status"] == "EXITED", 15, what="pod a stopped itself")
    wait_for(lambda: gone(app_a["pid"], reap=False), 10, what="pod a's process gone")
    # terminate with its own key: 204; then the key is no key at all (401)
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {key}"}) as own:
        assert own.delete(f"/v2/pods/{a['id']}").status_code == 204
        problem(own.get(f"/v2/pods/{a['id']}"), 401)


# -- create rules (§4.2), PATCH (§4.5), list (§4.1), volumes, images -------------------------------

def test_create_body_rules_and_list(emu, c, cleanup, tmp_path):
    pods, pids = cleanup
    # closed schema: v1 names are 422 naming them
    errors = " | ".join(problem(c.post("/v2/pods", json=body(gpuTypeIds=[RTX],
                                                              containerDiskInGb=10)), 422)["errors"])
    assert "gpuTypeIds" in errors and "containerDiskInGb" in errors
    assert "name" in " ".join(problem(c.post("/v2/pods", json={"image": IMAGE, "gpu": {"id": RTX}}),
                                      422)["errors"])
    problem(c.post("/v2/pods", json=body(cpu={"id": "cpu3c", "vcpuCount": 2})), 400)  # gpu+cpu
    problem(c.post("/v2/pods", json={"name": "x", "image": IMAGE}), 400)  # neither
    problem(c.post("/v2/pods", json=body(gpu={"id": "NVIDIA GeForce RTX 9999"})), 400)
    problem(c.post("/v2/pods", json=body(cloud="ALL")), 422)
    problem(c.post("/v2/pods", json=body(ports=["8000/udp"])), 422)
    problem(c.post("/v2/pods", json=body(image="nobody/nothing:1")), 422)  # cannot be pulled
    problem(c.post("/v2/pods", json=body(mounts={"network": [{"volumeId": "nosuchvol0",
                                                              "path": "/workspace"}]})), 404)
    vol = c.post("/v2/network-volumes", json={"name": "v", "size": 10,
                                              "dataCenter": "EU-RO-1"}).json()
    both = {"persistent": {"size": 20, "path": "/workspace"},
            "network": [{"volumeId": vol["id"], "path": "/runpod-volume"}]}
    problem(c.post("/v2/pods", json=body(mounts=both)), 400)
    outside = body(mounts={"network": both["network"]}, dataCenterIds=["US-KS-2"])
    assert "outside" in problem(c.post("/v2/pods", json=outside), 400)["detail"]

    # globalNetworking: an NVIDIA GPU in a data center that has it
    problem(c.post("/v2/pods", json=body(globalNetworking=True, dataCenterIds=["AP-JP-1"])), 400)
    problem(c.post("/v2/pods", json=body(gpu=None, cpu={"id": "cpu3c", "vcpuCount": 2},
                                         globalNetworking=True)), 400)
    problem(c.post("/v2/pods", json=body(gpu=None, cpu={"id": "cpu3c", "vcpuCount": 3})), 422)
    # a template: a pod template's container fields, the body wins, env merged (§4.2)
    tpl = c.post("/v2/templates", json={"name": "pod-tpl", "image": IMAGE, "ports": ["8000/http"],
                                        "env": {"FROM": "template", "BOTH": "template"}}).json()
    stpl = c.post("/v2/templates", json={"name": "sls-tpl", "image": IMAGE,
                                         "serverless": True}).json()
    problem(c.post("/v2/pods", json={"name": "t", "templateId": stpl["id"], "gpu": {"id": RTX}}), 422)
    problem(c.post("/v2/pods", json={"name": "t", "templateId": "nosuchtpl0", "gpu": {"id": RTX}}),
            404)
    # a CPU Pod: no GPU, no CUDA, priced per vCPU
    cpu_pod = c.post("/v2/pods", json={"name": "t", "templateId": tpl["id"], "env": {"BOTH": "body"},
                                       "cpu": {"id": "cpu3c", "vcpuCount": 4}}).json()
    pods.append(cpu_pod["id"])
    assert cpu_pod["image"] == IMAGE and cpu_pod["ports"] == ["8000/http"]
    assert cpu_pod["env"] == {"FROM": "template", "BOTH": "body"}
    assert "gpu" not in cpu_pod and cpu_pod["cpu"] == {"id": "cpu3c", "vcpuCount": 4, "memory": 8}
    assert cpu_pod["cudaVersion"] is None and cpu_pod["cost"] > 0
    app = up(emu, cpu_pod["id"])
    pids += [app["pid"], reaper_pid(app["pid"])]
    assert env_of(emu, cpu_pod["id"], "RUNPOD_GPU_COUNT", "RUNPOD_CPU_COUNT")["env"] == {
        "RUNPOD_GPU_COUNT": "0", "RUNPOD_CPU_COUNT": "4"}

    # a network volume: its directory as RPREMOTE_VOLUME_MOUNT, RUNPOD_VOLUME_ID; its DC
    pod = c.post("/v2/pods", json=body(mounts={"network": both["network"]})).json()
    pods.append(pod["id"])
    assert pod["dataCenterId"] == "EU-RO-1" and pod["mounts"]["network"][0]["volumeId"] == vol["id"]
    app = up(emu, pod["id"])
    pids += [app["pid"], reaper_pid(app["pid"])]
    env = env_of(emu, pod["id"], "RUNPOD_VOLUME_ID", "RPREMOTE_VOLUME_MOUNT",
                 "RPREMOTE_VOLUME_PATH")["env"]
    assert env["RUNPOD_VOLUME_ID"] == vol["id"] and env["RPREMOTE_VOLUME_PATH"] == "/runpod-volume"
    assert Path(env["RPREMOTE_VOLUME_MOUNT"]) == emu.state / "volumes" / vol["id"]

    # PATCH: mount rules, a rename without a restart, an env change restarts it
    path = f"/v2/pods/{pod['id']}"
    problem(c.patch(path, json={"mounts": {"network": []}}), 400)
    problem(c.patch(path, json={"mounts": {"persistent": {"size": 20, "path": "/w"}}}), 400)
    problem(c.patch(path, json={"gpu": {"id": RTX}}), 422)
    assert c.patch(path, json={"name": "renamed"}).json()["name"] == "renamed"
    assert env_of(emu, pod["id"])["pid"] == app["pid"]
    patched = c.patch(path, json={"env": {"NEW": "1"}}).json()
    assert patched["env"] == {"NEW": "1"}
    new = up(emu, pod["id"])
    pids += [new["pid"], reaper_pid(new["pid"])]
    assert new["pid"] != app["pid"] and env_of(emu, pod["id"], "NEW")["env"] == {"NEW": "1"}
    locked = c.patch(path, json={"locked": True}).json()
    assert locked["locked"] is True
    problem(c.post(f"{path}/action", json={"action": "stop"}), 409)  # locked
    c.patch(path, json={"locked": False})

    # list: wrapped, paginated, newest first; no server-side filters (name= is ignored)
    other = c.post("/v2/pods", json=body(name="other")).json()
    pods.append(other["id"])
    listed = c.get("/v2/pods", params={"name": "nothing-like-it", "limit": 2}).json()
    assert [p["id"] for p in listed["pods"]] == [other["id"], pod["id"]]
    assert listed["pagination"]["hasNextPage"] is True
    rest = c.get("/v2/pods", params={"limit": 2, "cursor": listed["pagination"]["nextCursor"]})
    assert [p["id"] for p in rest.json()["pods"]] == [cpu_pod["id"]]
    problem(c.get("/v2/pods", params={"cursor": "garbage"}), 422)
    app = up(emu, other["id"])
    pids += [app["pid"], reaper_pid(app["pid"])]

    # an official image it cannot run here (no start command: its own command starts
    # RunPod's Pod services): ERROR, with the reason in the log; start keeps it ERROR
    from rpremote import platform as rp

    official = rp.OFFICIAL_IMAGE_OF_PYTHON[f"{sys.version_info.major}.{sys.version_info.minor}"]
    err = c.post("/v2/pods", json=body(image=official.tag)).json()
    pods.append(err["id"])
    assert status(c, err["id"])["status"] == "ERROR"
    assert c.post(f"/v2/pods/{err['id']}/action", json={"action": "start"}).json()["status"] == "ERROR"
    assert any("start command" in l["line"] for l in _log_lines(emu, c, err["id"]))
    # a mounted volume cannot be deleted; terminate detaches it: its files stay
    assert "mounted by Pod" in problem(c.delete(f"/v2/network-volumes/{vol['id']}"),
                                       400)["detail"]
    assert c.delete(path).status_code == 204
    assert (emu.state / "volumes" / vol["id"]).is_dir()
    assert c.delete(f"/v2/network-volumes/{vol['id']}").status_code == 204


def test_an_official_image_runs_the_pods_start_command_in_a_clean_environment(emu, c, cleanup):
    from rpremote import platform as rp

    pods, pids = cleanup
    official = rp.OFFICIAL_IMAGE_OF_PYTHON[f"{sys.version_info.major}.{sys.version_info.minor}"]
    pod = c.post("/v2/pods", json=body(image=official.tag, args=f"python {APP}",
                                       mounts={"persistent": {"size": 20, "path": "/workspace"}}))
    assert pod.status_code == 201, pod.text
    pod = pod.json()
    pods.append(pod["id"])
    app = up(emu, pod["id"], timeout=60)  # the clean environment is made once (a venv)
    pids += [app["pid"], reaper_pid(app["pid"])]
    env = env_of(emu, pod["id"], "VIRTUAL_ENV", "CUDA_VERSION", "PYTORCH_VERSION", "HOME",
                 "RPREMOTE_VOLUME_MOUNT", "RPREMOTE_VOLUME_PATH", "RPREMOTE_API_KEY")
    assert env["env"]["VIRTUAL_ENV"].startswith(str(emu.state / "images"))
    assert env["env"]["CUDA_VERSION"] == official.cuda
    assert env["env"]["PYTORCH_VERSION"] == official.torch
    assert env["cwd"] == env["env"]["HOME"]  # a container starts in a directory of its own
    assert env["env"]["RPREMOTE_VOLUME_PATH"] == "/workspace"
    volume = Path(env["env"]["RPREMOTE_VOLUME_MOUNT"])
    assert volume.is_dir() and pod["id"] in str(volume)
    assert env["env"]["RPREMOTE_API_KEY"] is None  # nothing of the emulator's own settings
    c.delete(f"/v2/pods/{pod['id']}")
    assert not volume.exists()  # a persistent mount goes with its Pod

    # a mapped image (here rpremote's worker image, whose own command is the executor): the
    # Pod's start command replaces the image's command, as Docker's CMD; `python` is the
    # emulator's interpreter
    worker = c.post("/v2/pods", json=body(image=rp.worker_image(official.python),
                                          args=f"python {APP}")).json()
    pods.append(worker["id"])
    app = up(emu, worker["id"])
    pids += [app["pid"], reaper_pid(app["pid"])]
    with open(f"/proc/{app['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"python", str(APP).encode()]
    assert os.readlink(f"/proc/{app['pid']}/exe") == os.path.realpath(sys.executable)


def test_pods_come_back_after_the_emulator_restarts_and_end_with_it(tmp_path):
    state = tmp_path / "state"
    args = ("--image", f"{IMAGE}={sys.executable} {APP}")
    emu = start_emulator(state, *args)
    pids = []
    try:
        with emu.client() as c:
            pod = c.post("/v2/pods", json=body()).json()
            app = up(emu, pod["id"])
            pids += [app["pid"], reaper_pid(app["pid"])]
            proxy(emu, pod["id"], "write?name=before.txt")
    finally:
        emu.stop()
    for pid in pids:  # a stopped emulator leaves no Pod process behind
        wait_for(lambda: gone(pid, reap=False), 10, what=f"process {pid} gone")
    emu = start_emulator(state, *args)
    try:
        with emu.client() as c:
            assert c.get(f"/v2/pods/{pod['id']}").json()["status"] in ("RUNNING", "PROVISIONING")
            app = up(emu, pod["id"])
            pids += [app["pid"], reaper_pid(app["pid"])]
            assert "before.txt" in proxy(emu, pod["id"], "files").json()["files"]
            c.delete(f"/v2/pods/{pod['id']}")
    finally:
        emu.stop()
    for pid in pids:
        wait_for(lambda: gone(pid, reap=False), 10, what=f"process {pid} gone")
    assert not os.path.exists(state / "pods" / pod["id"])


def test_serve_refuses_a_bad_pod_capacity(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state",
                          str(tmp_path / "s"), "--pod-capacity", "NVIDIA H200"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "GPU TYPE ID=N" in out.stderr
