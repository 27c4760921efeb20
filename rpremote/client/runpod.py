"""The ``runpod`` target: RunPod Serverless endpoints, made and found through REST v2.

One endpoint per resource spec, named ``Resources.endpoint_name`` and marked as rpremote's
(``control/ours.py``). **The API is the source of truth**: an endpoint is found by listing,
never from a local file that goes stale. What the endpoint runs (image, start command, env)
is summed up in its ``RPREMOTE_SPEC`` env value, so a changed image or rpremote version is a
PATCH of the same endpoint, while changed resources make another endpoint (as on the local
target). Creates are not idempotent: a file lock makes this machine's processes create an
endpoint once; processes on other machines may race, and then every one of them uses the
oldest of the duplicates, and the one that made a younger one deletes it.

Jobs go to the job API (``RPREMOTE_RUNPOD_QUEUE`` or the endpoint's ``requestUrls``) through
the same ``QueueClient`` as the local target. A cold first call is never a silent wait: while
a job waits for a worker, ``ColdStartWatch`` says what the workers are doing, and stops the
wait with the reason when they cannot start.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .. import config
from .. import platform as rp
from ..blobs import Shipper, UnavailableStore
from ..errors import ConfigError, InvalidRequest, ResourceNotFound, WorkersUnhealthy
from ..paths import data_dir
from ..private import private_dir, private_file
from ..resources import Resources
from . import runpod_image, stores
from .control.ours import MANAGED_ENV, is_ours, oldest
from .control.plane import ControlPlane, queue_url_setting
from .queue import QueueClient

SPEC_ENV = "RPREMOTE_SPEC"
SIGNER_ENV = "RPREMOTE_SIGNER"  # a digest of the signing secret the workers hold
VOLUME_SETTING = "RPREMOTE_VOLUME"  # a network volume to attach for caches (not payloads)
VOLUME_ID_ENV = "RPREMOTE_VOLUME_ID"  # in the endpoint's env: the volume its workers mount
SCALER_DELAY_S = 4  # QUEUE_DELAY: a new worker after a job waited this long
CPU_WORKER = {"id": "cpu3c", "vcpuCount": 2}  # gpu=None: the smallest serverless CPU worker
NO_STORE_HINT = ("pieces of arguments and results of 1 MiB or more (protocol.OFFLOAD_MIN_BYTES) "
                 "need a store on RunPod, whose requests stop at 10 MB: set "
                 "RPREMOTE_STORE=s3://BUCKET[/PREFIX] (with AWS_* keys) or "
                 "runpod-volume://VOLUME_ID (with RunPod's S3 API keys)")


def gpu_fields(resources: Resources) -> dict[str, Any]:
    """``gpu`` of the create body: pools from the choices (a type maps to its pool, and the
    pool's other types are excluded unless the pool itself was named too)."""
    pools: list[str] = []
    named_types: dict[str, set[str]] = {}
    for choice in resources.gpu:
        if choice in rp.GPU_POOLS:
            pools.append(choice)
            continue
        pool = rp.GPU_TYPES[choice].pool
        if pool is None:
            raise ConfigError(f"gpu {choice!r} is in no Serverless pool (RunPod offers it on "
                              "Pods only); choose a pool id like ADA_24 or one of its types")
        pools.append(pool)
        named_types.setdefault(pool, set()).add(choice)
    pools = list(dict.fromkeys(pools))
    excluded = sorted(t for pool, types in named_types.items()
                      if pool not in resources.gpu
                      for t in rp.GPU_POOLS[pool].gpu_types if t not in types)
    gpu: dict[str, Any] = {"pools": pools, "count": resources.gpu_count}
    if excluded:
        gpu["excludedTypes"] = excluded
    return gpu


def endpoint_body(resources: Resources, image: runpod_image.ImageChoice, env: dict[str, str],
                  volume: tuple[str, str] | None) -> dict[str, Any]:
    """The ``POST /v2/serverless`` body: only documented fields, ``timeout`` always set."""
    body: dict[str, Any] = {
        "name": resources.endpoint_name, "type": "QUEUE", "image": image.image,
        "scaling": {"type": rp.SCALER_QUEUE_DELAY, "queueDelay": SCALER_DELAY_S},
        "workers": {"min": resources.workers_min, "max": resources.workers_max,
                    "idleTimeout": resources.idle_timeout},
        "timeout": rp.EXECUTION_TIMEOUT_DEFAULT_MS,  # jobs carry their own; omitted -> 0
        "flashboot": "FLASHBOOT",
    }
    if image.bootstraps:
        body["args"] = runpod_image.start_command()
    if resources.gpu:
        body["gpu"] = gpu_fields(resources)
    else:
        body["cpu"] = [dict(CPU_WORKER)]
    if volume is not None:
        body["networkVolumes"], body["dataCenterIds"] = [volume[0]], [volume[1]]
    spec = hashlib.sha256(json.dumps([body, env], sort_keys=True).encode()).hexdigest()[:16]
    body["env"] = {**env, MANAGED_ENV: _version(), SPEC_ENV: spec}
    return body


def price_per_hour(resources: Resources) -> float | None:
    per_s = resources.flex_usd_per_s
    return None if per_s is None else per_s * 3600


class RunPodTarget:
    name = "runpod"

    def __init__(self) -> None:
        self.plane = ControlPlane.from_settings()
        # One small request (not the whole listing): a refused key fails here, before any create.
        self.plane.request("GET", "/v2/serverless", params={"limit": 1})
        url, self._queue_source = queue_url_setting()
        self._key = config.runpod_api_key()[0] or ""
        self.queue = QueueClient(url, self._key, where=f"RunPod's job API at {url}")
        self._endpoints: dict[str, dict[str, Any]] = {}  # endpoint name -> the API object
        self._created: set[str] = set()  # ids this process created (deleted if unusable)
        self._shippers: dict[int, Shipper] = {}
        self._volume_dcs: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- the store ----------------------------------------------------------------------------

    @property
    def blobs(self) -> Shipper:
        store = stores.configured()
        if store is None:
            store = UnavailableStore(f"no offload store for target runpod: {NO_STORE_HINT}")
        shipper = self._shippers.get(id(store))
        if shipper is None:
            shipper = self._shippers.setdefault(id(store), Shipper(store))
        return shipper

    # -- endpoints ----------------------------------------------------------------------------

    def endpoint_for(self, resources: Resources, image: str | None = None) -> str:
        """The id of rpremote's endpoint for ``resources`` on the account: found by name,
        patched when what it runs changed, created when there is none."""
        choice = runpod_image.choose(image)
        store = stores.configured()  # a wrong store setting stops here, before anything
        secret = config.secret_source()[0]
        env = {"RPREMOTE_SECRET": secret.decode()}
        # Whose secret the workers hold is part of the endpoint's identity (a digest, not the
        # secret): two machines with their own secrets on one account get an endpoint each,
        # instead of taking turns to PATCH one whose workers refuse the other's jobs.
        resources = dataclasses.replace(resources, env=tuple(sorted(
            {**dict(resources.env), SIGNER_ENV: hashlib.sha256(secret).hexdigest()[:12]}.items())))
        volume = None
        if store is not None:
            resources = _with_store(resources, store)
            location = store.location
            if location.scheme == "runpod-volume":
                volume = (location.bucket, location.dc)
            else:
                env.update(store.credential_env())
        volume = self._cache_volume(volume)
        if volume is not None:
            # The volume joins the endpoint's identity: its workers mount it.
            resources = dataclasses.replace(resources, env=tuple(sorted(
                {**dict(resources.env), VOLUME_ID_ENV: volume[0]}.items())))
        env.update(dict(resources.env))
        wheel = None
        if choice.bootstraps:
            plan, wheel = runpod_image.bootstrap_plan(store)
            env.update(runpod_image.plan_env(plan))
        body = endpoint_body(resources, choice, env, volume)
        name = body["name"]
        known = self._endpoints.get(name)
        if known is not None and known["env"].get(SPEC_ENV) == body["env"][SPEC_ENV]:
            return known["id"]
        if wheel is not None:
            runpod_image.upload_wheel(store, wheel, self._say)
        with self._lock:
            endpoint = self._ensure(body, resources, choice)
            self._endpoints[name] = endpoint
        self._adopt_queue(endpoint)
        return endpoint["id"]

    def _cache_volume(self, store_volume: tuple[str, str] | None) -> tuple[str, str] | None:
        """``(volume id, data center)`` to attach: the store's volume, else ``$RPREMOTE_VOLUME``
        (a network volume for caches only: the installed rpremote and dependencies), whose
        data center is asked of the API. Both set and different: ``ConfigError``."""
        wanted = os.environ.get(VOLUME_SETTING, "").strip()
        if not wanted:
            return store_volume
        if store_volume is not None and store_volume[0] != wanted:
            raise ConfigError(
                f"${VOLUME_SETTING}={wanted} and the store's network volume {store_volume[0]} "
                "differ; an endpoint mounts one volume per data center. Nothing was created: "
                f"unset {VOLUME_SETTING}, or use the same volume")
        dc = self._volume_dcs.get(wanted)
        if dc is None:
            try:
                dc = self.plane.volumes.data_center(wanted)
            except ResourceNotFound:
                raise ConfigError(f"${VOLUME_SETTING}={wanted}: no network volume with that id "
                                  "under this API key; nothing was created (RunPod's console "
                                  "lists them under Storage)") from None
            if dc is None:
                raise ConfigError(f"${VOLUME_SETTING}={wanted}: the API gave no data center "
                                  "for it; nothing was created")
            self._volume_dcs[wanted] = dc
        return wanted, dc

    def _ensure(self, body: dict[str, Any], resources: Resources,
                choice: runpod_image.ImageChoice) -> dict[str, Any]:
        name = body["name"]
        with self._machine_lock(name):
            mine = self._find(name)
            if mine:
                endpoint = oldest(mine)
                if endpoint.get("env", {}).get(SPEC_ENV) != body["env"][SPEC_ENV]:
                    self._say(f"updating endpoint {name} ({endpoint['id']}): what it runs "
                              "changed (image, rpremote version or settings)")
                    changes = {k: v for k, v in body.items() if k not in ("name", "type")}
                    endpoint = self.plane.endpoints.update(endpoint, changes)
                return endpoint
            price = price_per_hour(resources)
            self._say(
                f"creating endpoint {name} on RunPod: {resources.describe()}, workers "
                f"{resources.workers_min}-{resources.workers_max}, idle timeout "
                f"{resources.idle_timeout} s, image {choice.image}"
                + (f"; ${price:.2f}/h per running worker, nothing while idle"
                   if price is not None and resources.workers_min == 0 else
                   f"; ${price:.2f}/h per running worker" if price is not None else ""))
            try:
                made = self.plane.endpoints.create_or_find(
                    body, match=lambda o: o.get("name") == name and is_ours(o))
            except InvalidRequest as e:
                raise InvalidRequest(
                    f"RunPod refused to create endpoint {name}: {e}. Nothing was created; "
                    "fix the setting it names (gpu= takes pools like ADA_24: "
                    "`rpremote endpoints` and RunPod's catalog list them)",
                    status=e.status, title=e.title, detail=e.detail, errors=e.errors,
                    request_id=e.request_id, method=e.method, path=e.path) from None
            self._created.add(made["id"])
        # Another machine may have made one at the same time: all keep the oldest.
        mine = self._find(name)
        winner = oldest(mine) if mine else made
        if winner["id"] != made["id"]:
            self._say(f"another process made endpoint {name} at the same time; using its "
                      f"{winner['id']} and deleting this one's {made['id']}")
            self._delete_quietly(made["id"])
        return winner

    def _find(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.plane.endpoints.list() if e.get("name") == name and is_ours(e)]

    def _delete_quietly(self, endpoint_id: str) -> None:
        try:
            self.plane.endpoints.delete(endpoint_id)
        except ResourceNotFound:
            pass
        self._created.discard(endpoint_id)

    @contextmanager
    def _machine_lock(self, name: str) -> Iterator[None]:
        """One creator per endpoint name among this machine's processes (per account)."""
        account = hashlib.sha256(f"{self.plane.base_url} {self._key}".encode()).hexdigest()[:16]
        directory = private_dir(data_dir() / "runpod" / account, top=data_dir())
        with open(private_file(directory / f"{name}.lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _adopt_queue(self, endpoint: dict[str, Any]) -> None:
        """Send jobs where the endpoint says (``requestUrls``), unless the user set the job
        API's URL: the same ``QueueClient``, at another base."""
        run = (endpoint.get("requestUrls") or {}).get("run") or ""
        suffix = f"/v2/{endpoint['id']}/run"
        if not run.endswith(suffix) or self._queue_source != "the default":
            return
        base = run[: -len(suffix)]
        if base != self.queue.base_url:
            old, self.queue = self.queue, QueueClient(base, self._key,
                                                      where=f"RunPod's job API at {base}")
            old.close()

    def existing_endpoint(self, name: str) -> str:
        """An endpoint named by id or name that runs the rpremote executor (any endpoint the
        key can see: one the user deployed from docker/Dockerfile, too)."""
        for endpoint in self.plane.endpoints.list():
            if name in (endpoint.get("id"), endpoint.get("name")):
                self._adopt_queue(endpoint)
                return endpoint["id"]
        raise ConfigError(f"RunPod has no endpoint {name!r} under this API key; nothing was "
                          "sent. `rpremote endpoints` lists rpremote's; leave out endpoint= to "
                          "get one made for the function's resources")

    def check_environment(self, python: str, client_env: dict) -> None:
        """The image's Python is checked when the endpoint is chosen (``runpod_image``); the
        worker checks cloudpickle and packages against the client's before unpickling."""

    def watch(self, reporter: Any, endpoint_id: str) -> Any:
        return ColdStartWatch(reporter, self, endpoint_id)

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self.queue.close()
        self.plane.close()

    def _say(self, text: str) -> None:
        if not config.settings().quiet:
            print(f"rpremote: {text}", file=sys.stderr, flush=True)


def _with_store(resources: Resources, store: Any) -> Resources:
    """Where the store is (no secrets) joins the endpoint's identity, as on the local target."""
    return dataclasses.replace(resources, env=tuple(sorted(
        {**dict(resources.env), **store.worker_env()}.items())))


class ColdStartWatch:
    """A reporter that, while a job waits for a worker, says what the endpoint's workers do
    (every ``EVERY_S``, and on each change), and ends the wait when they cannot start."""

    EVERY_S = 3.0
    QUIET_S = 2.0  # a job that waits less than this (a warm worker) says nothing more
    UNHEALTHY_FOR_S = 6.0  # unhealthy, and nothing else, this long: they will not start

    def __init__(self, inner: Any, target: RunPodTarget, endpoint_id: str):
        self._inner = inner
        self._target = target
        self._endpoint = endpoint_id
        self._started = time.monotonic()
        self._next = self._started + self.QUIET_S
        self._last_text = ""
        self._said_at = 0.0
        self._unhealthy_since: float | None = None
        self._seen_lines: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def status(self, job: Any, status: str | None, worker: str | None) -> None:
        self._inner.status(job, status, worker)
        if status == rp.IN_QUEUE and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.EVERY_S
            self._look(job)

    def _look(self, job: Any) -> None:
        plane = self._target.plane
        try:
            listing = plane.endpoints.workers(self._endpoint)
        except Exception:  # noqa: BLE001 -- a view: the job itself goes on
            return
        summary = listing.get("summary") or {}
        workers = listing.get("workers") or []
        ready = summary.get("running", 0) + summary.get("idle", 0)
        waited = time.monotonic() - self._started
        if ready:
            return  # the queue moves: the job's own status says the rest
        if summary.get("unhealthy") and not summary.get("initializing"):
            now = time.monotonic()
            self._unhealthy_since = self._unhealthy_since or now
            if now - self._unhealthy_since >= self.UNHEALTHY_FOR_S:
                self._give_up(job, workers)
            return
        self._unhealthy_since = None
        if summary.get("initializing"):
            text = (f"waiting for a worker of endpoint {self._endpoint}: starting "
                    "(image pull, then rpremote's bootstrap; a new endpoint's first worker "
                    "takes a minute or more)")
            initializing = [w for w in workers if w.get("status") == "INITIALIZING"]
            for line in self._log_lines(initializing[:1]):
                self._target._say(f"worker: {line}")
        elif summary.get("throttled"):
            text = (f"waiting for a worker of endpoint {self._endpoint}: throttled, no GPU of "
                    "its pools is free now; it starts when one is (allow more pools to wait "
                    "less, e.g. gpu=['ADA_24', 'AMPERE_24'])")
        else:
            text = f"waiting for endpoint {self._endpoint} to start a worker"
        if text != self._last_text or time.monotonic() - self._said_at > 15:
            self._target._say(f"{text} [{waited:.0f} s]")
            self._last_text, self._said_at = text, time.monotonic()

    def _log_lines(self, workers: list[dict[str, Any]]) -> list[str]:
        """New bootstrap lines of a starting worker's log (a short look, not a follow)."""
        out = []
        for w in workers:
            for line in worker_log(self._target, self._endpoint, w["id"]):
                if line not in self._seen_lines and "rpremote bootstrap:" in line:
                    self._seen_lines.add(line)
                    out.append(line.split("rpremote bootstrap:", 1)[1].strip())
        return out

    def _give_up(self, job: Any, workers: list[dict[str, Any]]) -> None:
        reasons = [line for w in workers[:1]
                   for line in worker_log(self._target, self._endpoint, w["id"])][-5:]
        job.cancel()
        gone = ""
        if self._endpoint in self._target._created:
            self._target._delete_quietly(self._endpoint)
            self._target._endpoints = {k: v for k, v in self._target._endpoints.items()
                                       if v["id"] != self._endpoint}
            gone = " and the endpoint this call made was deleted (nothing is left billing)"
        why = "; ".join(reasons) or "its workers are UNHEALTHY"
        raise WorkersUnhealthy(
            f"endpoint {self._endpoint}'s workers cannot start: {why}. Job {job.id} was "
            f"cancelled{gone}. Check the image (image=..., ${runpod_image.IMAGE_SETTING}) and "
            "its start command; RunPod's console shows the workers' logs too")


def worker_log(target: RunPodTarget, endpoint_id: str, worker_id: str,
               tail: int = 20, wait_s: float = 1.5) -> list[str]:
    """The last lines of a worker's log (a short look, not a follow)."""
    return log_tail(target.plane, f"/v2/serverless/{endpoint_id}/workers/{worker_id}/logs",
                    tail, wait_s)


def log_tail(plane: ControlPlane, path: str, tail: int = 20, wait_s: float = 1.5) -> list[str]:
    """The last lines of a log stream (``GET .../logs``, Server-Sent Events, §4.8) of a
    worker or a Pod, read for at most ``wait_s``: the stream follows the log, we only look."""
    import httpx

    lines: list[str] = []
    deadline = time.monotonic() + wait_s
    try:
        with plane.stream("GET", path, params={"tail": tail},
                                headers={"Accept": "text/event-stream"},
                                timeout=httpx.Timeout(wait_s, connect=5.0)) as r:
            if r.status_code != 200:
                return []
            for raw in r.iter_lines():
                if raw.startswith("data:"):
                    try:
                        lines.append(plane.scrub(json.loads(raw[5:])["line"]))
                    except (ValueError, KeyError, TypeError):
                        pass
                if time.monotonic() > deadline:
                    break
    except httpx.HTTPError:
        pass
    return lines


def _version() -> str:
    from .. import __version__
    return __version__
