"""The ``pod`` target: one warm GPU Pod running ``rpremote serve``, reached through its proxy.

``up`` creates the Pod through REST v2 (``/v2/pods``): an image with this client's Python
(the Serverless target's choice, ``runpod_image.py``) whose start command brings rpremote and
runs ``rpremote serve`` on port 8000 with a key made for this Pod, ``--idle-stop`` and
``--max-hours``: **the Pod stops itself** (``local/pod_self.py``), so a closed notebook never
leaves a GPU billing. The Pod is found again by listing (its name and the ``RPREMOTE_MANAGED``
mark in its env), never from a local file, so every process of the user shares it; its key
is read from its env through the API, and travels only in an ``Authorization`` header.

The server in the Pod is the emulator, so the target is the local one at another address:
the same ``QueueClient``, endpoint specs (``LocalEmulator.ensure_endpoint``) and offload
store over HTTP, through ``RPREMOTE_POD_PROXY`` (default RunPod's
``https://{pod_id}-{port}.proxy.runpod.net``; the rehearsal's emulator serves one). RunPod's
proxy ends a response after 100 s (524): every long-poll here is held seconds, not minutes.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from typing import Any, Callable

import httpx

from .. import config
from .. import platform as rp
from ..blobs import HttpStore, Shipper
from ..errors import (ConfigError, ControlPlaneError, InvalidRequest, RpremoteError,
                      TargetNotAvailable)
from ..resources import Resources
from . import runpod_image, stores
from .control.ours import MANAGED_ENV, oldest
from .control.plane import BASE_URL_SETTING, ControlPlane, base_url_setting
from .local import LocalEmulator
from .queue import QueueClient
from .runpod import log_tail

POD_NAME = "rpremote-pod"
PORT = 8000
PROXY_SETTING = "RPREMOTE_POD_PROXY"
PROXY_DEFAULT = "https://{pod_id}-{port}.proxy.runpod.net"
SERVER_KEY_ENV = "RPREMOTE_API_KEY"  # the Pod's server key (rpremote serve reads it)
IDLE_STOP_DEFAULT = "30m"
READY_TIMEOUT_S = 20 * 60
WORKER_CMD = "python -m rpremote.executor"  # inside the Pod: its own Python
_AVAILABILITY_RANK = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


class PodStopped(TargetNotAvailable):
    """rpremote's Pod exists but is not running (its idle stop, its budget, or you)."""


def proxy_url(pod_id: str, port: int = PORT) -> str:
    template = os.environ.get(PROXY_SETTING, "").strip() or PROXY_DEFAULT
    return template.format(pod_id=pod_id, port=port).rstrip("/")


def say(text: str) -> None:
    if not config.settings().quiet:
        print(f"rpremote: {text}", file=sys.stderr, flush=True)


def find(plane: ControlPlane, name: str = POD_NAME) -> dict[str, Any] | None:
    """rpremote's Pod called ``name`` under this key (the oldest, were there several)."""
    pods = [p for p in plane.request("GET", "/v2/pods").get("pods", [])
            if p.get("name") == name and MANAGED_ENV in (p.get("env") or {})
            and p.get("status") != "TERMINATED"]
    return oldest(pods) if pods else None


def get(plane: ControlPlane, pod_id: str) -> dict[str, Any]:
    return plane.request("GET", f"/v2/pods/{pod_id}")


def price_per_hour(pod: dict[str, Any]) -> float | None:
    cost = pod.get("cost")
    return float(cost) if isinstance(cost, (int, float)) and cost > 0 else None


# -- up ----------------------------------------------------------------------------------------

def gpu_candidates(plane: ControlPlane, gpu: str | None, count: int, cloud: str) -> list[str]:
    """GPU type ids to try, in order: those ``gpu`` names (a pool: its types), else the
    catalog's Pod GPUs that are available, most available first, then cheapest, smallest."""
    if gpu:
        from ..resources import resolve_gpu

        out: list[str] = []
        for choice in resolve_gpu([g.strip() for g in gpu.split(",") if g.strip()]):
            out += list(rp.GPU_POOLS[choice].gpu_types) if choice in rp.GPU_POOLS else [choice]
        return list(dict.fromkeys(out))
    gpus = plane.catalog.gpus(include=["AVAILABILITY"], product=["POD"], count=count,
                              cloud=cloud)
    usable = [g for g in gpus if _AVAILABILITY_RANK.get(g.get("availability") or "", 9) < 9]

    def order(g: dict[str, Any]) -> tuple:
        price = (g.get("price") or {}).get(cloud.lower())
        return (_AVAILABILITY_RANK[g["availability"]], price is None, price or 0,
                g.get("memory") or 0, g["id"])

    return [g["id"] for g in sorted(usable, key=order)]


def pod_body(gpu_id: str, count: int, cloud: str, volume: str | None, idle_stop: str,
             max_hours: float | None, name: str = POD_NAME,
             image: str | None = None) -> tuple[dict[str, Any], tuple[str, bytes] | None]:
    """The ``POST /v2/pods`` body, and a wheel of this rpremote to put in the store first."""
    from .. import durations

    durations.seconds(idle_stop)  # a bad --idle-stop stops here, before anything is made
    choice = runpod_image.choose(image)
    serve = ["-m", "rpremote", "serve", "--host", "0.0.0.0", "--port", str(PORT),
             "--idle-stop", idle_stop, "--endpoint", "rpremote-pod-default",
             "--worker-cmd", WORKER_CMD]
    serve[-4:-4] = ["--max-hours", f"{max_hours:g}"] if max_hours else []
    env = {MANAGED_ENV: _version(), SERVER_KEY_ENV: secrets.token_urlsafe(32),
           "RPREMOTE_SECRET": config.secret_source()[0].decode()}
    url, source = base_url_setting()
    if source != "the default":  # the Pod stops itself through the same control plane
        env[BASE_URL_SETTING] = url
    store = stores.configured()
    if store is not None:
        env.update(store.worker_env())
        env.update(store.credential_env())
    wheel = None
    if choice.bootstraps:
        plan, wheel = runpod_image.bootstrap_plan(store)
        plan["run"] = serve
        env.update(runpod_image.plan_env(plan))
        args = runpod_image.start_command()
    else:
        args = shlex.join(["python", *serve])
    body: dict[str, Any] = {
        "name": name, "image": choice.image, "args": args,
        "gpu": {"id": gpu_id, "count": count}, "cloud": cloud,
        "ports": [f"{PORT}/http"], "env": env, "disk": 30,
    }
    if volume:
        body["mounts"] = {"network": [{"volumeId": volume, "path": rp.NETWORK_VOLUME_DIR}]}
    return body, wheel


def up(*, gpu: str | None = None, count: int = 1, volume: str | None = None,
       idle_stop: str = IDLE_STOP_DEFAULT, max_hours: float | None = None,
       cloud: str = "SECURE", name: str = POD_NAME, image: str | None = None,
       plane: ControlPlane | None = None) -> dict[str, Any]:
    """rpremote's Pod, running and answering: the one there is (started again when
    stopped), else a new one on the first GPU type with capacity."""
    own = plane is None
    plane = plane or ControlPlane.from_settings()
    try:
        pod = find(plane, name)
        if pod is not None:
            if pod["status"] in ("EXITED", "ERROR"):
                say(f"starting Pod {pod['id']} again ({pod['status']}; it kept its disk)")
                plane.request("POST", f"/v2/pods/{pod['id']}/action", json={"action": "start"})
            else:
                say(f"Pod {pod['id']} ({_gpu_text(pod)}) is {pod['status']}: using it")
            return wait_ready(plane, pod["id"])
        candidates = gpu_candidates(plane, gpu, count, cloud)
        if not candidates:
            raise RpremoteError(f"RunPod's catalog has no {cloud} Pod GPU available now; "
                                "try --cloud COMMUNITY, another --gpu, or later")
        body, wheel = pod_body(candidates[0], count, cloud, volume, idle_stop, max_hours,
                               name, image)
        if wheel is not None:
            runpod_image.upload_wheel(stores.configured(), wheel, say)
        refused: list[str] = []
        for gpu_id in candidates:
            body["gpu"]["id"] = gpu_id
            say(f"creating Pod {name}: {count} x {gpu_id} ({cloud}), stops itself after "
                f"{idle_stop} idle" + (f" or {max_hours:g} h" if max_hours else ""))
            try:
                pod = plane.request("POST", "/v2/pods", json=body)
                break
            except InvalidRequest as e:
                if e.status == 422:
                    raise
                refused.append(f"{gpu_id}: {e.detail or e}")
                say(f"RunPod refused {gpu_id} ({e.detail or e}); trying the next GPU type")
            except ControlPlaneError as e:
                if e.status == 402:
                    raise RpremoteError(f"RunPod refused the Pod for the account's balance "
                                        f"(402: {e.detail or e}); add funds, nothing was "
                                        "created") from None
                if e.status != 403:
                    raise
                refused.append(f"{gpu_id}: not accessible (403)")
        else:
            raise RpremoteError("no GPU type could be had for the Pod; nothing was created. "
                                "Refusals: " + "; ".join(refused))
        price = price_per_hour(pod)
        if price:
            say(f"Pod {pod['id']} costs ${price:.2f}/h while running")
        return wait_ready(plane, pod["id"])
    finally:
        if own:
            plane.close()


def wait_ready(plane: ControlPlane, pod_id: str, timeout: float = READY_TIMEOUT_S,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Wait until the Pod runs and its server answers through the proxy (RunPod's proxy
    says 502 for a while after RUNNING); say what it is doing meanwhile."""
    started = time.monotonic()
    last = ""
    said = 0.0
    seen: set[str] = set()
    while True:
        pod = get(plane, pod_id)
        status = pod.get("status")
        if status == "ERROR":
            raise RpremoteError(f"Pod {pod_id} is in ERROR; see its logs (GET "
                                f"/v2/pods/{pod_id}/logs, or RunPod's console) and `rpremote "
                                "pod down`")
        if status in ("EXITED", "TERMINATED"):
            raise PodStopped(f"Pod {pod_id} is {status} while it was starting")
        answer = _answers(pod) if status == "RUNNING" else None
        if answer == 200:
            say(f"Pod {pod_id} is ready at {proxy_url(pod_id)} "
                f"({time.monotonic() - started:.0f} s)")
            return pod
        if answer in (401, 403):
            raise RpremoteError(f"Pod {pod_id}'s server refuses the key in its env ({answer}); "
                                "`rpremote pod down` and up again")
        text = {"PROVISIONING": "getting a machine", "STARTING": "starting its container",
                "RUNNING": "starting rpremote's server (installing it on a new disk takes "
                           "a minute)"}.get(status or "", status or "?")
        waited = time.monotonic() - started
        if text != last or time.monotonic() - said > 15:
            say(f"Pod {pod_id}: {text} [{waited:.0f} s]")
            last, said = text, time.monotonic()
            for line in log_tail(plane, f"/v2/pods/{pod_id}/logs", tail=10):
                if line not in seen:  # what the container says (a bootstrap, a crash loop)
                    seen.add(line)
                    say(f"Pod {pod_id} log: {line}")
        if waited > timeout:
            raise RpremoteError(f"Pod {pod_id} did not become ready in {timeout / 60:.0f} min "
                                f"(last: {text}); it is still there: `rpremote pod status`, "
                                "`rpremote pod down`")
        sleep(2.0)


def _answers(pod: dict[str, Any]) -> int | None:
    """The status of the Pod's ``/rpremote/v1/info`` through the proxy (None: unreachable)."""
    key = (pod.get("env") or {}).get(SERVER_KEY_ENV, "")
    try:
        r = httpx.get(proxy_url(pod["id"]) + "/rpremote/v1/info", timeout=10,
                      headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError:
        return None
    return r.status_code


# -- the target --------------------------------------------------------------------------------

def _gpu_text(pod: dict[str, Any]) -> str:
    gpu = pod.get("gpu") or {}
    return f"{gpu.get('count', 1)} x {gpu.get('id', '?')}"


def fits(resources: Resources, pod: dict[str, Any]) -> str | None:
    """Why ``resources`` cannot run on the Pod, or None when they fit."""
    gpu = pod.get("gpu") or {}
    have, count = gpu.get("id"), int(gpu.get("count") or 1)
    if not resources.gpu:
        return None  # a CPU function runs on any Pod
    ok = any(choice == have or (choice in rp.GPU_POOLS and have in rp.GPU_POOLS[choice].gpu_types)
             for choice in resources.gpu)
    if not ok:
        return (f"the function asks for {resources.describe()}, and the Pod has {count} x "
                f"{have}")
    if resources.gpu_count > count:
        return f"the function asks for {resources.gpu_count} GPUs, and the Pod has {count}"
    return None


class PodTarget:
    name = "pod"
    RECHECK_S = 10.0

    def __init__(self) -> None:
        with ControlPlane.from_settings() as plane:
            pod = find(plane)
        if pod is None:
            raise TargetNotAvailable("target 'pod': no rpremote Pod under this RunPod key; "
                                     "nothing was sent. Start one with `rpremote pod up "
                                     "[--gpu TYPE]` (or %runpod pod up)")
        if pod["status"] != "RUNNING":
            raise PodStopped(f"rpremote's Pod {pod['id']} is {pod['status']} (its idle stop, "
                             "its --max-hours, or you stopped it); nothing was sent. Start it "
                             "again with `rpremote pod up`: it kept its disk")
        self.pod = pod
        self.url = proxy_url(pod["id"])
        key = (pod.get("env") or {}).get(SERVER_KEY_ENV)
        if not key:
            raise TargetNotAvailable(f"Pod {pod['id']} has no server key in its env; it was not "
                                     "made by this rpremote: `rpremote pod down` and up again")
        where = f"rpremote's Pod {pod['id']} at {self.url}"
        self.server = LocalEmulator(self.url, key, pid=0, started_here=False)
        self.queue = QueueClient(self.url, key, where=where)
        self.blobs = Shipper(HttpStore(self.url + "/rpremote/v1/blobs", key))
        price = price_per_hour(pod)
        self.usd_per_s = price / 3600 if price else None  # the journal's price (the Pod's)
        self._checked = time.monotonic()

    def endpoint_for(self, resources: Resources, image: str | None = None) -> str:
        why = fits(resources, self.pod)
        if why:
            raise ConfigError(f"{why}; nothing was sent. Call it on target 'runpod', or start "
                              "a Pod with that GPU (`rpremote pod down`, then `rpremote pod up "
                              "--gpu ...`)")
        secret = config.secret_source()[0].decode()
        return self.server.ensure_endpoint(resources, {"RPREMOTE_SECRET": secret},
                                           worker_cmd=WORKER_CMD, on_this_machine=False)

    def existing_endpoint(self, name: str) -> str:
        if self.server.endpoint(name) is None:
            raise ConfigError(f"rpremote's Pod has no endpoint {name!r}; nothing was sent")
        return name

    def check_environment(self, python: str, client_env: dict) -> None:
        """The Pod's Python was checked at ``up`` (its image); the worker checks the rest."""

    def watch(self, reporter: Any, endpoint_id: str) -> Any:
        return reporter

    def alive(self) -> bool:
        """Whether the Pod still runs (asked of the API at most every ``RECHECK_S``): once it
        stopped itself, the next call finds out and says how to start it again."""
        now = time.monotonic()
        if now - self._checked < self.RECHECK_S:
            return True
        self._checked = now
        try:
            with ControlPlane.from_settings() as plane:
                return get(plane, self.pod["id"]).get("status") == "RUNNING"
        except ControlPlaneError:
            return False

    def close(self) -> None:
        self.queue.close()


def _version() -> str:
    from .. import __version__
    return __version__


