"""``/v2/pods``: Pods (runpod-rest-v2.md §4), each a real process standing for its container.

The API object follows §4.2-§4.5 (the v2 names: ``status`` + ``actions``, ``cost``,
``runtime.ports``; v1's ``desiredStatus``, ``costPerHr``, ``publicIp``, ``portMappings``,
``machine`` are gone in v2, §8). The process is ``pod_runner.py``'s: the Pod's start command
(``args`` or ``entrypoint``/``cmd``) in its image's environment, else the image's own command
(``images.py``: an official image needs a start command; a mapped image runs its mapping), with
a private container disk as HOME kept while the Pod exists, its volume as
``RPREMOTE_VOLUME_MOUNT``, its ports mapped to free 127.0.0.1 ports (``RPREMOTE_PORT_MAP``,
shown in ``runtime.ports``), the platform's env (§4.9, ``pod_env``). The proxy in front of
its ``/http`` ports is ``pod_proxy.py``, at ``/pod-proxy/{id}-{port}/...``.

What a Pod's process gets (its own ``env`` first; the platform's names win):
- §4.9: ``RUNPOD_POD_ID``, ``RUNPOD_POD_HOSTNAME`` (``<id>-local``), ``RUNPOD_DC_ID``,
  ``RUNPOD_GPU_COUNT`` (0 on a CPU Pod), ``RUNPOD_CPU_COUNT``, ``RUNPOD_PUBLIC_IP``
  (127.0.0.1), ``RUNPOD_TCP_PORT_<port>`` per ``/tcp`` port (its host port),
  ``RUNPOD_VOLUME_ID`` with a network volume, ``RUNPOD_API_KEY`` (pod-scoped), and for an
  official image on a GPU ``CUDA_VERSION`` / ``PYTORCH_VERSION``; no ``PUBLIC_KEY`` or
  ``JUPYTER_PASSWORD`` (no SSH, no Jupyter here);
- the emulator's: ``RUNPOD_API_BASE_URL`` and ``RPREMOTE_RUNPOD_API`` (this control plane: a
  Pod stops itself through it), ``RPREMOTE_PORT_MAP`` (``{"8000": 41234}``: bind
  127.0.0.1:41234 for the Pod's port 8000), ``RPREMOTE_VOLUME_MOUNT`` (the directory standing
  for its volume, network or persistent) with ``RPREMOTE_VOLUME_PATH`` (the path it stands
  for, e.g. ``/workspace``), HOME = its container disk; nothing else of the emulator's
  ``RPREMOTE_*``/``RUNPOD_*``/``XDG_*`` environment.

Status: ``PROVISIONING`` in the create answer (the process starts right after it); then
``RUNNING`` while the process is up, ``STARTING`` while an exited process waits for its
restart (§4.9: exiting does not stop a Pod), ``EXITED`` after stop, ``ERROR`` when its image
cannot run here (an official image of another Python, or with no start command: its own
command starts RunPod's Pod services, which the emulator cannot stand for). Actions follow
§4.4's table (the text, not the create example: CONFLICT §9.1.6); anything else is a 409.

Choices where the sources are silent or disagree:
- stop keeps the container disk (rest-v2 §4.4 "keeps disk"; CONFLICT: runpod-contract.md §4.4
  says a stop clears the container disk and keeps only ``/workspace``, i.e. the volume).
- the pod-scoped ``RUNPOD_API_KEY`` (GAP §9.2) is accepted for the Pod's own GET, action,
  DELETE and logs; for anything else, or another Pod, it gets 403 ``access denied``.
- an unknown GPU type id is a 400 (GAP; the client's next-candidate signal, §4.6), as is a
  Pod that does not fit the capacity ``rpremote serve --pod-capacity`` gives (§4.6, with the
  capacity sentence of §1.4); ``start`` of an EXITED Pod checks capacity again.
- an image the emulator cannot run at all is a 422 at create (OBSERVED, §1.5: a missing image).
- ``cost``: RunPod's Pod prices are not documented (§6, ``catalog.py`` shows them null); the
  emulator shows the GPU type's pool's Serverless *active* price per hour (else its flex
  price, else ``POD_GPU_USD_HR_DEFAULT``) times the GPU count, and
  ``CPU_POD_USD_PER_VCPU_HR`` per vCPU for CPU Pods: stand-ins, never billing.
- ``GET /v2/pods`` has no server-side filters (§4.1: ``name=`` and other unknown query
  parameters are ignored, OBSERVED §1.3); cursor pagination as §1.6.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import shlex
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ... import platform as rp
from ..pod_runner import PodEvent, PodLaunch, PodRunner
from . import templates
from .catalog import MAX_COUNT
from .container import CONTAINER_FIELDS, CONTAINER_PROPS, apply_container
from .logs import _frame, _params
from .paging import page
from .plane import POD, ControlPlane, json_response, rfc3339
from .problems import Problem, invalid, not_found
from .schema import Arr, Bool, Int, Obj, Str, check
from .volumes import volume_dir, volume_object

CLOUDS = ("SECURE", "COMMUNITY")
CUDA = r"^\d+\.\d+$"
ACTIONS = ("start", "stop", "restart", "terminate")
# §4.4: what each status allows.
ALLOWED = {"PROVISIONING": ["stop", "terminate"], "STARTING": ["stop", "terminate"],
           "RUNNING": ["stop", "restart", "terminate"], "EXITED": ["start", "terminate"],
           "ERROR": ["start", "terminate"]}
# §1.4 (OBSERVED): RunPod's words when no machine has the requested GPUs.
NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")
DEFAULT_DATA_CENTER = "US-KS-2"   # where a Pod without dataCenterIds or volume is placed
PUBLIC_IP = "127.0.0.1"           # every Pod's "public" address here
POD_GPU_USD_HR_DEFAULT = 1.0      # GPU types without a Serverless price (see the docstring)
CPU_POD_USD_PER_VCPU_HR = 0.02
GPU_VCPUS, GPU_RAM_GB = 16, 64    # per GPU, when minVcpuCountPerGpu / minRamPerGpu say less
DEFAULT_CUDA = "12.8"

_GPU = Obj({"id": Str(min_len=1), "count": Int(minimum=1),
            "allowedCudaVersions": Arr(Str(pattern=CUDA), unique=True),
            "minCudaVersion": Str(pattern=CUDA),
            "minRamPerGpu": Int(minimum=1), "minVcpuCountPerGpu": Int(minimum=1)},
           required=("id",))
_CPU = Obj({"id": Str(min_len=1), "vcpuCount": Int(minimum=2)}, required=("id", "vcpuCount"))
_PERSISTENT = Obj({"size": Int(minimum=10), "path": Str(min_len=1)}, required=("size", "path"))
_NETWORK = Arr(Obj({"volumeId": Str(min_len=1), "path": Str(min_len=1)},
                   required=("volumeId", "path")), max_items=1)
MOUNTS = Obj({"persistent": _PERSISTENT, "network": _NETWORK})
CREATE = Obj({
    "name": Str(min_len=1), "templateId": Str(min_len=1), "gpu": _GPU, "cpu": _CPU,
    "cloud": Str(enum=CLOUDS), "dataCenterIds": Arr(Str(min_len=1), unique=True),
    "mounts": MOUNTS, "globalNetworking": Bool(), "startSsh": Bool(), "startJupyter": Bool(),
    **CONTAINER_PROPS,
}, required=("name",))
UPDATE = Obj({"name": Str(min_len=1), "templateId": Str(min_len=1), "mounts": MOUNTS,
              "locked": Bool(), "globalNetworking": Bool(), **CONTAINER_PROPS})
ACTION = Obj({"action": Str(enum=ACTIONS)}, required=("action",))
# Fields whose change restarts a running container (runpod-contract.md §4.4: editing a Pod
# restarts it).
RESTART_FIELDS = (*CONTAINER_FIELDS, "entrypoint", "cmd", "mounts", "globalNetworking")


class PodService:
    """The Pods' processes, and which pod-scoped key belongs to which Pod."""

    def __init__(self, runner: PodRunner):
        self.runner = runner
        self.keys: dict[str, str] = {}  # pod-scoped key -> pod id

    def owner_of(self, token: str) -> str | None:
        """The Pod whose own ``RUNPOD_API_KEY`` ``token`` is, or None."""
        for key, pod_id in self.keys.items():
            if hmac.compare_digest(token.encode(), key.encode()):
                return pod_id
        return None


def _service(cp: ControlPlane) -> PodService:
    assert cp.pods is not None, "the control plane was made without Pods"
    return cp.pods


def _record(cp: ControlPlane, request: Request) -> dict[str, Any]:
    pod_id = request.path_params["id"]
    scope = getattr(request.state, "pod_scope", None)
    if scope is not None and scope != pod_id:
        raise Problem(403, "access denied: a pod-scoped API key (RUNPOD_API_KEY inside a Pod) "
                           "acts on its own Pod only")
    record = cp.store.resource(POD, pod_id)
    if record is None:
        raise not_found("pod", pod_id)
    return record


def _save(cp: ControlPlane, record: dict[str, Any]) -> None:
    cp.store.put_resource(POD, record["object"]["id"], record)


def _new_id(cp: ControlPlane) -> str:
    while True:
        pod_id = cp.new_id(14)
        if cp.store.resource(POD, pod_id) is None:
            return pod_id


# -- the object --------------------------------------------------------------------------------

def status_of(cp: ControlPlane, record: dict[str, Any]) -> str:
    stored = record["status"]
    if stored != "RUNNING":
        return stored
    state = _service(cp).runner.state(record["object"]["id"])
    return {"running": "RUNNING", "restarting": "STARTING"}.get(state, "PROVISIONING")


def _cost(obj: dict[str, Any]) -> float:
    gpu, cpu = obj.get("gpu"), obj.get("cpu")
    if cpu is not None:
        return round(CPU_POD_USD_PER_VCPU_HR * cpu["vcpuCount"], 4)
    gpu_type = rp.GPU_TYPES.get(gpu["id"])
    pool = rp.GPU_POOLS.get(gpu_type.pool) if gpu_type and gpu_type.pool else None
    per_s = pool and (pool.active_usd_per_s or pool.flex_usd_per_s)
    per_hr = per_s * 3600 if per_s else POD_GPU_USD_HR_DEFAULT
    return round(per_hr * gpu["count"], 4)


def shown(cp: ControlPlane, record: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The Pod as the API returns it (§4.3)."""
    obj = record["object"]
    status = status or status_of(cp, record)
    runner = _service(cp).runner
    runtime = None
    if status == "RUNNING":
        pp = runner.procs.get(obj["id"])
        started = pp.first_started_at if pp and pp.first_started_at else time.time()
        count = obj["gpu"]["count"] if obj.get("gpu") else 0
        runtime = {
            "uptime": int(time.time() - started),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(count)],
            "cpu": {"util": 0}, "memory": {"util": 0},
            # GAP (§4.7): whether /http ports are listed here; the schema's example has one,
            # and the emulator's mapped ports must be findable: all are.
            "ports": [{"private": port, "public": runner.host_port(obj["id"], port),
                       "type": kind, "ip": PUBLIC_IP} for port, kind in _ports(obj)],
        }
    out: dict[str, Any] = {"id": obj["id"], "name": obj["name"], "status": status,
                           "actions": list(ALLOWED[status])}
    for key in ("image", "args", "entrypoint", "cmd", "disk", "mounts", "ports", "env",
                "registry"):
        out[key] = obj[key]
    out["gpu" if "gpu" in obj else "cpu"] = obj.get("gpu") or obj.get("cpu")
    out.update({
        "cloud": obj["cloud"], "dataCenterId": obj["dataCenterId"],
        "cudaVersion": obj["cudaVersion"],
        "ssh": {"proxy": None, "direct": None},  # the emulator serves no SSH
        "template": None,  # CONFLICT §9.1.8: the text says it stays null
        "cost": _cost(obj) if status in ("RUNNING", "STARTING", "PROVISIONING") else 0.0,
        "locked": obj["locked"], "globalNetworking": obj["globalNetworking"],
        "runtime": runtime, "createdAt": obj["createdAt"], "startedAt": obj["startedAt"],
    })
    return out


def _ports(obj: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for spec in obj["ports"]:
        port, kind = spec.split("/")
        out.append((int(port), kind))
    return out


# -- the process ---------------------------------------------------------------------------------

def pod_env(cp: ControlPlane, record: dict[str, Any]) -> dict[str, str]:
    """What a Pod's process gets besides its own ``env`` (§4.9, [D-ENV]); the runner adds
    ``RPREMOTE_PORT_MAP``, ``RUNPOD_TCP_PORT_<port>``, ``RPREMOTE_VOLUME_MOUNT`` and HOME."""
    obj = record["object"]
    gpu, cpu = obj.get("gpu"), obj.get("cpu")
    base = cp.engine.base_url
    env = {
        "RUNPOD_POD_ID": obj["id"],
        "RUNPOD_POD_HOSTNAME": f"{obj['id']}-local",
        "RUNPOD_DC_ID": obj["dataCenterId"],
        "RUNPOD_GPU_COUNT": str(gpu["count"] if gpu else 0),
        "RUNPOD_CPU_COUNT": str(gpu["vcpuCount"] if gpu else cpu["vcpuCount"]),
        "RUNPOD_PUBLIC_IP": PUBLIC_IP,
        "RUNPOD_API_KEY": record["key"],  # pod-scoped: its own GET, stop, terminate
        # The control plane this Pod's code talks to: the emulator's (the official SDK reads
        # RUNPOD_API_BASE_URL, rpremote RPREMOTE_RUNPOD_API; on RunPod both are unset).
        "RUNPOD_API_BASE_URL": base,
        "RPREMOTE_RUNPOD_API": base,
    }
    mounts = obj["mounts"]
    if mounts.get("network"):
        env["RUNPOD_VOLUME_ID"] = mounts["network"][0]["volumeId"]
        env["RPREMOTE_VOLUME_PATH"] = mounts["network"][0]["path"]
    elif mounts.get("persistent"):
        env["RPREMOTE_VOLUME_PATH"] = mounts["persistent"]["path"]
    official = rp.official_image(obj["image"])
    if official is not None and gpu:
        env["CUDA_VERSION"] = official.cuda
        env["PYTORCH_VERSION"] = official.torch
    return {**obj["env"], **env}


def _launch(cp: ControlPlane, record: dict[str, Any]) -> PodLaunch | str:
    """How the Pod's process starts, or why it cannot."""
    obj = record["object"]
    start_command = [*obj["entrypoint"], *obj["cmd"]]
    start = cp.images.start(obj["image"], start_command, cp.engine.state_dir)
    if start.error:
        return start.error
    command = start.command
    if start_command and start.python_env is None:
        # A mapped image (--image NAME=COMMAND, rpremote's worker image): COMMAND stands for
        # the image's own command, which a Pod's start command replaces, as Docker's CMD is;
        # `python` in it is the emulator's interpreter, the mapped image's Python.
        command = shlex.join(start_command)
    mounts = obj["mounts"]
    volume = None
    if mounts.get("network"):
        volume = str(volume_dir(cp.engine.state_dir, mounts["network"][0]["volumeId"]))
    elif mounts.get("persistent"):
        volume = str(_service(cp).runner.persistent_dir(obj["id"]))
    return PodLaunch(pod_id=obj["id"], command=command, python_env=start.python_env,
                     env=pod_env(cp, record), ports=_ports(obj), volume_dir=volume)


def _run(cp: ControlPlane, record: dict[str, Any]) -> None:
    """Start the Pod's process (the record says RUNNING, or ERROR with the reason)."""
    runner = _service(cp).runner
    launch = _launch(cp, record)
    obj = record["object"]
    if isinstance(launch, str):
        record["status"], record["error"] = "ERROR", launch
        runner.say(obj["id"], f"container cannot start: {launch}")
    else:
        record["status"], record["error"] = "RUNNING", None
        runner.start(launch)
        obj["startedAt"] = rfc3339()
    _save(cp, record)


def reconcile(cp: ControlPlane) -> None:
    """At start: the keys of stored Pods, and the RUNNING ones running again (their
    processes ended with the emulator that ran them)."""
    service = _service(cp)
    for _, record in cp.store.resources(POD):
        service.keys[record["key"]] = record["object"]["id"]
        if record["status"] == "RUNNING" and service.runner.state(record["object"]["id"]) == "none":
            _run(cp, record)


# -- checks --------------------------------------------------------------------------------------

def _check_image(cp: ControlPlane, obj: dict[str, Any]) -> None:
    """An image the emulator can run in no way is refused as RunPod refuses a missing image
    (422, OBSERVED §1.5); an official one it cannot run now makes an ERROR Pod instead."""
    if obj["image"] is None:
        raise invalid(["$: missing property 'image'"])
    if rp.official_image(obj["image"]) is None:
        error = cp.images.start(obj["image"], [], cp.engine.state_dir).error
        if error:
            raise invalid([f"$.image: {error}"])


def _check_compute(body: dict[str, Any]) -> None:
    gpu, cpu = body.get("gpu"), body.get("cpu")
    if (gpu is None) == (cpu is None):
        raise Problem(400, "give exactly one of gpu (a GPU type id) and cpu (a CPU flavour)")
    if gpu is not None:
        if gpu["id"] not in rp.GPU_TYPES:
            raise Problem(400, f"gpu.id {gpu['id']!r} is not a GPU type id (e.g. \"NVIDIA "
                               "GeForce RTX 4090\"); GET /v2/catalog/gpus lists them")
        if gpu.get("count", 1) > MAX_COUNT:
            raise Problem(400, f"gpu.count {gpu['count']} is more than the {MAX_COUNT} GPUs "
                               f"of the largest machine of {gpu['id']}")
        if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
            raise Problem(400, "give gpu.allowedCudaVersions or gpu.minCudaVersion, not both")
        return
    if cpu["vcpuCount"] & (cpu["vcpuCount"] - 1):
        raise invalid([f"$.cpu.vcpuCount: {cpu['vcpuCount']} is not a power of two"])
    flavor = rp.CPU_FLAVORS.get(cpu["id"])
    if flavor is None:
        raise Problem(400, f"cpu.id {cpu['id']!r} is not a CPU flavour; use one of "
                           f"{', '.join(rp.CPU_FLAVORS)}")
    if not flavor.vcpu_min <= cpu["vcpuCount"] <= flavor.vcpu_max:
        raise Problem(400, f"cpu.vcpuCount must be {flavor.vcpu_min}-{flavor.vcpu_max} for "
                           f"{flavor.id}")


def _cuda(gpu: dict[str, Any]) -> str:
    allowed = gpu.get("allowedCudaVersions") or []
    if allowed:
        return max(allowed, key=lambda v: tuple(map(int, v.split("."))))
    low = gpu.get("minCudaVersion")
    if low and tuple(map(int, low.split("."))) > tuple(map(int, DEFAULT_CUDA.split("."))):
        return max(rp.CUDA_VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    return DEFAULT_CUDA


def _check_mounts(cp: ControlPlane, mounts: dict[str, Any], cpu: bool) -> dict[str, Any]:
    """The mount rules of §4.2; the mounts as stored (``{}`` when none)."""
    if mounts.get("persistent") and mounts.get("network"):
        raise Problem(400, "mounts.persistent and mounts.network are mutually exclusive")
    if mounts.get("persistent") and cpu:
        raise Problem(400, "a CPU Pod takes no persistent mount; use a network volume")
    for entry in mounts.get("network") or []:
        if volume_object(cp, entry["volumeId"]) is None:
            raise not_found("network volume", entry["volumeId"])
    return {k: v for k, v in mounts.items() if v}


def _place(cp: ControlPlane, body: dict[str, Any], mounts: dict[str, Any]) -> str:
    """The Pod's data center: its network volume's, else the first of ``dataCenterIds``."""
    wanted = body.get("dataCenterIds") or []
    unknown = [d for d in wanted if d not in rp.DATA_CENTERS]
    if unknown:
        raise Problem(400, f"unknown data center(s) {', '.join(unknown)}; known: "
                           f"{', '.join(rp.DATA_CENTERS)}")
    if mounts.get("network"):
        entry = mounts["network"][0]
        dc = volume_object(cp, entry["volumeId"])["dataCenter"]
        if wanted and dc not in wanted:
            raise Problem(400, f"network volume {entry['volumeId']} is in {dc}, outside the "
                               f"Pod's dataCenterIds ({', '.join(wanted)}); a volume mounts "
                               "only in its own data center")
        return dc
    return wanted[0] if wanted else DEFAULT_DATA_CENTER


def _global_networking(obj: dict[str, Any], enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {"enabled": False}
    gpu = obj.get("gpu")
    if not gpu or not gpu["id"].startswith(("NVIDIA", "Tesla")):
        raise Problem(400, "globalNetworking needs an NVIDIA GPU Pod")
    if not rp.DATA_CENTERS[obj["dataCenterId"]].global_network:
        having = [d.id for d in rp.DATA_CENTERS.values() if d.global_network]
        raise Problem(400, f"data center {obj['dataCenterId']} has no global networking; "
                           f"these do: {', '.join(having)}")
    return {"enabled": True, "ip": None, "internalDns": f"{obj['id']}.runpod.internal"}


def _check_capacity(cp: ControlPlane, obj: dict[str, Any]) -> None:
    """§4.6: no machine with the GPUs (``--pod-capacity``) is RunPod's capacity 400."""
    gpu = obj.get("gpu")
    if gpu is None:
        return
    free = _service(cp).runner.settings.capacity.get(gpu["id"])
    if free is None:
        return
    used = sum(r["object"]["gpu"]["count"] for _, r in cp.store.resources(POD)
               if r["object"]["id"] != obj["id"] and r["status"] == "RUNNING"
               and (r["object"].get("gpu") or {}).get("id") == gpu["id"])
    if used + gpu["count"] > free:
        raise Problem(400, NO_CAPACITY)


def _template(cp: ControlPlane, template_id: str) -> dict[str, Any]:
    tpl = templates.template_object(cp, template_id)
    if tpl is None:
        raise not_found("template", template_id)
    if tpl["serverless"]:
        raise invalid([f"$.templateId: template {template_id} is a serverless template; a Pod "
                       "takes a pod template (\"serverless\": false)"])
    return tpl


# -- routes ----------------------------------------------------------------------------------------

async def list_pods(cp: ControlPlane, request: Request, body: Any) -> Response:
    include = request.query_params.get("includeClusterPods")
    if include is not None and include not in ("true", "false"):
        raise invalid([f"query.includeClusterPods: got '{include}', want boolean"])
    records, pagination = page(cp.store, POD, "pods", request)
    return json_response({"pods": [shown(cp, r) for r in records], "pagination": pagination})


async def create_pod(cp: ControlPlane, request: Request, body: Any) -> Response:
    body = check(CREATE, body)
    if "image" not in body and "templateId" not in body:
        raise invalid(["$: missing property 'image'"])
    _check_compute(body)
    pod_id = _new_id(cp)
    obj: dict[str, Any] = {"id": pod_id, "name": body["name"], "image": None, "args": "",
                           "entrypoint": [], "cmd": [], "disk": rp.REST_DISK_DEFAULT_GB,
                           "mounts": {}, "ports": [], "env": {}, "registry": None}
    container, mounts = body, body.get("mounts", {})
    tpl = _template(cp, body["templateId"]) if "templateId" in body else None
    if tpl is not None:  # one-shot copy; the body wins, env merged (§4.2)
        for key in ("image", "args", "disk", "ports", "registry"):
            obj[key] = tpl[key]
        obj["env"] = dict(tpl["env"])
        container = {**body, "env": {**tpl["env"], **body.get("env", {})}}
        if "mounts" not in body and tpl["mounts"].get("persistent"):
            mounts = {"persistent": dict(tpl["mounts"]["persistent"])}
    apply_container(obj, container)
    _check_image(cp, obj)
    gpu = body.get("gpu")
    if gpu is not None:
        gpu = dict(gpu)
        if tpl and tpl["allowedCudaVersions"] and not (
                "allowedCudaVersions" in gpu or "minCudaVersion" in gpu):
            gpu["allowedCudaVersions"] = list(tpl["allowedCudaVersions"])
        count = gpu.setdefault("count", 1)
        gpu["vcpuCount"] = max(GPU_VCPUS, gpu.get("minVcpuCountPerGpu", 0)) * count
        gpu["memory"] = max(GPU_RAM_GB, gpu.get("minRamPerGpu", 0)) * count
        obj["gpu"] = gpu
    else:
        cpu = body["cpu"]
        flavor = rp.CPU_FLAVORS[cpu["id"]]
        obj["cpu"] = {"id": cpu["id"], "vcpuCount": cpu["vcpuCount"],
                      "memory": int(flavor.ram_gb_per_vcpu * cpu["vcpuCount"])}
    obj["mounts"] = _check_mounts(cp, mounts, cpu=gpu is None)
    obj["cloud"] = body.get("cloud", "SECURE")
    obj["dataCenterId"] = _place(cp, body, obj["mounts"])
    obj["cudaVersion"] = _cuda(gpu) if gpu else None
    obj["locked"] = False
    obj["globalNetworking"] = _global_networking(obj, body.get("globalNetworking", False))
    obj["createdAt"] = rfc3339()
    obj["startedAt"] = None
    _check_capacity(cp, obj)
    record = {"object": obj, "status": "RUNNING", "error": None,
              "key": "rpa_pod_" + secrets.token_urlsafe(30)}
    _save(cp, record)
    _service(cp).keys[record["key"]] = pod_id
    answer = shown(cp, record, "PROVISIONING")  # §4.1: create is async, starts PROVISIONING
    _run(cp, record)
    return json_response(answer, 201)


async def get_pod(cp: ControlPlane, request: Request, body: Any) -> Response:
    return json_response(shown(cp, _record(cp, request)))


async def update_pod(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request)
    if getattr(request.state, "pod_scope", None) is not None:
        raise Problem(403, "access denied: a pod-scoped API key can read, stop, restart and "
                           "terminate its own Pod, not edit it")
    body = check(UPDATE, body)
    old = record["object"]
    obj = {**old, "env": dict(old["env"])}
    container = body
    if "templateId" in body:  # one-shot; mounts not applied; env replaces (§4.5)
        tpl = _template(cp, body["templateId"])
        for key in ("image", "args", "disk", "ports", "registry"):
            obj[key] = tpl[key]
        obj["env"] = dict(tpl["env"])
        container = {k: v for k, v in body.items() if k != "templateId"}
    apply_container(obj, container)
    _check_image(cp, obj)
    if "name" in body:
        obj["name"] = body["name"]
    if "locked" in body:
        obj["locked"] = body["locked"]
    if body.get("mounts"):
        obj["mounts"] = _patched_mounts(cp, old["mounts"], body["mounts"])
    if "globalNetworking" in body:
        obj["globalNetworking"] = _global_networking(obj, body["globalNetworking"])
    record["object"] = obj
    changed = any(obj.get(k) != old.get(k) for k in RESTART_FIELDS)
    if changed and record["status"] == "RUNNING":
        await _service(cp).runner.stop(obj["id"])  # the edit restarts the container
        _run(cp, record)
    else:
        _save(cp, record)
    return json_response(shown(cp, record))


def _patched_mounts(cp: ControlPlane, old: dict[str, Any], patch: dict[str, Any]) -> dict:
    """§4.5's mount rules: ``{}`` unchanged; no new kind; no new volume; ``path`` may change."""
    if "network" in patch and not patch["network"]:
        raise Problem(400, "mounts.network: [] cannot detach a network volume; terminate the "
                           "Pod to release it")
    new = {k: v for k, v in old.items()}
    for kind in ("persistent", "network"):
        if kind not in patch:
            continue
        if kind not in old:
            raise Problem(400, f"mounts.{kind}: the Pod was created without a {kind} mount; "
                               "a mount kind can only be added at create")
        if kind == "network" and patch["network"][0]["volumeId"] != old["network"][0]["volumeId"]:
            raise Problem(400, "mounts.network[0].volumeId cannot change; only its path can")
        if kind == "persistent" and patch["persistent"]["size"] < old["persistent"]["size"]:
            raise Problem(400, "mounts.persistent.size cannot decrease")
        new[kind] = patch[kind]
    return new


async def pod_action(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request)
    action = check(ACTION, body)["action"]
    obj = record["object"]
    status = status_of(cp, record)
    if action not in ALLOWED[status]:
        raise Problem(409, f"pod {obj['id']} is {status}: {action} is not allowed now (it "
                           f"allows {', '.join(ALLOWED[status])})")
    runner = _service(cp).runner
    if action == "terminate":
        await _terminate(cp, record)
        return Response(status_code=204)
    if action == "stop":
        if obj["locked"]:
            raise Problem(409, f"pod {obj['id']} is locked; PATCH locked: false to stop it")
        record["status"] = "EXITED"
        _save(cp, record)
        await runner.stop(obj["id"])
    elif action == "start":
        _check_capacity(cp, obj)
        _run(cp, record)
    else:  # restart: in place, on the same disk; ports change (§4.7)
        await runner.stop(obj["id"])
        _run(cp, record)
    return json_response(shown(cp, record))


async def _terminate(cp: ControlPlane, record: dict[str, Any]) -> None:
    """The process ends, its disk and persistent mount go; a network volume is only
    detached (§4.1)."""
    pod_id = record["object"]["id"]
    service = _service(cp)
    service.keys.pop(record["key"], None)
    cp.store.delete_resource(POD, pod_id)
    await service.runner.remove(pod_id)


async def delete_pod(cp: ControlPlane, request: Request, body: Any) -> Response:
    await _terminate(cp, _record(cp, request))
    return Response(status_code=204)


# -- logs (§4.8) ---------------------------------------------------------------------------------

class _Lines:
    """Complete lines appended to a Pod's log file since the last read, with the offset
    each starts at."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[tuple[int, str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        start = self.offset - len(self.partial)
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        out = []
        for raw in lines:
            out.append((start, raw.decode("utf-8", "replace").rstrip("\r")))
            start += len(raw) + 1
        return out


async def pod_logs(cp: ControlPlane, request: Request, body: Any) -> Response:
    """The Pod's log as SSE: ``container`` lines are its process's output (all its runs),
    ``system`` lines the emulator's about it (started, exited and restarted, stopped).
    Follows the log until the Pod is terminated."""
    record = _record(cp, request)
    pod_id = record["object"]["id"]
    runner = _service(cp).runner
    source, tail, since, resume = _params(request)
    log = _Lines(runner.log_path(pod_id))

    def merged(events: list[PodEvent], lines: list[tuple[int, str]],
               now: float) -> list[tuple[float, str, str]]:
        """System and container lines in the order they happened: a system line goes before
        the container lines printed after it; a container line's time is the next system
        line's (the log file keeps none of its own), else ``now``."""
        items = sorted([(e.offset, 0, e.ts, "system", e.line) for e in events]
                       + [(offset, 1, 0.0, "container", line) for offset, line in lines])
        out, later = [], now
        for _, _, ts, src, line in reversed(items):
            later = ts if src == "system" else later
            out.append((ts if src == "system" else later, src, line))
        return out[::-1]

    async def stream() -> AsyncIterator[str]:
        said = list(runner.events.get(pod_id, []))
        last = said[-1].n if said else 0
        path = runner.log_path(pod_id)
        mtime = path.stat().st_mtime if path.exists() else time.time()
        seq = 0
        out = []
        for ts, src, line in merged(said, log.read(), mtime):
            seq += 1
            if (source in (None, src) and (since is None or ts >= since)
                    and (resume is None or seq > resume)):
                out.append(_frame(seq, ts, src, line))
        if resume is None:
            out = out[-tail:] if tail else []
        for frame in out:
            yield frame
        beat = time.monotonic()
        while cp.store.resource(POD, pod_id) is not None and not cp.engine.closing:
            said = [e for e in runner.events.get(pod_id, []) if e.n > last]
            last = said[-1].n if said else last
            for ts, src, line in merged(said, log.read(), time.time()):
                seq += 1
                if source in (None, src) and (resume is None or seq > resume):
                    yield _frame(seq, ts, src, line)
            if time.monotonic() - beat > 15:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

