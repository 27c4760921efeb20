"""``/v2/serverless``: Serverless endpoints (runpod-rest-v2.md §2), each a real emulator endpoint.

The API object is stored as given (``Store`` resources) and turned into the engine's
``EndpointSpec``: workers min/max and idle timeout, the scaler, the execution timeout, env, the
GPU pools as the workers' label, the command of its image (``images.py``: for an official
RunPod image, the endpoint's own start command in the image's clean environment) and its
network volume's directory. An image with no command still makes an endpoint: its workers are
shown unhealthy with the reason, as RunPod shows workers whose image cannot be pulled, and its
jobs wait in the queue. A container or compute change is a new release: the running workers
are replaced (§2.5).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import platform as rp
from ..config import EndpointSpec
from . import templates
from .container import CONTAINER_FIELDS, CONTAINER_PROPS, apply_container
from .paging import page
from .plane import ENDPOINT, ControlPlane, json_response, rfc3339, root_url
from .problems import Problem, invalid, not_found
from .schema import Arr, Int, Num, Obj, Str, Tagged, check
from .volumes import volume_dir, volume_object

ENDPOINT_TYPES = ("QUEUE", "LOAD_BALANCER")
FLASHBOOT = ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT")
CUDA = r"^\d+\.\d+$"

SCALING = Tagged("type", {
    rp.SCALER_QUEUE_DELAY: Obj({"type": Str(),
                                "queueDelay": Num(minimum=rp.REST_QUEUE_DELAY_MIN_S)},
                               required=("type", "queueDelay")),
    rp.SCALER_REQUEST_COUNT: Obj({"type": Str(), "requestCount": Int(minimum=1)},
                                 required=("type", "requestCount")),
})
_GPU_PROPS = {
    "pools": Arr(Str(min_len=1), min_items=1, unique=True),
    "excludedTypes": Arr(Str(pattern=r"^\s*[^-\s]"), unique=True),
    "count": Int(minimum=1),
    "allowedCudaVersions": Arr(Str(pattern=CUDA), unique=True),
    "minCudaVersion": Str(pattern=CUDA),
}
GPU = Obj(_GPU_PROPS, required=("pools",))
# PATCH: pools optional (then only count/CUDA change), excludedTypes needs pools, "" clears
# minCudaVersion (§2.5).
GPU_UPDATE = Obj({**_GPU_PROPS, "minCudaVersion": Str(pattern=r"^(\d+\.\d+)?$")},
                 dependent={"excludedTypes": "pools"})
CPU = Arr(Obj({"id": Str(min_len=1), "vcpuCount": Int(minimum=2)}, required=("id", "vcpuCount")),
          min_items=1, unique=True)
WORKERS = Obj({"min": Int(minimum=0), "max": Int(minimum=0),
               "idleTimeout": Int(minimum=rp.IDLE_TIMEOUT_MIN_S, maximum=rp.IDLE_TIMEOUT_MAX_S)})
_PROPS = {
    "name": Str(min_len=1),
    "type": Str(enum=ENDPOINT_TYPES),
    "scaling": SCALING,
    "templateId": Str(min_len=1),
    "gpu": GPU,
    "cpu": CPU,
    "workers": WORKERS,
    "dataCenterIds": Arr(Str(min_len=1), unique=True),
    "networkVolumes": Arr(Str(min_len=1), unique=True),
    "timeout": Int(minimum=0),
    "flashboot": Str(enum=FLASHBOOT),
    **CONTAINER_PROPS,
}
CREATE = Obj(_PROPS, required=("name", "type", "scaling"))
# `type` is fixed at create (§2.2): a PATCH naming it is refused like any unknown field.
UPDATE = Obj({**{k: v for k, v in _PROPS.items() if k != "type"}, "gpu": GPU_UPDATE})

RELEASE_FIELDS = (*CONTAINER_FIELDS, "gpu", "cpu", "dataCenterIds", "networkVolumes")
LB_NOT_EMULATED = ("load-balancing endpoints are not emulated: their workers serve HTTP "
                   "themselves, and the emulator runs queue workers (the runpod SDK's job loop); "
                   "create the endpoint with \"type\": \"QUEUE\"")


# -- the object --------------------------------------------------------------------------------

def _record(cp: ControlPlane, endpoint_id: str) -> dict[str, Any]:
    record = cp.store.resource(ENDPOINT, endpoint_id)
    if record is None:
        raise not_found("endpoint", endpoint_id)
    return record


def _request_urls(obj: dict[str, Any], root: str) -> dict[str, str]:
    """§2.4, pointing at this emulator's job API."""
    base = f"{root}/v2/{obj['id']}"
    if obj["type"] == "LOAD_BALANCER":
        path = obj["env"].get("HEALTH_CHECK_PATH", "/ping")
        return {"base": base, "health": base + ("" if path.startswith("/") else "/") + path}
    return {"run": f"{base}/run", "runSync": f"{base}/runsync",
            "status": f"{base}/status/{{job_id}}", "stream": f"{base}/stream/{{job_id}}",
            "cancel": f"{base}/cancel/{{job_id}}", "retry": f"{base}/retry/{{job_id}}",
            "purgeQueue": f"{base}/purge-queue", "health": f"{base}/health"}


def shown(obj: dict[str, Any], request: Request) -> dict[str, Any]:
    """The endpoint as the API returns it: ``requestUrls`` follow ``type``."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[key] = value
        if key == "type":
            out["requestUrls"] = _request_urls(obj, root_url(request))
    return out


def _queue_on_request_count(obj: dict[str, Any]) -> bool:
    return obj["type"] == "QUEUE" and obj["scaling"]["type"] == rp.SCALER_REQUEST_COUNT


def _gpu_types(gpu: dict[str, Any]) -> list[str]:
    excluded = set(gpu.get("excludedTypes", []))
    return [t for pool in gpu["pools"] for t in rp.GPU_POOLS[pool].gpu_types if t not in excluded]


def _check_compute(obj: dict[str, Any]) -> None:
    """The cross-field rules of ``gpu`` / ``cpu`` (§2.2): 400s (an unknown pool: 422)."""
    gpu, cpu = obj.get("gpu"), obj.get("cpu")
    if (gpu is None) == (cpu is None):
        raise Problem(400, "give exactly one of gpu (GPU pools) and cpu (CPU flavours)")
    if gpu is not None:
        unknown = [p for p in gpu["pools"] if p not in rp.GPU_POOLS]
        if unknown:  # an invalid pool id is a validation error (422) listing the valid ones
            raise invalid([f"$.gpu.pools: unknown GPU pool(s) {', '.join(unknown)}; gpu.pools "
                           f"takes pool ids (not GPU type ids): {', '.join(rp.GPU_POOLS)}"])
        members = {t for p in gpu["pools"] for t in rp.GPU_POOLS[p].gpu_types}
        stray = [t for t in gpu.get("excludedTypes", []) if t not in members]
        if stray:
            raise Problem(400, f"gpu.excludedTypes {', '.join(stray)} not in the pools "
                               f"{', '.join(gpu['pools'])}")
        if not _gpu_types(gpu):
            raise Problem(400, "gpu.excludedTypes removes every GPU type of the pools; keep one")
        if gpu["allowedCudaVersions"] and gpu["minCudaVersion"]:
            raise Problem(400, "give gpu.allowedCudaVersions or gpu.minCudaVersion, not both")
        return
    for i, item in enumerate(cpu):
        flavor = rp.CPU_FLAVORS.get(item["id"])
        if flavor is None or not flavor.serverless:
            known = [f.id for f in rp.CPU_FLAVORS.values() if f.serverless]
            raise Problem(400, f"cpu[{i}].id {item['id']!r} is not a serverless CPU flavour; use "
                               f"{', '.join(known)}")
        if not flavor.vcpu_min <= item["vcpuCount"] <= flavor.vcpu_max:
            raise Problem(400, f"cpu[{i}].vcpuCount must be {flavor.vcpu_min}-{flavor.vcpu_max} "
                               f"for {flavor.id}")


def _check_placement(cp: ControlPlane, obj: dict[str, Any]) -> None:
    """Data centers and network volumes (§2.2, §5.1)."""
    unknown = [d for d in obj["dataCenterIds"] if d not in rp.DATA_CENTERS]
    if unknown:
        raise Problem(400, f"unknown data center(s) {', '.join(unknown)}; known: "
                           f"{', '.join(rp.DATA_CENTERS)}")
    seen: dict[str, str] = {}
    for volume_id in obj["networkVolumes"]:
        volume = volume_object(cp, volume_id)
        if volume is None:
            raise not_found("network volume", volume_id)
        dc = volume["dataCenter"]
        # GAP (§9.2): a volume outside the endpoint's data centers; dataCenterIds are enforced
        # (§9.1.5), so the workers could never mount it: 400.
        if obj["dataCenterIds"] and dc not in obj["dataCenterIds"]:
            raise Problem(400, f"network volume {volume_id} is in {dc}, outside the endpoint's "
                               f"dataCenterIds ({', '.join(obj['dataCenterIds'])})")
        if dc in seen:  # contract §3.8: one volume per data center
            raise Problem(400, f"network volumes {seen[dc]} and {volume_id} are both in {dc}; "
                               "an endpoint takes one volume per data center")
        seen[dc] = volume_id


def _check_workers(obj: dict[str, Any]) -> None:
    w = obj["workers"]
    if w["min"] > w["max"]:
        raise Problem(400, f"workers.min ({w['min']}) is more than workers.max ({w['max']})")


def _template(cp: ControlPlane, template_id: str) -> dict[str, Any]:
    tpl = templates.template_object(cp, template_id)
    if tpl is None:
        raise not_found("template", template_id)
    if not tpl["serverless"]:
        raise invalid([f"$.templateId: template {template_id} is a pod template; an endpoint "
                       "takes a serverless template (\"serverless\": true)"])
    return tpl


def _apply_template(obj: dict[str, Any], tpl: dict[str, Any],
                    body: dict[str, Any]) -> dict[str, Any]:
    """One-shot copy of a template's container fields (§2.2, §2.5); returns the body to apply
    on top, its ``env`` merged over the template's (body wins per key)."""
    for key in ("image", "args", "disk", "ports", "registry"):
        obj[key] = tpl[key]
    obj["env"] = dict(tpl["env"])
    return {**body, "env": {**tpl["env"], **body.get("env", {})}}


def _new_gpu(body_gpu: dict[str, Any], tpl: dict[str, Any] | None) -> dict[str, Any]:
    gpu = {"pools": body_gpu["pools"], "count": body_gpu.get("count", 1),
           "allowedCudaVersions": body_gpu.get("allowedCudaVersions", []),
           "minCudaVersion": body_gpu.get("minCudaVersion")}
    if body_gpu.get("excludedTypes"):
        gpu["excludedTypes"] = [t.strip() for t in body_gpu["excludedTypes"]]
    # A template's CUDA versions seed a GPU endpoint unless the body sets a CUDA field (§2.2).
    if tpl and tpl["allowedCudaVersions"] and not (
            "allowedCudaVersions" in body_gpu or "minCudaVersion" in body_gpu):
        gpu["allowedCudaVersions"] = list(tpl["allowedCudaVersions"])
    return gpu


def _patched_gpu(gpu: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    gpu = dict(gpu)
    if "pools" in patch:
        gpu["pools"] = patch["pools"]
        gpu.pop("excludedTypes", None)  # pools without excludedTypes clear them (§2.5)
    if patch.get("excludedTypes"):
        gpu["excludedTypes"] = [t.strip() for t in patch["excludedTypes"]]
    for key in ("count", "allowedCudaVersions"):
        if key in patch:
            gpu[key] = patch[key]
    if "minCudaVersion" in patch:
        gpu["minCudaVersion"] = patch["minCudaVersion"] or None
    return gpu


def _check_scaling(obj: dict[str, Any], body: dict[str, Any]) -> None:
    """The schema's conditional rules (422): LOAD_BALANCER scales on REQUEST_COUNT; a queue
    endpoint scaling on requestCount takes no idleTimeout (OBSERVED, §2.2)."""
    if obj["type"] == "LOAD_BALANCER" and obj["scaling"]["type"] != rp.SCALER_REQUEST_COUNT:
        raise invalid([f"$.scaling.type: value must be one of '{rp.SCALER_REQUEST_COUNT}' "
                       "for a LOAD_BALANCER endpoint"])
    if _queue_on_request_count(obj):
        if "idleTimeout" in body.get("workers", {}):
            raise invalid(["$.workers.idleTimeout: idleTimeout does not apply to queue-based "
                           "endpoints scaling on requestCount"])
        obj["workers"].pop("idleTimeout", None)  # §2.3: omitted for these
    else:
        obj["workers"].setdefault("idleTimeout", rp.REST_IDLE_TIMEOUT_DEFAULT_S)


def _check_cpu_counts(body: dict[str, Any]) -> None:
    bad = [f"$.cpu[{i}].vcpuCount: {c['vcpuCount']} is not a power of two"
           for i, c in enumerate(body.get("cpu") or []) if c["vcpuCount"] & (c["vcpuCount"] - 1)]
    if bad:
        raise invalid(bad)


# -- the engine's view --------------------------------------------------------------------------

def spec_for(cp: ControlPlane, record: dict[str, Any]) -> EndpointSpec:
    """The emulator endpoint that plays this API object."""
    obj = record["object"]
    start = cp.images.start(obj["image"], [*obj.get("entrypoint", []), *obj.get("cmd", [])],
                            cp.engine.state_dir)
    command, why, python_env = start.command, start.error, start.python_env
    if obj["type"] == "LOAD_BALANCER":
        command, why, python_env = None, LB_NOT_EMULATED, None
    # The first network volume is the one mounted (one per data center; the workers run in
    # the first one's, as workers_of shows).
    mount = (str(volume_dir(cp.engine.state_dir, obj["networkVolumes"][0]))
             if obj.get("networkVolumes") else None)
    scaling = obj["scaling"]
    value = scaling.get("queueDelay", scaling.get("requestCount"))
    timeout = obj["timeout"]
    gpu, cpu = obj.get("gpu"), obj.get("cpu")
    label = ",".join(gpu["pools"]) if gpu else ",".join(f"{c['id']}-{c['vcpuCount']}" for c in cpu)
    return EndpointSpec(
        id=obj["id"], workerCmd=command, startError=why, env=dict(obj["env"]), gpu=label,
        workersMin=obj["workers"]["min"], workersMax=obj["workers"]["max"],
        idleTimeout=obj["workers"].get("idleTimeout", rp.REST_IDLE_TIMEOUT_DEFAULT_S),
        scalerType=scaling["type"], scalerValue=value,
        # timeout 0 (omitted, §9.1.4): the platform's default; else kept within the limits
        # a job's own policy.executionTimeout has.
        executionTimeoutMs=rp.EXECUTION_TIMEOUT_DEFAULT_MS if timeout == 0 else
        max(rp.EXECUTION_TIMEOUT_MIN_MS, min(rp.EXECUTION_TIMEOUT_MAX_MS, timeout)),
        release=record["releases"][-1][0], pythonEnv=python_env, volumeMount=mount,
    )


def reconcile(cp: ControlPlane) -> None:
    """At start: every stored endpoint runs as its object says, with this run's image map."""
    for _, record in cp.store.resources(ENDPOINT):
        spec = spec_for(cp, record)
        current = cp.engine.endpoints.get(spec.id)
        if current is None or current.spec != spec:
            cp.engine.put_endpoint(spec)


def _save(cp: ControlPlane, record: dict[str, Any]) -> None:
    spec = spec_for(cp, record)  # first: it checks what the engine needs
    cp.store.put_resource(ENDPOINT, record["object"]["id"], record)
    templates.sync_bound(cp, record["template"], record["object"])
    cp.engine.put_endpoint(spec)


# -- routes ---------------------------------------------------------------------------------------

async def list_endpoints(cp: ControlPlane, request: Request, body: Any) -> Response:
    records, pagination = page(cp.store, ENDPOINT, "serverless", request)
    return json_response({"endpoints": [shown(r["object"], request) for r in records],
                          "pagination": pagination})


async def create_endpoint(cp: ControlPlane, request: Request, body: Any) -> Response:
    body = check(CREATE, body)
    if "image" not in body and "templateId" not in body:
        raise invalid(["$: missing property 'image'"])
    _check_cpu_counts(body)
    endpoint_id = cp.new_id(14)
    obj: dict[str, Any] = {"id": endpoint_id, "name": body["name"], "type": body["type"],
                           "image": None, "args": "", "entrypoint": [], "cmd": [],
                           "disk": rp.REST_DISK_DEFAULT_GB,
                           "ports": [], "env": {}, "registry": None}
    tpl = _template(cp, body["templateId"]) if "templateId" in body else None
    container = _apply_template(obj, tpl, body) if tpl else body
    apply_container(obj, container)
    if "gpu" in body:
        obj["gpu"] = _new_gpu(body["gpu"], tpl)
    if "cpu" in body:
        obj["cpu"] = [{"id": c["id"], "vcpuCount": c["vcpuCount"],
                       "memory": _memory(c)} for c in body["cpu"]]
    obj["workers"] = {"min": rp.WORKERS_MIN_DEFAULT, "max": rp.WORKERS_MAX_DEFAULT,
                      **body.get("workers", {})}
    obj["scaling"] = body["scaling"]
    obj["dataCenterIds"] = body.get("dataCenterIds", [])
    obj["networkVolumes"] = body.get("networkVolumes", [])
    obj["timeout"] = body.get("timeout", rp.REST_ENDPOINT_TIMEOUT_OMITTED_MS)
    obj["flashboot"] = body.get("flashboot", "OFF")
    obj["createdAt"] = rfc3339()
    _check_scaling(obj, body)
    _check_compute(obj)
    _check_workers(obj)
    _check_placement(cp, obj)
    record = {"object": obj, "releases": [[1, time.time(), obj["image"]]], "template": None}
    spec_for(cp, record)
    record["template"] = templates.create_bound(cp, obj)
    _save(cp, record)
    return json_response(shown(obj, request), 201)


def _memory(cpu: dict[str, Any]) -> int:
    """§2.3: memory = the flavour's RAM per vCPU x vCPUs (GB)."""
    flavor = rp.CPU_FLAVORS.get(cpu["id"])
    return int(flavor.ram_gb_per_vcpu * cpu["vcpuCount"]) if flavor else 0


async def get_endpoint(cp: ControlPlane, request: Request, body: Any) -> Response:
    return json_response(shown(_record(cp, request.path_params["id"])["object"], request))


async def update_endpoint(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    body = check(UPDATE, body)
    _check_cpu_counts(body)
    old = record["object"]
    obj = {**old, "workers": dict(old["workers"])}
    if "gpu" in body and "cpu" in body:
        raise Problem(400, "give gpu or cpu, not both")
    if ("gpu" in body and "cpu" in old) or ("cpu" in body and "gpu" in old):
        raise Problem(400, "an endpoint keeps its compute family: gpu on a CPU endpoint (or cpu "
                           "on a GPU endpoint) cannot be set; create another endpoint")
    container = body
    if "templateId" in body:
        container = _apply_template(obj, _template(cp, body["templateId"]), body)
    apply_container(obj, container)
    if "name" in body:
        obj["name"] = body["name"]
    if "gpu" in body:
        obj["gpu"] = _patched_gpu(old["gpu"], body["gpu"])
    if "cpu" in body:  # replaces the whole list (§2.5)
        obj["cpu"] = [{"id": c["id"], "vcpuCount": c["vcpuCount"],
                       "memory": _memory(c)} for c in body["cpu"]]
    obj["workers"].update(body.get("workers", {}))
    for key in ("scaling", "dataCenterIds", "networkVolumes", "timeout", "flashboot"):
        if key in body:
            obj[key] = body[key]
    _check_scaling(obj, body)
    _check_compute(obj)
    _check_workers(obj)
    _check_placement(cp, obj)
    if any(obj.get(k) != old.get(k) for k in RELEASE_FIELDS):
        record["releases"].append([record["releases"][-1][0] + 1, time.time(), obj["image"]])
    record["object"] = obj
    _save(cp, record)
    return json_response(shown(obj, request))


async def delete_endpoint(cp: ControlPlane, request: Request, body: Any) -> Response:
    """Workers stopped, queued and running jobs cancelled, the bound template deleted (§2.1);
    jobs sent to it afterwards get the job API's 404."""
    record = _record(cp, request.path_params["id"])
    endpoint_id = record["object"]["id"]
    if endpoint_id in cp.engine.endpoints:
        cp.engine.delete_endpoint(endpoint_id)
    if record.get("template"):
        templates.delete_bound(cp, record["template"])
    cp.store.delete_resource(ENDPOINT, endpoint_id)
    return Response(status_code=204)


# -- workers (§2.6) -------------------------------------------------------------------------------

_STATUS = {"running": "RUNNING", "idle": "IDLE", "initializing": "INITIALIZING",
           "unhealthy": "UNHEALTHY"}


def _release_of(record: dict[str, Any], started: float) -> list:
    """The release a worker started under: the last one made before it started."""
    current = record["releases"][0]
    for release in record["releases"]:
        if release[1] <= started:
            current = release
    return current


def workers_of(cp: ControlPlane, record: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    """``(engine worker, API worker object)`` of an endpoint's live workers, oldest first."""
    obj = record["object"]
    version = record["releases"][-1][0]
    gpu = obj.get("gpu")
    volumes = [volume_object(cp, v) for v in obj["networkVolumes"]]
    dc = (obj["dataCenterIds"] or [v["dataCenter"] for v in volumes if v] or [None])[0]
    now = time.time()
    out = []
    workers = sorted((w for w in cp.engine.workers.values() if w.endpoint == obj["id"]),
                     key=lambda w: w.created_at)
    for w in workers:
        release = _release_of(record, w.created_at)
        out.append((w, {
            "id": w.id, "status": _STATUS.get(w.state, "UNHEALTHY"),
            "isStale": release[0] != version, "version": release[0],
            "gpuCount": gpu["count"] if gpu else 0, "image": release[2],
            "uptimeSeconds": None if w.placeholder else int(now - w.created_at),
            "gpuTypeId": _gpu_types(gpu)[0] if gpu else None, "dataCenterId": dc,
            "startedAt": None if w.placeholder else rfc3339(w.created_at),
        }))
    return out


async def list_workers(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    workers = [shown_worker for _, shown_worker in workers_of(cp, record)]
    summary = {key: 0 for key in ("running", "idle", "initializing", "throttled", "unhealthy")}
    for w in workers:
        summary[w["status"].lower()] += 1
    summary["total"] = len(workers)
    return json_response({"endpointVersion": record["releases"][-1][0], "summary": summary,
                          "workers": workers})
