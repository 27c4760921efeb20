"""The REST v2 control plane of `rpremote serve` (docs/runpod-rest-v2.md), over real HTTP.

Field sets below are written from the doc (§2.2-§2.6, §3.2, §5.1, §6.2, §1.4), not from the
code: a shape the emulator returns must be the one a client of RunPod reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from conftest import gone, handler_cmd, wait_for, wait_status

ENV_HANDLER = handler_cmd("env_handler.py")
IMAGE = "rpremote-tests/env-worker:1.0"

# §2.2 example response / §2.3 (required + "present but schema-optional", [DTS] entrypoint/cmd)
ENDPOINT_FIELDS = {"id", "name", "type", "requestUrls", "image", "args", "entrypoint", "cmd",
                   "disk", "ports", "env", "registry", "gpu", "workers", "scaling",
                   "dataCenterIds", "networkVolumes", "timeout", "flashboot", "createdAt"}
QUEUE_URLS = {"run", "runSync", "status", "stream", "cancel", "retry", "purgeQueue", "health"}
GPU_FIELDS = {"pools", "count", "allowedCudaVersions", "minCudaVersion"}
# §3.2: required fields of Template ([DTS]: plus entrypoint/cmd)
TEMPLATE_FIELDS = {"id", "name", "image", "args", "entrypoint", "cmd", "disk", "mounts", "ports",
                   "env", "registry", "serverless", "public", "category", "startSsh",
                   "startJupyter", "allowedCudaVersions"}
VOLUME_FIELDS = {"id", "name", "size", "dataCenter", "type"}  # §5.1
# §2.6
WORKERS_FIELDS = {"endpointVersion", "summary", "workers"}
SUMMARY_FIELDS = {"running", "idle", "initializing", "throttled", "unhealthy", "total"}
WORKER_FIELDS = {"id", "status", "isStale", "version", "gpuCount", "image", "uptimeSeconds",
                 "gpuTypeId", "dataCenterId", "startedAt"}
# §6.2
GPU_TYPE_FIELDS = {"id", "name", "pool", "manufacturer", "memory", "secure", "community", "price",
                   "maxCount"}
DATA_CENTER_FIELDS = {"id", "name", "region", "globalNetwork", "networkVolumeTypes", "compliance"}
PAGINATION_FIELDS = {"nextCursor", "hasNextPage"}  # §1.6
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def endpoint_body(**over) -> dict:
    body = {"name": "cp-test", "type": "QUEUE", "image": IMAGE, "gpu": {"pools": ["ADA_24"]},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
            "workers": {"min": 0, "max": 1, "idleTimeout": 5}, "timeout": 60000}
    body.update(over)
    return body


def problem(r: httpx.Response, status: int) -> dict:
    """The body of an RFC 9457 problem (§1.4), checked."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"title", "status", "detail"} <= set(body) <= {"title", "status", "detail", "errors"}
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def errors_of(r: httpx.Response) -> str:
    return " | ".join(problem(r, 422)["errors"])


@pytest.fixture
def plane(emulator_factory):
    """A server of our own per test (rate limits and objects start fresh)."""
    emu = emulator_factory("--image", f"{IMAGE}={ENV_HANDLER}")
    with emu.client() as c:
        yield c


def admin_workers(c: httpx.Client, ep: str) -> list[dict]:
    return c.get(f"/rpremote/v1/endpoints/{ep}").json()["workers"]


# -- conventions: auth, errors, headers -----------------------------------------------------------

def test_a_request_without_the_key_is_401_problem_json(plane):
    url = str(plane.base_url)
    key = plane.headers["authorization"][7:]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
        for method, path in (("GET", "/v2/serverless"), ("POST", "/v2/templates"),
                             ("GET", "/v2/catalog/gpus"), ("DELETE", "/v2/network-volumes/x")):
            r = httpx.request(method, url + path, headers=headers, json={})
            body = problem(r, 401)
            assert body["title"] == "Unauthorized"
            assert "ratelimit" not in r.headers and r.headers["x-request-id"]
    problem(httpx.get(f"{url}/v2/serverless?api_key={key}"), 401)  # no query-string key (§1.2)


def minute_left(r: httpx.Response) -> int:
    return int(re.search(r'"minute";r=(\d+)', r.headers["ratelimit"]).group(1))


def test_authenticated_answers_carry_rate_limit_headers(plane):
    r = plane.get("/v2/serverless")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["ratelimit-policy"].startswith('"minute";q=')
    first, second = minute_left(r), minute_left(plane.get("/v2/templates"))
    assert second == first - 1


def test_rate_limit_is_429_with_retry_after(plane):
    policy = plane.get("/v2/serverless").headers["ratelimit-policy"]
    quota = int(re.search(r'"minute";q=(\d+)', policy).group(1))
    for _ in range(quota - 1):
        assert plane.get("/v2/catalog/cpus").status_code == 200
    r = plane.get("/v2/catalog/cpus")
    body = problem(r, 429)
    assert "minute" in body["detail"] and int(r.headers["retry-after"]) >= 1
    # the job API has limits of its own (§1.7): it still answers
    assert plane.get("/rpremote/v1/info").status_code == 200


def test_a_big_body_is_413_before_authentication(plane):
    r = httpx.post(f"{plane.base_url}/v2/templates", content=b"x" * 102_401,
                   headers={"Content-Type": "application/json"})
    problem(r, 413)


def test_wrong_method_is_405_with_allow_and_unknown_paths_are_404_problems(plane):
    r = plane.put("/v2/serverless", json={})
    assert problem(r, 405) and r.headers["allow"] == "GET, POST"
    for path in ("/v2/networkvolumes", "/v2/pods/abc/start", "/v2/serverless/abc/releases",
                 "/v2/catalog/x"):
        problem(plane.get(path), 404)


def test_a_body_that_is_not_json_is_400(plane):
    problem(plane.post("/v2/network-volumes", content=b"{nope",
                       headers={"Content-Type": "application/json"}), 400)


# -- serverless endpoints -------------------------------------------------------------------------

def test_endpoint_create_get_list_patch_delete_shapes(plane):
    r = plane.post("/v2/serverless", json=endpoint_body(env={"A": "1"}, dataCenterIds=["EU-RO-1"]))
    assert r.status_code == 201, r.text
    ep = r.json()
    assert set(ep) == ENDPOINT_FIELDS
    assert re.fullmatch(r"[a-z0-9]{14}", ep["id"]) and RFC3339.match(ep["createdAt"])
    assert set(ep["gpu"]) == GPU_FIELDS and ep["gpu"]["count"] == 1
    assert ep["gpu"]["allowedCudaVersions"] == [] and ep["gpu"]["minCudaVersion"] is None
    assert set(ep["requestUrls"]) == QUEUE_URLS
    assert ep["requestUrls"]["runSync"] == f"{plane.base_url}/v2/{ep['id']}/runsync"
    assert ep["requestUrls"]["status"].endswith(f"/v2/{ep['id']}/status/{{job_id}}")
    assert ep["workers"] == {"min": 0, "max": 1, "idleTimeout": 5}
    assert ep["timeout"] == 60000 and ep["flashboot"] == "OFF" and ep["registry"] is None
    assert ep["args"] == "" and ep["ports"] == [] and ep["networkVolumes"] == []

    assert plane.get(f"/v2/serverless/{ep['id']}").json() == ep
    listing = plane.get("/v2/serverless").json()
    assert set(listing) == {"endpoints", "pagination"} and listing["endpoints"] == [ep]
    assert listing["pagination"] == {"nextCursor": None, "hasNextPage": False}

    r = plane.patch(f"/v2/serverless/{ep['id']}",
                    json={"name": "renamed", "workers": {"max": 2}, "cmd": ["python", "h.py"],
                          "scaling": {"type": "REQUEST_COUNT", "requestCount": 2}})
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["name"] == "renamed" and patched["env"] == {"A": "1"}
    # workers merge; REQUEST_COUNT on a queue endpoint drops idleTimeout (§2.3)
    assert patched["workers"] == {"min": 0, "max": 2}
    assert patched["args"] == "python h.py" and patched["cmd"] == ["python", "h.py"]
    assert patched["entrypoint"] == [] and patched["createdAt"] == ep["createdAt"]

    r = plane.delete(f"/v2/serverless/{ep['id']}")
    assert r.status_code == 204 and r.content == b""
    problem(plane.get(f"/v2/serverless/{ep['id']}"), 404)
    assert plane.get("/v2/serverless").json()["endpoints"] == []


def test_timeout_omitted_is_stored_as_zero_and_defaults_fill_in(plane):
    body = endpoint_body()
    del body["timeout"], body["workers"]
    ep = plane.post("/v2/serverless", json=body).json()
    assert ep["timeout"] == 0  # OBSERVED live (§2.2, §9.1.4), reproduced
    assert ep["workers"] == {"min": 0, "max": 3, "idleTimeout": 10}  # §2.2 defaults
    spec = plane.get(f"/rpremote/v1/endpoints/{ep['id']}").json()
    assert spec["executionTimeoutMs"] == 600_000 and spec["gpu"] == "ADA_24"


@pytest.mark.parametrize("body, expect", [
    (endpoint_body(workersMin=1), "additional properties 'workersMin' not allowed"),  # v1 name
    ({k: v for k, v in endpoint_body().items() if k != "name"}, "$: missing property 'name'"),
    ({k: v for k, v in endpoint_body().items() if k != "scaling"}, "missing property 'scaling'"),
    ({k: v for k, v in endpoint_body().items() if k != "image"}, "missing property 'image'"),
    (endpoint_body(type="BATCH"), "$.type: value must be one of 'QUEUE', 'LOAD_BALANCER'"),
    (endpoint_body(flashboot=True), "$.flashboot: got boolean, want string"),
    (endpoint_body(scaling={"type": "QUEUE_DELAY", "queueDelay": 0.1}),
     "$.scaling.queueDelay: minimum"),
    (endpoint_body(scaling={"type": "FAST"}), "$.scaling.type: value must be one of"),
    (endpoint_body(workers={"idleTimeout": 0}), "$.workers.idleTimeout: minimum"),
    (endpoint_body(workers={"max": "3"}), "$.workers.max: got string, want integer"),
    (endpoint_body(gpu={"pools": []}), "$.gpu.pools: minItems"),
    (endpoint_body(gpu={"pools": ["ADA_24"], "minCudaVersion": "12"}), "does not match pattern"),
    (endpoint_body(gpu={"pools": ["ADA_24"], "gpuCount": 1}),
     "$.gpu: additional properties 'gpuCount'"),
    # a GPU type id where a pool id goes: 422 naming the field and the valid pool ids
    (endpoint_body(gpu={"pools": ["NVIDIA GeForce RTX 4090"]}),
     "$.gpu.pools: unknown GPU pool(s) NVIDIA GeForce RTX 4090; gpu.pools takes pool ids"),
    (endpoint_body(scaling={"type": "REQUEST_COUNT", "requestCount": 1}),
     "idleTimeout does not apply to queue-based endpoints scaling on requestCount"),
    (endpoint_body(type="LOAD_BALANCER"), "$.scaling.type: value must be one of 'REQUEST_COUNT'"),
    (endpoint_body(cpu=[{"id": "cpu3c", "vcpuCount": 3}], gpu=None), None),
])
def test_endpoint_bodies_are_checked_as_closed_schemas(plane, body, expect):
    body = {k: v for k, v in body.items() if v is not None}
    r = plane.post("/v2/serverless", json=body)
    text = errors_of(r)
    assert problem(r, 422)["detail"] == "Request validation failed."
    if expect:
        assert expect in text
    assert plane.get("/v2/serverless").json()["endpoints"] == []


@pytest.mark.parametrize("over, expect", [
    ({"cpu": [{"id": "cpu3c", "vcpuCount": 2}]}, "exactly one of gpu"),
    ({"gpu": None}, "exactly one of gpu"),
    ({"gpu": {"pools": ["ADA_24"], "excludedTypes": ["NVIDIA L4"]}}, "not in the pools"),
    ({"gpu": {"pools": ["ADA_24"], "excludedTypes": ["NVIDIA GeForce RTX 4090"]}}, "keep one"),
    ({"gpu": {"pools": ["ADA_24"], "allowedCudaVersions": ["12.8"], "minCudaVersion": "12.4"}},
     "not both"),
    ({"workers": {"min": 3, "max": 1}}, "workers.min"),
    ({"dataCenterIds": ["XX-1"]}, "unknown data center"),
])
def test_endpoint_rule_breaks_are_400(plane, over, expect):
    body = {k: v for k, v in endpoint_body(**over).items() if v is not None}
    assert expect in problem(plane.post("/v2/serverless", json=body), 400)["detail"]


def test_endpoint_patch_rules(plane):
    ep = plane.post("/v2/serverless", json=endpoint_body()).json()
    path = f"/v2/serverless/{ep['id']}"
    assert "additional properties 'type'" in errors_of(plane.patch(path, json={"type": "QUEUE"}))
    assert "requires property 'pools'" in errors_of(
        plane.patch(path, json={"gpu": {"excludedTypes": ["NVIDIA L4"]}}))
    r = plane.patch(path, json={"cpu": [{"id": "cpu3c", "vcpuCount": 2}]})
    assert "compute family" in problem(r, 400)["detail"]
    # gpu is partial; "" clears minCudaVersion; pools without excludedTypes clears them
    r = plane.patch(path, json={"gpu": {"pools": ["AMPERE_24"], "excludedTypes": ["NVIDIA L4"],
                                        "minCudaVersion": "12.4"}})
    gpu = r.json()["gpu"]
    assert gpu["excludedTypes"] == ["NVIDIA L4"] and gpu["minCudaVersion"] == "12.4"
    r = plane.patch(path, json={"gpu": {"count": 2, "minCudaVersion": ""}})
    assert r.json()["gpu"] == {"pools": ["AMPERE_24"], "excludedTypes": ["NVIDIA L4"], "count": 2,
                               "allowedCudaVersions": [], "minCudaVersion": None}
    r = plane.patch(path, json={"gpu": {"pools": ["ADA_24", "AMPERE_24"]}})
    assert "excludedTypes" not in r.json()["gpu"]
    problem(plane.patch("/v2/serverless/nosuchendpoint1", json={"name": "x"}), 404)
    problem(plane.delete("/v2/serverless/nosuchendpoint1"), 404)
    problem(plane.get("/v2/serverless/nosuchendpoint1/workers"), 404)


def test_cpu_endpoint_shape(plane):
    body = endpoint_body(cpu=[{"id": "cpu3c", "vcpuCount": 4}])
    del body["gpu"]
    ep = plane.post("/v2/serverless", json=body).json()
    assert ep["cpu"] == [{"id": "cpu3c", "vcpuCount": 4, "memory": 8}] and "gpu" not in ep
    assert "not a serverless CPU flavour" in problem(plane.post("/v2/serverless", json={
        **body, "cpu": [{"id": "cpu9z", "vcpuCount": 4}]}), 400)["detail"]


# -- ids: the control plane and the job API share /v2 ---------------------------------------------

def test_control_plane_names_never_meet_the_job_api(emulator_factory, tmp_path):
    emu = emulator_factory("--endpoint", "templates-x", "--worker-cmd", ENV_HANDLER,
                           "--workers-max", "1", "--image", f"{IMAGE}={ENV_HANDLER}")
    with emu.client() as c:
        # an emulator endpoint whose name starts like a control-plane one still has its job API
        done = c.post("/v2/templates-x/runsync", json={"input": {"keys": []}}).json()
        assert done["status"] == "COMPLETED"
        assert c.get("/v2/templates").json()["templates"] == []
        ep = c.post("/v2/serverless", json=endpoint_body()).json()
        assert c.get(f"/v2/{ep['id']}/health").json()["jobs"]["inQueue"] == 0  # the job API
        # under a control-plane name, every path is the control plane's
        problem(c.get("/v2/serverless/health"), 404)
        problem(c.post("/v2/serverless/run", json={"input": {}}), 405)
        # no endpoint may take a control-plane name
        for name in ("serverless", "templates", "network-volumes", "catalog", "pods"):
            r = c.put(f"/rpremote/v1/endpoints/{name}", json={"workerCmd": ENV_HANDLER})
            assert r.status_code == 400 and "control plane" in r.json()["error"]
    out = subprocess.run([sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state",
                          str(tmp_path / "refused"), "--endpoint", "catalog"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "control plane" in out.stderr


# -- an endpoint made here runs real SDK workers --------------------------------------------------

def test_created_endpoint_runs_a_job_with_its_env_and_lists_its_worker(plane):
    ep = plane.post("/v2/serverless", json=endpoint_body(env={"GREETING": "hello"})).json()
    done = plane.post(f"/v2/{ep['id']}/runsync",
                      json={"input": {"keys": ["GREETING", "RUNPOD_ENDPOINT_ID"]}}).json()
    assert done["status"] == "COMPLETED", done
    assert done["output"]["env"] == {"GREETING": "hello", "RUNPOD_ENDPOINT_ID": ep["id"]}
    view = plane.get(f"/v2/serverless/{ep['id']}/workers").json()
    assert set(view) == WORKERS_FIELDS and set(view["summary"]) == SUMMARY_FIELDS
    assert view["endpointVersion"] == 1 and view["summary"]["total"] == len(view["workers"]) == 1
    worker = view["workers"][0]
    assert set(worker) == WORKER_FIELDS
    assert worker["id"] == done["workerId"] and worker["status"] in ("IDLE", "RUNNING")
    assert worker["isStale"] is False and worker["version"] == 1 and worker["image"] == IMAGE
    assert worker["gpuCount"] == 1 and worker["gpuTypeId"] == "NVIDIA GeForce RTX 4090"
    assert RFC3339.match(worker["startedAt"]) and worker["uptimeSeconds"] >= 0
    # its log, as RunPod streams worker logs (§4.8)
    with plane.stream("GET", f"/v2/serverless/{ep['id']}/workers/{worker['id']}/logs",
                      params={"tail": 50}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
            if any(f["source"] == "container" for f in frames):
                break
    assert frames[0]["source"] == "system" and "started" in frames[0]["line"]
    assert set(frames[0]) == {"ts", "source", "line"}


def test_unmapped_image_shows_unhealthy_workers_with_the_reason_and_keeps_jobs_queued(plane):
    ep = plane.post("/v2/serverless", json=endpoint_body(image="myorg/unknown:2")).json()
    assert plane.get(f"/v2/serverless/{ep['id']}/workers").json()["workers"] == []  # min 0
    job = plane.post(f"/v2/{ep['id']}/run", json={"input": {}}).json()
    workers_url = f"/v2/serverless/{ep['id']}/workers"
    view = wait_for(lambda: (v := plane.get(workers_url).json())["workers"] and v,
                    timeout=10, interval=0.3)
    assert view["summary"] == {"running": 0, "idle": 0, "initializing": 0, "throttled": 0,
                               "unhealthy": 1, "total": 1}
    worker = view["workers"][0]
    assert worker["status"] == "UNHEALTHY" and worker["image"] == "myorg/unknown:2"
    assert plane.get(f"/v2/{ep['id']}/health").json()["workers"]["unhealthy"] == 1
    # why: in the worker's log (system source), as a failed pull, and in the admin view
    with plane.stream("GET", f"/v2/serverless/{ep['id']}/workers/{worker['id']}/logs") as r:
        line = next(json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: "))
    assert line["source"] == "system"
    assert "failed to pull image myorg/unknown:2" in line["line"] and "--image" in line["line"]
    assert "failed to pull" in admin_workers(plane, ep["id"])[0]["reason"]
    # never silently lost: the job waits in the queue, as on RunPod
    assert plane.get(f"/v2/{ep['id']}/status/{job['id']}").json()["status"] == "IN_QUEUE"
    # a PATCH to an image the emulator knows lets it run
    plane.patch(f"/v2/serverless/{ep['id']}", json={"image": IMAGE})
    assert wait_status(plane, ep["id"], job["id"], "COMPLETED", timeout=30)["output"]["env"] == {}


def test_patch_replaces_workers_and_delete_stops_them(plane):
    ep = plane.post("/v2/serverless", json=endpoint_body(workers={"min": 1, "max": 1})).json()
    first = wait_for(lambda: [w for w in admin_workers(plane, ep["id"]) if w["state"] == "idle"],
                     timeout=30, what="a ready worker")[0]
    r = plane.patch(f"/v2/serverless/{ep['id']}", json={"env": {"NEW": "1"}})
    assert r.status_code == 200 and r.json()["env"] == {"NEW": "1"}
    wait_for(lambda: gone(first["pid"], reap=False), timeout=20, what="the old worker to stop")
    done = plane.post(f"/v2/{ep['id']}/runsync", json={"input": {"keys": ["NEW"]}}).json()
    assert done["output"]["env"] == {"NEW": "1"} and done["workerId"] != first["id"]
    # the old worker is listed, stale, until its process is reaped (a rollout, §2.5)
    def rolled_out():
        view = plane.get(f"/v2/serverless/{ep['id']}/workers").json()
        return view if len(view["workers"]) == 1 else None

    view = wait_for(rolled_out, timeout=10, what="the rollout to end")
    assert view["endpointVersion"] == 2
    assert [(w["version"], w["isStale"]) for w in view["workers"]] == [(2, False)]
    # workers/scaling changes are no new release
    plane.patch(f"/v2/serverless/{ep['id']}", json={"workers": {"max": 2}})
    assert plane.get(f"/v2/serverless/{ep['id']}/workers").json()["endpointVersion"] == 2

    pids = [w["pid"] for w in admin_workers(plane, ep["id"])]
    queued_elsewhere = plane.post(f"/v2/{ep['id']}/run", json={"input": {"keys": []}}).json()
    assert plane.delete(f"/v2/serverless/{ep['id']}").status_code == 204
    wait_for(lambda: all(gone(p, reap=False) for p in pids), timeout=20, what="workers to stop")
    r = plane.post(f"/v2/{ep['id']}/run", json={"input": {}})
    assert r.status_code == 404  # the job API's 404 for an endpoint that is gone
    assert plane.get(f"/v2/{ep['id']}/status/{queued_elsewhere['id']}").status_code == 404
    assert plane.get("/v2/templates").json()["templates"] == []  # its bound template went too


# -- templates ------------------------------------------------------------------------------------

def test_templates_crud_and_endpoints_from_them(plane):
    r = plane.post("/v2/templates", json={"name": "t1", "image": IMAGE, "serverless": True,
                                          "env": {"A": "tpl", "B": "tpl"},
                                          "allowedCudaVersions": ["12.8"]})
    assert r.status_code == 201, r.text
    tpl = r.json()
    assert set(tpl) == TEMPLATE_FIELDS and re.fullmatch(r"[a-z0-9]{10}", tpl["id"])
    assert tpl["startSsh"] is True and tpl["startJupyter"] is True  # template defaults (§3.2)
    assert tpl["category"] == "NVIDIA" and tpl["public"] is False and tpl["mounts"] == {}
    assert plane.get(f"/v2/templates/{tpl['id']}").json() == tpl
    problem(plane.post("/v2/templates", json={"name": "t1", "image": "x"}), 409)
    assert "missing property 'image'" in errors_of(plane.post("/v2/templates", json={"name": "t2"}))
    assert "additional properties 'network'" in errors_of(plane.post("/v2/templates", json={
        "name": "t3", "image": "x", "mounts": {"network": [{"volumeId": "v", "path": "/w"}]}}))
    assert "$.category: value must be one of" in errors_of(
        plane.post("/v2/templates", json={"name": "t4", "image": "x", "category": "TPU"}))

    # an endpoint from it: container fields copied, env merged (body wins), CUDA seeded (§2.2)
    body = endpoint_body(templateId=tpl["id"], env={"B": "body"})
    del body["image"]
    ep = plane.post("/v2/serverless", json=body).json()
    assert ep["image"] == IMAGE and ep["env"] == {"A": "tpl", "B": "body"}
    assert ep["gpu"]["allowedCudaVersions"] == ["12.8"]
    done = plane.post(f"/v2/{ep['id']}/runsync", json={"input": {"keys": ["A", "B"]}}).json()
    assert done["output"]["env"] == {"A": "tpl", "B": "body"}

    pod = plane.post("/v2/templates", json={"name": "pod-tpl", "image": IMAGE}).json()
    r = plane.post("/v2/serverless", json={**body, "templateId": pod["id"]})
    assert "pod template" in errors_of(r)
    problem(plane.post("/v2/serverless", json={**body, "templateId": "nosuchtpl0"}), 404)

    # the endpoint's bound template is listed and cannot be deleted alone (§2.2, §3.1)
    listed = plane.get("/v2/templates").json()
    assert set(listed) == {"templates", "pagination"}
    bound = [t for t in listed["templates"] if t["id"] not in (tpl["id"], pod["id"])]
    assert len(bound) == 1 and bound[0]["image"] == IMAGE and bound[0]["serverless"] is True
    assert "in use" in problem(plane.delete(f"/v2/templates/{bound[0]['id']}"), 400)["detail"]

    r = plane.patch(f"/v2/templates/{tpl['id']}", json={"name": "t1b", "ports": ["8000/http"]})
    assert r.status_code == 200 and r.json()["name"] == "t1b" and r.json()["ports"] == ["8000/http"]
    assert plane.get(f"/v2/serverless/{ep['id']}").json()["ports"] == []  # a copy, not a link
    assert plane.delete(f"/v2/templates/{tpl['id']}").status_code == 204
    problem(plane.get(f"/v2/templates/{tpl['id']}"), 404)
    problem(plane.patch(f"/v2/templates/{tpl['id']}", json={"name": "z"}), 404)


def test_pagination_is_newest_first_with_opaque_cursors(plane):
    ids = [plane.post("/v2/templates", json={"name": f"p{i}", "image": "x"}).json()["id"]
           for i in range(5)]
    first = plane.get("/v2/templates", params={"limit": 2}).json()
    assert set(first["pagination"]) == PAGINATION_FIELDS and first["pagination"]["hasNextPage"]
    seen = [t["id"] for t in first["templates"]]
    cursor = first["pagination"]["nextCursor"]
    while cursor:
        page = plane.get("/v2/templates", params={"limit": 2, "cursor": cursor}).json()
        seen += [t["id"] for t in page["templates"]]
        cursor = page["pagination"]["nextCursor"]
        assert page["pagination"]["hasNextPage"] == (cursor is not None)
    assert seen == ids[::-1]
    assert "query.cursor" in errors_of(plane.get("/v2/templates", params={"cursor": "garbage!"}))
    foreign = first["pagination"]["nextCursor"]
    assert "query.cursor" in errors_of(plane.get("/v2/serverless", params={"cursor": foreign}))
    for limit in ("0", "1001", "x"):
        assert "query.limit" in errors_of(plane.get("/v2/templates", params={"limit": limit}))


# -- network volumes ------------------------------------------------------------------------------

def test_network_volumes(plane):
    r = plane.post("/v2/network-volumes", json={"name": "data", "size": 20, "dataCenter": "EU-RO-1"})
    assert r.status_code == 201, r.text
    vol = r.json()
    assert set(vol) == VOLUME_FIELDS and vol["type"] == "STANDARD"
    assert re.fullmatch(r"[a-z0-9]{10}", vol["id"])
    assert plane.get("/v2/network-volumes").json() == {"networkVolumes": [vol]}  # no pagination
    assert plane.get(f"/v2/network-volumes/{vol['id']}").json() == vol

    detail = problem(plane.post("/v2/network-volumes", json={"name": "d", "size": 20,
                                                              "dataCenter": "US-TX-1"}), 400)["detail"]
    assert "US-TX-1" in detail and "EU-RO-1" in detail  # lists the valid ones (OBSERVED)
    assert "additional properties 'dataCenterId'" in errors_of(plane.post(
        "/v2/network-volumes", json={"name": "d", "size": 20, "dataCenterId": "EU-RO-1"}))
    assert "$.size: minimum" in errors_of(plane.post(
        "/v2/network-volumes", json={"name": "d", "size": 5, "dataCenter": "EU-RO-1"}))
    assert "$.type: value must be one of" in errors_of(plane.post(
        "/v2/network-volumes", json={"name": "d", "size": 10, "dataCenter": "EU-RO-1", "type": "FAST"}))

    path = f"/v2/network-volumes/{vol['id']}"
    assert "minProperties" in errors_of(plane.patch(path, json={}))
    assert "additional properties 'type'" in errors_of(plane.patch(path, json={"type": "STANDARD"}))
    assert "size decrease" in problem(plane.patch(path, json={"size": 10}), 400)["detail"]
    grown = plane.patch(path, json={"size": 50, "name": "data2"}).json()
    assert grown == {**vol, "size": 50, "name": "data2"}

    # mounted by an endpoint: it must be in the endpoint's data centers; then it is in use
    body = endpoint_body(networkVolumes=[vol["id"]], dataCenterIds=["US-KS-2"])
    assert "outside" in problem(plane.post("/v2/serverless", json=body), 400)["detail"]
    problem(plane.post("/v2/serverless", json={**body, "networkVolumes": ["nosuchvol0"]}), 404)
    ep = plane.post("/v2/serverless", json={**body, "dataCenterIds": []}).json()
    assert ep["networkVolumes"] == [vol["id"]]
    assert "in use" in problem(plane.delete(path), 400)["detail"]
    plane.patch(f"/v2/serverless/{ep['id']}", json={"networkVolumes": []})
    assert plane.delete(path).status_code == 204
    problem(plane.get(path), 404)


# -- catalog --------------------------------------------------------------------------------------

def test_catalog_gpus_are_seeded_from_platform(plane):
    from rpremote import platform as rp

    gpus = plane.get("/v2/catalog/gpus").json()["gpus"]
    assert {g["id"] for g in gpus} == set(rp.GPU_TYPES)
    for g in gpus:
        assert set(g) == GPU_TYPE_FIELDS
        assert g["pool"] == rp.GPU_TYPES[g["id"]].pool
    h200 = plane.get("/v2/catalog/gpus/NVIDIA H200").json()
    assert h200["pool"] == "HOPPER_141" and h200["memory"] == 141
    hourly = rp.GPU_POOLS["HOPPER_141"].flex_usd_per_s * 3600
    assert h200["price"]["serverless"] == pytest.approx(hourly)
    problem(plane.get("/v2/catalog/gpus/NVIDIA GeForce RTX 9999"), 404)

    r = plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY"})
    assert "product" in problem(r, 400)["detail"]
    problem(plane.get("/v2/catalog/gpus", params={"product": "SERVERLESS"}), 400)
    errors_of(plane.get("/v2/catalog/gpus", params={"include": "PRICES", "product": "SERVERLESS"}))
    errors_of(plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "X"}))
    errors_of(plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD",
                                                    "countryCodes": "usa"}))
    problem(plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD",
                                                  "cudaVersions": "12.8", "minCudaVersion": "12"}), 400)
    avail = {g["id"]: g for g in plane.get("/v2/catalog/gpus", params={
        "include": "AVAILABILITY", "product": "SERVERLESS"}).json()["gpus"]}
    rtx = avail["NVIDIA GeForce RTX 4090"]
    assert rtx["availability"] == "HIGH" and rtx["dataCenters"] and rtx["cudaVersions"]
    assert avail["NVIDIA GeForce RTX 3070"]["availability"] == "NONE"  # in no pool
    assert "cudaVersions" not in avail["AMD Instinct MI300X OAM"]
    fr = plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "SERVERLESS",
                                               "countryCodes": "FR"}).json()["gpus"]
    assert {d["id"] for g in fr for d in g.get("dataCenters", [])} == {"EU-FR-1"}
    assert plane.get("/v2/catalog/gpus", params={"include": "AVAILABILITY", "product": "SERVERLESS",
                                                 "countryCodes": "ZZ"}).json()["gpus"] == []


def test_catalog_data_centers_and_cpus(plane):
    dcs = plane.get("/v2/catalog/datacenters").json()["dataCenters"]
    assert all(set(d) == DATA_CENTER_FIELDS for d in dcs)
    with_volumes = plane.get("/v2/catalog/datacenters",
                             params={"networkVolumeTypes": "STANDARD"}).json()["dataCenters"]
    assert with_volumes and all("STANDARD" in d["networkVolumeTypes"] for d in with_volumes)
    eu = plane.get("/v2/catalog/datacenters", params={"regions": "EUROPE",
                                                      "globalNetwork": "true"}).json()["dataCenters"]
    assert eu and all(d["region"] == "EUROPE" and d["globalNetwork"] for d in eu)
    one = plane.get("/v2/catalog/datacenters/EU-RO-1", params={"include": "GPU_AVAILABILITY"}).json()
    assert one["id"] == "EU-RO-1" and one["gpuAvailability"]
    problem(plane.get("/v2/catalog/datacenters/XX-9"), 404)
    errors_of(plane.get("/v2/catalog/datacenters", params={"regions": "MARS"}))
    cpus = plane.get("/v2/catalog/cpus").json()["cpus"]
    assert {"cpu3c", "cpu5c"} <= {c["id"] for c in cpus}
    assert all({"id", "name", "group", "vcpu", "ramGbPerVcpu", "price"} == set(c) for c in cpus)


# -- persistence ----------------------------------------------------------------------------------

def test_objects_survive_a_restart_and_follow_the_new_image_map(emulator_factory, tmp_path):
    state = tmp_path / "kept"
    emu = emulator_factory(state=state)  # no --image: the endpoint's image is unknown here
    with emu.client() as c:
        vol = c.post("/v2/network-volumes",
                     json={"name": "v", "size": 10, "dataCenter": "US-KS-2"}).json()
        tpl = c.post("/v2/templates", json={"name": "t", "image": IMAGE, "serverless": True}).json()
        ep = c.post("/v2/serverless", json=endpoint_body(networkVolumes=[vol["id"]])).json()
        job = c.post(f"/v2/{ep['id']}/run", json={"input": {"keys": []}}).json()
        assert wait_for(lambda: c.get(f"/v2/{ep['id']}/health").json()["workers"]["unhealthy"],
                        timeout=10, interval=0.3)
        templates = c.get("/v2/templates").json()
    assert oct(os.stat(state / "emulator.sqlite3").st_mode & 0o777) == "0o600"
    emu.stop()
    emu = emulator_factory("--image", f"{IMAGE}={ENV_HANDLER}", state=state)
    with emu.client() as c:
        assert c.get(f"/v2/network-volumes/{vol['id']}").json() == vol
        assert c.get(f"/v2/templates/{tpl['id']}").json() == tpl
        assert c.get("/v2/templates").json() == templates
        again = c.get(f"/v2/serverless/{ep['id']}").json()
        assert again == {**ep, "requestUrls": again["requestUrls"]}
        assert again["requestUrls"]["run"] == f"{emu.url}/v2/{ep['id']}/run"
        # the queued job resumes, now that the image has a command
        done = wait_status(c, ep["id"], job["id"], "COMPLETED", timeout=30)
        assert done["output"]["env"] == {}
