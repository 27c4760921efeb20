"""The queue semantics of a RunPod Serverless endpoint, both sides of it.

Clients submit, poll, stream, cancel, retry and purge; workers take jobs, stream chunks, post
results and heartbeat. The engine keeps jobs in the ``Store``, wakes long-polls through
``Signal``s, and a housekeeping loop enforces execution timeouts, TTLs, retention, lost
workers and the autoscaler. Everything runs on the server's one event loop, so a state change
and the wake-ups it causes happen without locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import platform as rp
from .api_error import ApiError
from .blobs import BlobService, blob_root
from .config import EmulatorTimings, EndpointSpec
from .store import Job, Store
from .supervisor import (Supervisor, WorkerProcess, clear_containers, describe_exit,
                         new_worker_id)
from .webhook import Webhooks

log = logging.getLogger("rpremote.emulator")


class Signal:
    """Wakes every current waiter when something changed; waiters re-check state themselves."""

    def __init__(self) -> None:
        self._future: asyncio.Future | None = None

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None

    async def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._future], timeout=timeout)


@dataclass
class Worker:
    """What the engine knows of one worker, whether it started it or not."""

    id: str
    endpoint: str
    supervised: bool
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    ready: bool = False              # has asked for a job at least once
    idle_since: float = field(default_factory=time.time)
    jobs: set[str] = field(default_factory=set)
    draining: bool = False           # takes get 204; it is being retired
    unhealthy: str | None = None     # reason from an unhealthy ping
    ping_jobs: set[str] = field(default_factory=set)
    last_ping: float = 0.0
    stops: dict[str, float] = field(default_factory=dict)   # job id -> when stop was pushed
    stop_queue: list[str] = field(default_factory=list)
    stop_sent: dict[str, float] = field(default_factory=dict)  # job id -> last delivery
    stop_signal: Signal = field(default_factory=Signal)
    placeholder: bool = False        # stands for a worker that cannot start: no process

    def forget_stop(self, job_id: str) -> None:
        self.stops.pop(job_id, None)
        self.stop_sent.pop(job_id, None)

    @property
    def state(self) -> str:
        if self.unhealthy:
            return "unhealthy"
        if not self.ready:
            return "initializing"
        return "running" if self.jobs else "idle"


@dataclass
class EndedWorker:
    """A worker whose process ended, kept a while so its log still says why (logs.py)."""

    worker: Worker
    pid: int
    log_path: Path
    code: int
    retired: bool                    # the emulator asked it to stop
    ended_at: float = field(default_factory=time.time)

    def describe(self) -> str:
        why = ("it was asked to stop" if self.retired else
               "its start command ended" if self.code == 0 else "its start command failed")
        return f"worker {self.worker.id} exited ({describe_exit(self.code)}): {why}"


ENDED_KEEP_S = 600.0   # how long an ended worker's log stays readable
ENDED_KEEP_MAX = 200   # and how many are kept at most


@dataclass
class EndpointState:
    spec: EndpointSpec
    queue_signal: Signal = field(default_factory=Signal)
    supervisor: Supervisor | None = None
    crashes: int = 0                  # consecutive worker crashes, for restart backoff
    next_spawn_at: float = 0.0
    recent_crashes: list[float] = field(default_factory=list)


def lost_worker_error(worker_id: str, why: str) -> str:
    """The ``error`` of a job whose worker disappeared, in the SDK's JSON-in-a-string shape."""
    return json.dumps(
        {
            "error_type": "WorkerLost",
            "error_message": f"worker {worker_id} was lost while running this job: {why}",
            "worker_id": worker_id,
        }
    )


class Engine:
    def __init__(
        self,
        store: Store,
        timings: EmulatorTimings,
        state_dir: Path,
        base_url: str,
        worker_token: str,
        resume_queue: bool = True,
    ):
        self.store = store
        self.resume_queue = resume_queue
        self.timings = timings
        self.state_dir = state_dir
        self.base_url = base_url
        self.worker_token = worker_token
        self.endpoints: dict[str, EndpointState] = {}
        self.workers: dict[str, Worker] = {}
        self.job_signals: dict[str, Signal] = {}
        self.webhooks = Webhooks(timings.webhook_retry_delay_s)
        self.deleted: dict[str, EndpointState] = {}
        self.ended: dict[str, EndedWorker] = {}  # worker id -> its process's end
        self.closing = False
        self.last_client_request = time.monotonic()
        self._housekeeper: asyncio.Task | None = None
        self.blobs = BlobService(blob_root(state_dir), ttl_s=timings.blob_ttl_s,
                                 piece_max_bytes=timings.blob_piece_max_mb * 1024 ** 2,
                                 total_max_bytes=timings.blob_total_max_mb * 1024 ** 2)
        for spec in self.store.endpoints().values():
            self.put_endpoint(EndpointSpec.from_dict(spec), persist=False)
        clear_containers(state_dir)  # left by an emulator that was killed

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._recover_after_restart()
        self._housekeeper = asyncio.create_task(self._housekeeping())

    def idle_for(self) -> float:
        """Seconds since the last client request, or 0 while any job is queued or running."""
        if self.store.active_count():
            self.last_client_request = time.monotonic()
            return 0.0
        return time.monotonic() - self.last_client_request

    def begin_close(self) -> None:
        """Answer every held long-poll now, so shutdown does not wait for them."""
        self.closing = True
        for ep in self.endpoints.values():
            ep.queue_signal.notify()
        for w in self.workers.values():
            w.stop_signal.notify()
        for sig in self.job_signals.values():
            sig.notify()

    async def stop(self) -> None:
        self.begin_close()
        if self._housekeeper:
            self._housekeeper.cancel()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(None, ep.supervisor.stop_all, self.timings.worker_term_grace_s + 2)
                for ep in [*self.endpoints.values(), *self.deleted.values()]
                if ep.supervisor
            )
        )
        await self.webhooks.close()
        self.blobs.close()

    def _recover_after_restart(self) -> None:
        """Jobs that were running when the emulator stopped lost their workers with it. Jobs
        left queued run now, unless ``resume_queue`` is off (the emulator rpremote starts on
        its own: its callers were told that the outcome of a job left there is unknown, and
        may send it again; running it behind them would run it twice)."""
        for job in self.store.in_progress():
            self._finish(
                job, rp.FAILED,
                error=lost_worker_error(job.worker_id or "?", "the emulator restarted while it ran"),
            )
        if not self.resume_queue:
            for job in self.store.queued():
                self._finish(job, rp.FAILED, error="the emulator stopped while this job was "
                             "queued; it was not run (a new emulator does not resume its queue)")

    def fail_unfinished(self, reason: str) -> int:
        """Fail every queued and running job with ``reason`` (a Pod about to stop itself:
        its callers are told why instead of waiting on a server that is going away)."""
        jobs = [*self.store.in_progress(), *self.store.queued()]
        for job in jobs:
            running = job.status == rp.IN_PROGRESS
            self._finish(job, rp.FAILED, error=reason)
            if running:
                self._stop_on_worker(job.worker_id, job.id)
        return len(jobs)

    # -- endpoints ----------------------------------------------------------------------------

    def put_endpoint(self, spec: EndpointSpec, persist: bool = True) -> EndpointState:
        """Create or update an endpoint. Workers started with an older command are retired."""
        state = self.endpoints.get(spec.id)
        if state is None:
            state = self.endpoints[spec.id] = EndpointState(spec)
        old_sup, old_spec = state.supervisor, state.spec
        if old_sup and _process_settings(old_spec) != _process_settings(spec):
            for wid in list(old_sup.procs):
                self._retire(wid)
        self._drop_placeholders(spec.id)  # the scaler shows them again if they still apply
        if spec.workerCmd:
            state.supervisor = Supervisor(
                spec, self.base_url, self.worker_token, self.state_dir, self.timings,
                blob_dir=self.blobs.root,
            )
            if old_sup:
                state.supervisor.procs = old_sup.procs  # still reaped after a change
        state.spec = spec
        if persist:
            self.store.save_endpoint(spec.id, spec.to_dict())
        state.queue_signal.notify()
        return state

    def delete_endpoint(self, endpoint_id: str) -> None:
        ep = self.endpoint(endpoint_id)
        for job_id in self.store.queued_ids(endpoint_id):
            self._cancel(self.store.get(job_id))
        for job in self.store.in_progress():
            if job.endpoint == endpoint_id:
                self._cancel(job)
        if ep.supervisor:
            for wid in list(ep.supervisor.procs):
                self._retire(wid)
            ep.spec.workersMin = ep.spec.workersMax = 0
        self._drop_placeholders(endpoint_id)
        self.store.delete_endpoint(endpoint_id)
        if ep.supervisor:
            self.deleted[endpoint_id] = ep  # kept until its workers are reaped
        del self.endpoints[endpoint_id]

    def endpoint(self, endpoint_id: str) -> EndpointState:
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            raise ApiError(404, f"endpoint {endpoint_id!r} not found on this emulator")
        return ep

    # -- client side --------------------------------------------------------------------------

    def submit(self, endpoint_id: str, request: dict[str, Any], sync: bool) -> Job:
        ep = self.endpoint(endpoint_id)
        if not isinstance(request, dict):
            raise ApiError(400, "the request body must be a JSON object like {\"input\": {...}}")
        if request.get("input") is None:
            raise ApiError(400, "the request body has no 'input'; send {\"input\": {...}}")
        policy = request.get("policy") or {}
        if not isinstance(policy, dict):
            raise ApiError(400, "'policy' must be an object")
        exec_ms = _policy_ms(policy, "executionTimeout", ep.spec.executionTimeoutMs,
                             rp.EXECUTION_TIMEOUT_MIN_MS, rp.EXECUTION_TIMEOUT_MAX_MS)
        ttl_ms = _policy_ms(policy, "ttl", rp.TTL_DEFAULT_MS, rp.TTL_MIN_MS, rp.TTL_MAX_MS)
        low = policy.get("lowPriority", False)
        if not isinstance(low, bool):
            raise ApiError(400, "policy.lowPriority must be true or false")
        webhook = request.get("webhook")
        if webhook is not None and not (
            isinstance(webhook, str) and webhook.startswith(("http://", "https://"))
        ):
            raise ApiError(400, "'webhook' must be an http(s) URL")
        s3 = request.get("s3Config")
        created = time.time()
        job = Job(
            id=f"sync-{uuid.uuid4()}" if sync else f"{uuid.uuid4()}-u1",
            endpoint=endpoint_id,
            seq=self.store.next_seq(),
            sync=int(sync),
            status=rp.IN_QUEUE,
            input=json.dumps(request["input"], ensure_ascii=False, separators=(",", ":")),
            webhook=webhook,
            s3config=json.dumps(s3) if s3 is not None else None,
            low_priority=int(low),
            exec_timeout_ms=exec_ms,
            created_at=created,
            started_at=None,
            finished_at=None,
            worker_id=None,
            output=None,
            error=None,
            delete_at=created + ttl_ms / 1000,
            ttl_at=created + ttl_ms / 1000,
            exec_deadline=None,
            delivered=0,
            retries=0,
        )
        self.store.insert_job(job)
        ep.queue_signal.notify()
        if not self._idle_worker_waits(ep):  # else it takes the job now: nothing to scale
            self._scale(ep, time.time())
        return job

    def _idle_worker_waits(self, ep: EndpointState) -> bool:
        """Whether a ready, idle worker of this queue-delay endpoint is asking for work."""
        if ep.spec.scalerType != rp.SCALER_QUEUE_DELAY or ep.supervisor is None:
            return False
        return any(w.ready and not w.jobs and not w.draining
                   for w in (self.workers.get(i) for i in ep.supervisor.procs) if w is not None)

    def job(self, endpoint_id: str, job_id: str) -> Job:
        self.endpoint(endpoint_id)
        job = self.store.get(job_id)
        if job is None or job.endpoint != endpoint_id:
            raise ApiError(404, f"job {job_id!r} not found (never existed, or expired)")
        return job

    async def wait_terminal(self, endpoint_id: str, job_id: str, timeout: float) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(endpoint_id, job_id)
            remaining = deadline - time.monotonic()
            if job.terminal or remaining <= 0 or self.closing:
                return job
            await self._job_signal(job_id).wait(remaining)

    async def stream(self, endpoint_id: str, job_id: str) -> str:
        """Chunks not yet delivered, as the JSON text of ``{"id","status","stream"}``."""
        deadline = time.monotonic() + self.timings.stream_hold_s
        while True:
            job = self.job(endpoint_id, job_id)
            chunks = self.store.chunks_after(job_id, job.delivered)
            if chunks or job.terminal or time.monotonic() >= deadline or self.closing:
                if chunks:
                    self.store.update(job_id, delivered=chunks[-1][0])
                items = ",".join('{"output":' + data + "}" for _, data in chunks)
                return (
                    '{"id":' + json.dumps(job.id) + ',"status":' + json.dumps(job.status)
                    + ',"stream":[' + items + "]}"
                )
            await self._job_signal(job_id).wait(deadline - time.monotonic())

    def cancel(self, endpoint_id: str, job_id: str) -> Job:
        job = self.job(endpoint_id, job_id)
        if not job.terminal:
            self._cancel(job)
        return self.store.get(job_id)

    def retry(self, endpoint_id: str, job_id: str) -> Job:
        job = self.job(endpoint_id, job_id)
        if job.status not in rp.RETRYABLE_STATES:
            raise ApiError(
                400, f"job {job_id} is {job.status}; only FAILED or TIMED_OUT jobs can be retried"
            )
        self.store.clear_chunks(job_id)
        self.store.update(
            job_id, status=rp.IN_QUEUE, seq=self.store.next_seq(), started_at=None,
            finished_at=None, worker_id=None, output=None, error=None, exec_deadline=None,
            delivered=0, retries=job.retries + 1, delete_at=job.ttl_at,
        )
        ep = self.endpoint(endpoint_id)
        ep.queue_signal.notify()
        self._job_signal(job_id).notify()
        self._scale(ep, time.time())
        return self.store.get(job_id)

    def purge(self, endpoint_id: str) -> int:
        self.endpoint(endpoint_id)
        ids = self.store.queued_ids(endpoint_id)
        self.store.delete(ids)
        for job_id in ids:
            self._drop_signal(job_id)
        return len(ids)

    def health(self, endpoint_id: str) -> dict[str, Any]:
        ep = self.endpoint(endpoint_id)
        counts = self.store.counts(endpoint_id)
        states = [w.state for w in self.workers.values() if w.endpoint == endpoint_id]
        now = time.time()
        crashed = len([t for t in ep.recent_crashes if now - t < 60])
        workers = {
            "idle": states.count("idle"),
            "initializing": states.count("initializing"),
            "ready": states.count("idle") + states.count("running"),
            "running": states.count("running"),
            "throttled": 0,
            "unhealthy": states.count("unhealthy") + crashed,
        }
        jobs = {
            "completed": counts.get(rp.COMPLETED, 0),
            "failed": counts.get(rp.FAILED, 0),
            "inProgress": counts.get(rp.IN_PROGRESS, 0),
            "inQueue": counts.get(rp.IN_QUEUE, 0),
            "retried": counts.get("retried", 0),
            "cancelled": counts.get(rp.CANCELLED, 0),
            "timedOut": counts.get(rp.TIMED_OUT, 0),
        }
        return {"jobs": jobs, "workers": workers}

    def worker_list(self, endpoint_id: str) -> list[dict[str, Any]]:
        ep = self.endpoint(endpoint_id)
        procs = ep.supervisor.procs if ep.supervisor else {}
        out = []
        for w in self.workers.values():
            if w.endpoint != endpoint_id:
                continue
            wp = procs.get(w.id)
            out.append({
                "id": w.id, "state": w.state, "jobs": sorted(w.jobs), "draining": w.draining,
                "supervised": w.supervised, "pid": wp.pid if wp else None,
                "log": str(wp.log_path) if wp else None, "reason": w.unhealthy,
            })
        return out

    # -- worker side --------------------------------------------------------------------------

    def _seen(self, endpoint_id: str, worker_id: str) -> Worker:
        self.endpoint(endpoint_id)
        w = self.workers.get(worker_id)
        if w is None:
            # A worker we did not start (pointed at us by hand): welcome it.
            w = Worker(worker_id, endpoint_id, supervised=False)
            self.workers[worker_id] = w
        elif w.endpoint != endpoint_id:
            raise ApiError(400, f"worker {worker_id} belongs to endpoint {w.endpoint}")
        w.last_seen = time.time()
        return w

    async def take(self, endpoint_id: str, worker_id: str, count: int) -> list[str]:
        """Long-poll for up to ``count`` jobs; returns their JSON texts (empty: answer 204)."""
        w = self._seen(endpoint_id, worker_id)
        if not w.ready:
            w.ready = True
            w.idle_since = time.time()
            self.endpoints[endpoint_id].crashes = 0
        deadline = time.monotonic() + self.timings.take_hold_s
        while True:
            ep = self.endpoints.get(endpoint_id)
            if ep is None or w.draining or self.closing or worker_id not in self.workers:
                return []
            jobs = self._assign(ep, w, count)
            if jobs:
                return jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await ep.queue_signal.wait(remaining)
            w.last_seen = time.time()

    def _assign(self, ep: EndpointState, w: Worker, count: int) -> list[str]:
        now = time.time()
        texts = []
        for job in self.store.take_queued(ep.spec.id, count):
            self.store.update(
                job.id, status=rp.IN_PROGRESS, started_at=now, worker_id=w.id,
                exec_deadline=now + job.exec_timeout_ms / 1000,
            )
            w.jobs.add(job.id)
            text = '{"id":' + json.dumps(job.id) + ',"input":' + job.input
            if job.s3config:
                text += ',"s3Config":' + job.s3config
            texts.append(text + "}")
            self._job_signal(job.id).notify()
        return texts

    async def stop_poll(self, endpoint_id: str, worker_id: str) -> list[str]:
        w = self._seen(endpoint_id, worker_id)
        deadline = time.monotonic() + self.timings.stop_hold_s
        while not w.stop_queue and not self.closing and worker_id in self.workers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await w.stop_signal.wait(remaining)
        ids, w.stop_queue = w.stop_queue, []
        sent = time.time()
        for job_id in ids:
            w.stop_sent[job_id] = sent
        return ids

    def job_done(self, endpoint_id: str, worker_id: str, job_id: str, raw: bytes) -> None:
        w = self._seen(endpoint_id, worker_id)
        body = _parse_worker_json(raw)
        if not isinstance(body, dict):
            raise ApiError(400, "job-done body must be a JSON object")
        job = self.store.get(job_id)
        if job is None or job.status != rp.IN_PROGRESS or job.worker_id != worker_id:
            return  # late result of a cancelled, timed-out or reassigned job: dropped
        if body.get("status") == rp.IN_PROGRESS:  # progress_update
            self.store.update(job_id, output=_json_text(body.get("output")))
            self._job_signal(job_id).notify()
            return
        output = _json_text(body["output"]) if "output" in body else None
        if "error" in body:
            error = body["error"] if isinstance(body["error"], str) else _json_text(body["error"])
            self._finish(job, rp.FAILED, output=output, error=error)
        else:
            self._finish(job, rp.COMPLETED, output=output)
        if body.get("stopPod"):
            self._retire(w.id)

    def job_stream(self, endpoint_id: str, worker_id: str, job_id: str, raw: bytes) -> None:
        self._seen(endpoint_id, worker_id)
        body = _parse_worker_json(raw)
        if not isinstance(body, dict) or "output" not in body:
            raise ApiError(400, 'job-stream body must be {"output": <chunk>}')
        job = self.store.get(job_id)
        if job is None or job.status != rp.IN_PROGRESS or job.worker_id != worker_id:
            return
        self.store.add_chunk(job_id, _json_text(body["output"]))
        self._job_signal(job_id).notify()

    def ping(self, endpoint_id: str, worker_id: str, params: dict[str, str]) -> None:
        w = self.workers.get(worker_id)
        if w is None:
            return  # a heartbeat alone does not make a worker: it must ask for work first
        self._seen(endpoint_id, worker_id)
        w.last_ping = time.time()
        w.ping_jobs = {j for j in params.get("job_id", "").split(",") if j}
        if params.get("status") == "unhealthy":
            w.unhealthy = f"{params.get('check', '?')}: {params.get('reason', '')}"
            log.warning("worker %s reports unhealthy: %s", worker_id, w.unhealthy)

    # -- transitions --------------------------------------------------------------------------

    def _finish(self, job: Job, status: str, output: str | None = None, error: str | None = None) -> None:
        now = time.time()
        retention = self.timings.retention_sync_s if job.sync else self.timings.retention_run_s
        self.store.update(
            job.id, status=status, finished_at=now, output=output, error=error,
            exec_deadline=None, delete_at=min(job.ttl_at, now + retention),
        )
        w = self.workers.get(job.worker_id or "")
        if w is not None and job.id in w.jobs:
            w.jobs.discard(job.id)
            if not w.jobs:
                w.idle_since = now
        self._job_signal(job.id).notify()
        if job.webhook:
            finished = self.store.get(job.id)
            self.webhooks.send(job.webhook, finished.status_body())

    def _stop_on_worker(self, worker_id: str | None, job_id: str) -> None:
        w = self.workers.get(worker_id or "")
        if w is not None:
            w.jobs.discard(job_id)
            w.stop_queue.append(job_id)
            w.stops[job_id] = time.time()
            w.stop_signal.notify()

    def _cancel(self, job: Job) -> None:
        running = job.status == rp.IN_PROGRESS
        self._finish(job, rp.CANCELLED)
        if running:
            self._stop_on_worker(job.worker_id, job.id)

    def _retire(self, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.draining = True
            w.stop_signal.notify()
        for ep in [*self.endpoints.values(), *self.deleted.values()]:
            if ep.supervisor and worker_id in ep.supervisor.procs:
                ep.supervisor.retire(worker_id)

    def _worker_lost(self, worker_id: str, why: str) -> None:
        w = self.workers.pop(worker_id, None)
        if w is None:
            return
        for job in self.store.in_progress(worker_id):
            self._finish(job, rp.FAILED, error=lost_worker_error(worker_id, why))
        w.stop_signal.notify()

    # -- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while not self.closing:
            try:
                self.tick(time.time())
            except Exception:  # keep serving; a bug here must not stop the emulator
                log.exception("housekeeping failed")
            await asyncio.sleep(self.timings.tick_s)

    def tick(self, now: float) -> None:
        self.blobs.sweep()
        for job_id in self.store.past_deadline(now):
            job = self.store.get(job_id)
            self._finish(
                job, rp.TIMED_OUT,
                error=f"execution timeout: the job ran longer than {job.exec_timeout_ms} ms "
                "(policy.executionTimeout)",
            )
            self._stop_on_worker(job.worker_id, job.id)
        expired = self.store.expired(now)
        if expired:
            for job_id, status, worker_id in expired:
                if status == rp.IN_PROGRESS:  # TTL ends a running job too
                    self._stop_on_worker(worker_id, job_id)
            self.store.delete([e[0] for e in expired])
            for job_id, _, _ in expired:
                self._job_signal(job_id).notify()
                self._drop_signal(job_id)
        self._check_workers(now)
        for ep in list(self.endpoints.values()):
            self._reap(ep, now)
            self._scale(ep, now)
        for ep in list(self.deleted.values()):
            self._reap(ep, now)
            if not ep.supervisor.procs:
                del self.deleted[ep.spec.id]

    def _check_workers(self, now: float) -> None:
        starting = {wid for ep in [*self.endpoints.values(), *self.deleted.values()]
                    if ep.supervisor for wid in ep.supervisor.procs}
        for w in list(self.workers.values()):
            if not w.ready and w.id in starting:
                # Its process runs and has not asked for work yet: it is still starting (an
                # official image's start command installs packages first), not lost. If it
                # never gets there, its exit is reaped.
                w.last_seen = now
                continue
            if now - w.last_seen > self.timings.lost_after_s:
                self._worker_lost(
                    w.id, f"no heartbeat or request for {self.timings.lost_after_s:g} s"
                )
                continue
            for job_id, pushed in list(w.stops.items()):
                if w.last_ping <= pushed + 0.5:  # no heartbeat since the stop was sent
                    if now - pushed > self.timings.stop_grace_s + self.timings.lost_after_s:
                        w.forget_stop(job_id)
                    continue
                if job_id not in w.ping_jobs:
                    w.forget_stop(job_id)  # the worker let go of it
                elif now - pushed > self.timings.stop_grace_s:
                    log.warning("worker %s ignores the stop of job %s; refreshing it", w.id, job_id)
                    w.forget_stop(job_id)
                    self._retire(w.id)
                elif job_id not in w.stop_queue and now - w.stop_sent.get(job_id, 0) > 1.0:
                    # The SDK drops a stop that arrives before the job became a task in the
                    # worker; its heartbeat still lists the job, so say it again.
                    log.info("re-sending the stop of job %s to worker %s", job_id, w.id)
                    w.stop_queue.append(job_id)
                    w.stop_signal.notify()

    def _reap(self, ep: EndpointState, now: float) -> None:
        if not ep.supervisor:
            return
        for wp, code in ep.supervisor.reap():
            w = self.workers.get(wp.worker_id)
            retiring = w is not None and w.draining
            crashed = not retiring and (code != 0 or w is None or not w.ready)
            self._remember_end(w or Worker(wp.worker_id, ep.spec.id, supervised=True,
                                           created_at=wp.started_at), wp, code,
                               retiring or wp.retiring_since is not None, now)
            self._worker_lost(wp.worker_id, f"its process ended ({describe_exit(code)})")
            if crashed:
                ep.crashes += 1
                ep.recent_crashes = [t for t in ep.recent_crashes if now - t < 60] + [now]
                ep.next_spawn_at = now + min(30.0, 0.5 * 2 ** (ep.crashes - 1))
                log.warning(
                    "worker %s of %s ended unexpectedly (%s); its log: %s",
                    wp.worker_id, ep.spec.id, describe_exit(code), wp.log_path,
                )

    def _remember_end(self, w: Worker, wp: WorkerProcess, code: int, retired: bool,
                      now: float) -> None:
        self.ended[w.id] = EndedWorker(w, wp.pid, wp.log_path, code, retired, now)
        old = [wid for wid, e in self.ended.items() if now - e.ended_at > ENDED_KEEP_S]
        old += list(self.ended)[:max(0, len(self.ended) - len(old) - ENDED_KEEP_MAX)]
        for wid in old:
            self.ended.pop(wid, None)

    def _scale(self, ep: EndpointState, now: float) -> None:
        """Start and retire worker processes as the endpoint's scaler settings say (§3.2)."""
        sup, spec = ep.supervisor, ep.spec
        if spec.startError and not self.closing:
            self._show_unstartable(ep, now)
            return
        if sup is None or not spec.workerCmd or self.closing:
            return
        mine = [self.workers[w] for w in sup.procs if w in self.workers]
        live = [w for w in mine if not w.draining]
        initializing = [w for w in live if not w.ready]
        in_queue, in_progress = self.store.scaling_demand(spec.id)
        if spec.scalerType == rp.SCALER_REQUEST_COUNT:
            target = math.ceil((in_queue + in_progress) / spec.scalerValue)
        elif not in_queue:
            # Nothing waits: keep the busy and starting workers; idle ones go after idleTimeout.
            target = len([w for w in live if w.jobs or not w.ready])
        else:
            target = len(live)
            if not live:
                target = 1
            elif not initializing:
                oldest = self.store.oldest_waiting(spec.id)
                idle = [w for w in live if w.ready and not w.jobs]
                if oldest is not None and now - oldest > spec.scalerValue and not idle:
                    target = len(live) + 1
        target = max(spec.workersMin, min(spec.workersMax, target))
        if target > len(live) and now >= ep.next_spawn_at:
            for _ in range(target - len(live)):
                self._spawn(ep)
        elif len(live) > target:
            surplus = len(live) - max(target, spec.workersMin)
            idle = sorted(
                (w for w in live if w.ready and not w.jobs and now - w.idle_since > spec.idleTimeout),
                key=lambda w: w.idle_since,
            )
            for w in idle[:surplus]:
                self._retire(w.id)

    def _show_unstartable(self, ep: EndpointState, now: float) -> None:
        """Workers that cannot start (on RunPod: an image it cannot pull) are shown, never run:
        as many as the scaler would start, each unhealthy with the reason. The endpoint's jobs
        wait in its queue, as on RunPod, which keeps retrying such workers for days."""
        spec = ep.spec
        in_queue, in_progress = self.store.scaling_demand(spec.id)
        want = 0
        if in_queue + in_progress:
            want = (math.ceil((in_queue + in_progress) / spec.scalerValue)
                    if spec.scalerType == rp.SCALER_REQUEST_COUNT else 1)
        want = max(spec.workersMin, min(spec.workersMax, want))
        shown = [w for w in self.workers.values() if w.endpoint == spec.id and w.placeholder]
        for w in shown[want:]:
            del self.workers[w.id]
        for w in shown[:want]:
            w.last_seen = now
        for _ in range(want - len(shown)):
            wid = new_worker_id()
            self.workers[wid] = Worker(wid, spec.id, supervised=True, placeholder=True,
                                       unhealthy=spec.startError)

    def _drop_placeholders(self, endpoint_id: str) -> None:
        for w in [w for w in self.workers.values() if w.endpoint == endpoint_id and w.placeholder]:
            del self.workers[w.id]

    def _spawn(self, ep: EndpointState) -> WorkerProcess:
        wp = ep.supervisor.spawn()
        self.workers[wp.worker_id] = Worker(wp.worker_id, ep.spec.id, supervised=True)
        return wp

    # -- signals ------------------------------------------------------------------------------

    def _job_signal(self, job_id: str) -> Signal:
        sig = self.job_signals.get(job_id)
        if sig is None:
            sig = self.job_signals[job_id] = Signal()
        return sig

    def _drop_signal(self, job_id: str) -> None:
        sig = self.job_signals.pop(job_id, None)
        if sig:
            sig.notify()


def _process_settings(spec: EndpointSpec) -> tuple:
    return (spec.workerCmd, spec.env, spec.cwd, spec.gpu, spec.release, spec.pythonEnv,
            spec.volumeMount)


def _policy_ms(policy: dict, key: str, default: int, low: int, high: int) -> int:
    value = policy.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"policy.{key} is in milliseconds and must be {low}-{high} (got {value!r})")
    return value


def _parse_worker_json(raw: bytes) -> Any:
    """Workers send JSON as ``application/x-www-form-urlencoded``: parse the bytes regardless."""
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"body is not JSON: {e}") from None


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
