"""What the sidebar's REST API answers, computed with blocking calls (SQLite, HTTP).

The handlers run each function here in a thread, never on Jupyter's event loop. Nothing here
starts the local emulator: a stopped emulator is reported, never replaced. Each function
returns the JSON-ready object of its route, or raises ``Problem`` (an HTTP status and words).
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

from .. import journal, log_spool
from .. import platform as rp
from ..errors import RpremoteError

REFRESH_EVERY_S = 3.0  # the job list asks the platform about unfollowed unended jobs this often
REFRESH_WITHIN_S = 24 * 3600  # ... submitted this recently (older ones are long gone)
REFRESH_AT_MOST = 50
NO_KEY = "no RunPod API key is configured (set RUNPOD_API_KEY, or run `runpodctl config`)"


class Problem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _words(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# -- jobs -------------------------------------------------------------------------------------

def job_row(e: journal.Entry, root_dir: str | None = None) -> dict[str, Any]:
    """A journal row as the API shows it; ``source_path``: the notebook's path under the
    Jupyter server's root (to open it in Lab), when it lies there."""
    return {"id": e.id, "name": e.name, "kind": e.kind, "target": e.target,
            "endpoint": e.endpoint, "gpu": e.gpu, "status": e.status, "worker": e.worker,
            "submitted_at": e.submitted_at, "started_at": e.started_at,
            "finished_at": e.finished_at, "delay_ms": e.delay_ms,
            "execution_ms": e.execution_ms, "cost_usd": e.cost_usd,
            "error": journal.first_line(e.error) if e.error else None,
            "source": e.source, "cell": e.cell, "source_path": _under(e.source, root_dir)}


def _under(path: str | None, root_dir: str | None) -> str | None:
    if not path or not root_dir:
        return None
    import os

    try:
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root_dir))
    except ValueError:
        return None
    return None if rel.startswith("..") or os.path.isabs(rel) else rel.replace(os.sep, "/")


def jobs(status: str | None = None, source: str | None = None, limit: int = 100,
         root_dir: str | None = None) -> dict[str, Any]:
    _refresh_in_background()
    j = journal.journal()
    try:
        entries = j.recent(limit=max(1, min(int(limit), 1000)), status=status or None,
                           source=source or None)
        sources = j.sources()
    except Exception as e:  # sqlite3.Error, OSError: say it, in words
        raise Problem(500, f"the job journal {j.path} cannot be read: {_words(e)}") from None
    return {"jobs": [job_row(e, root_dir) for e in entries], "now": time.time(),
            "sources": sources}


def _entry(job_id: str) -> journal.Entry:
    try:
        log_spool.safe_id(job_id)
    except ValueError:
        raise Problem(404, f"no job {job_id!r} in the job journal") from None
    try:
        entry = journal.get(job_id)
    except journal.AmbiguousJobId as e:
        raise Problem(400, str(e)) from None
    if entry is None:
        raise Problem(404, f"no job {job_id!r} in the job journal")
    return entry


def job(job_id: str, root_dir: str | None = None) -> dict[str, Any]:
    entry = _entry(job_id)
    directory = journal.journal().spool_dir
    traceback = log_spool.traceback_text(directory, entry.id)
    if traceback is None and entry.error and len(entry.error.splitlines()) > 1:
        traceback = entry.error
    return {**job_row(entry, root_dir), "traceback": traceback,
            "logs_size": log_spool.size(directory, entry.id)}


def logs(job_id: str, offset: int = 0) -> dict[str, Any]:
    """The job's output from ``offset``; a running job nobody follows is followed from here."""
    from .. import log_follow

    entry = _entry(job_id)
    note = None
    if not log_follow.complete(entry):
        note = log_follow.follow_in_background(entry)
    done = log_follow.complete(entry) or note is not None  # all there, or cannot be reached
    text, new_offset, _ = log_spool.read(journal.journal().spool_dir, entry.id, offset)
    out: dict[str, Any] = {"text": text, "offset": new_offset, "done": done}
    if note:
        out["note"] = note
    return out


def cancel(job_id: str) -> dict[str, Any]:
    from ..cli.jobs import CommandError, cancel as cancel_job

    entry = _entry(job_id)
    try:
        entry, status = cancel_job(entry.id)
    except CommandError as e:
        raise Problem(409, str(e)) from None
    except RpremoteError as e:
        raise Problem(502, _words(e)) from None
    return {"id": entry.id, "status": status}


_refreshing = threading.Lock()
_refreshed_at = 0.0


def _refresh_in_background() -> None:
    """Bring unended jobs nobody follows up to date (a spawned job reads IN_QUEUE in the
    journal until someone asks the platform), at most every ``REFRESH_EVERY_S``, in a thread:
    the list answers at once with what the journal says."""
    global _refreshed_at
    if time.monotonic() - _refreshed_at < REFRESH_EVERY_S or not _refreshing.acquire(False):
        return
    _refreshed_at = time.monotonic()

    def run() -> None:
        try:
            refresh_unended()
        except Exception:
            pass
        finally:
            _refreshing.release()

    threading.Thread(target=run, name="rpremote-refresh", daemon=True).start()


def refresh_unended() -> int:
    """Ask the platform (``/status``: it hands out no output) about the unended jobs whose
    follower is silent; the journal learns what it says. Returns how many were asked."""
    from .. import log_follow
    from ..cli.jobs import ask_and_note

    j = journal.journal()
    since = time.time() - REFRESH_WITHIN_S
    asked = 0
    queues: dict[str | None, Any] = {}
    try:
        for entry in j.unended(REFRESH_AT_MOST):
            if (entry.submitted_at or 0) < since:
                continue
            age, _ = log_spool.follower(j.spool_dir, entry.id)
            if age is not None and age < log_spool.STALE_S:
                continue  # its follower keeps the journal up to date
            if entry.target not in queues:
                try:
                    queues[entry.target] = log_follow.queue_for(entry)
                except (log_follow.CannotFollow, RpremoteError):
                    queues[entry.target] = None
            queue = queues[entry.target]
            if queue is None:
                continue
            if ask_and_note(queue, entry):
                asked += 1
    finally:
        for target, queue in queues.items():
            if queue is not None and target != "pod":
                queue.close()
    return asked


# -- endpoints --------------------------------------------------------------------------------

def _runpod_key() -> str | None:
    from .. import config

    return config.runpod_api_key()[0]


def endpoints() -> dict[str, Any]:
    return {"local": _local_endpoints(), "runpod": _runpod_endpoints()}


def _local_endpoints() -> dict[str, Any]:
    from ..client.local import LocalEmulator
    from ..client.queue import QueueClient

    out: dict[str, Any] = {"running": False, "url": None, "endpoints": [], "error": None}
    try:
        emulator = LocalEmulator.running()
    except Exception as e:
        out["error"] = f"the local emulator's state cannot be read: {_words(e)}"
        return out
    if emulator is None:
        return out
    out.update(running=True, url=emulator.url)
    try:
        specs = emulator.endpoints()
        queue = QueueClient(emulator.url, emulator.key,
                            where=f"the local emulator (pid {emulator.pid})")
        try:
            rows = []
            for spec in specs:
                health = queue.health(spec["id"])
                workers, jobs_ = health.get("workers") or {}, health.get("jobs") or {}
                rows.append({
                    "id": spec["id"], "gpu": spec.get("gpu") or "CPU",
                    "workers": {k: int(workers.get(k, 0))
                                for k in ("idle", "running", "initializing")},
                    "queue": {k: int(jobs_.get(k, 0)) for k in ("inQueue", "inProgress")},
                    "workersMin": spec.get("workersMin"), "workersMax": spec.get("workersMax"),
                    "idleTimeout": spec.get("idleTimeout"),
                    "usd_per_h": _usd_per_hour(spec.get("gpu")),  # what RunPod would charge
                })
        finally:
            queue.close()
        out["endpoints"] = rows
    except RpremoteError as e:
        out["error"] = _words(e)
    return out


def _usd_per_hour(gpu: Any) -> float | None:
    """What a worker of this GPU (``Resources.describe()``: ``ADA_24``, ``2 x (A | B)``) would
    cost per hour on RunPod, flex: the dearest choice, as the journal's estimates."""
    if not isinstance(gpu, str) or not gpu or gpu.upper() == "CPU":
        return None
    count, text = 1, gpu
    if " x " in gpu:
        head, _, text = gpu.partition(" x ")
        try:
            count = int(head)
        except ValueError:
            return None
    prices = []
    for choice in text.strip("()").split("|"):
        spec = rp.GPU_POOLS.get(choice.strip())
        prices.append(getattr(spec, "flex_usd_per_s", None) if spec is not None else None)
    if not prices or any(p is None for p in prices):
        return None
    return max(prices) * 3600 * count  # type: ignore[type-var]


def _runpod_endpoints() -> dict[str, Any]:
    out: dict[str, Any] = {"configured": False, "endpoints": [], "error": None}
    key = _runpod_key()
    if not key:
        out["error"] = NO_KEY
        return out
    out["configured"] = True
    from ..cli.runpod_endpoints import listing
    from ..client.control import ControlPlane

    try:
        with ControlPlane.from_settings() as cp:
            result = listing(cp, key)
        # cli/runpod_endpoints' rows, with the fields the local rows have too: ``gpu`` as text
        # (the API's object stays as ``gpuSpec``), ``usd_per_h`` (one worker's flex price).
        out["endpoints"] = [{**row, "gpu": row["compute"], "gpuSpec": row.get("gpu"),
                             "pool": row["compute"], "usd_per_h": row["usdPerHourPerWorker"]}
                            for row in result["endpoints"]]
        out["notOurs"] = result["notOurs"]
        if result["problems"]:
            out["error"] = "; ".join(result["problems"])
    except RpremoteError as e:
        out["error"] = _words(e)
    return out


def delete_endpoint(endpoint_id: str, target: str) -> dict[str, Any]:
    from ..cli import down

    if target not in ("local", "runpod"):
        raise Problem(400, f"target must be local or runpod (got {target!r})")
    try:
        if target == "local":
            account = down.local_account()
            if account is None:
                raise Problem(404, "the local emulator is not running: it has no endpoints")
            return _delete_in(account, endpoint_id)
        if not _runpod_key():
            raise Problem(400, NO_KEY)
        from ..client.control import ControlPlane

        with ControlPlane.from_settings() as cp:
            return _delete_in(down.runpod_account(cp), endpoint_id)
    except RpremoteError as e:
        raise Problem(502, _words(e)) from None


def _delete_in(account: Any, endpoint_id: str) -> dict[str, Any]:
    from ..cli import down

    chosen, refused, unknown = down.choose(account, [endpoint_id])
    if refused:
        raise Problem(403, refused[0])
    if unknown or not chosen:
        raise Problem(404, f"no endpoint {endpoint_id!r} in {account.where}")
    outcome = account.delete(chosen[0])
    if outcome == down.SKIPPED:
        raise Problem(403, f"endpoint {endpoint_id} is no longer marked as rpremote's: "
                           "not deleted")
    return {"deleted": chosen[0]["id"]}


# -- Pods -------------------------------------------------------------------------------------

def _our_pods(plane: Any) -> list[dict[str, Any]]:
    from ..client.control.ours import MANAGED_ENV

    return [p for p in plane.request("GET", "/v2/pods").get("pods", [])
            if MANAGED_ENV in (p.get("env") or {}) and p.get("status") != "TERMINATED"]


def pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    from ..client import pod as pods

    price = pods.price_per_hour(pod)
    runtime = pod.get("runtime") or {}
    uptime = runtime.get("uptime")
    gpu = pod.get("gpu") or {}
    return {"id": pod["id"], "name": pod.get("name"), "status": pod.get("status"),
            "gpu": gpu.get("id") if isinstance(gpu, dict) else None,
            "count": int(gpu.get("count") or 0) if isinstance(gpu, dict) else 0,
            "uptime_s": uptime, "usd_per_h": price,
            "cost_so_far_usd": price * uptime / 3600 if price and uptime else (0.0 if price else None),
            "url": pods.proxy_url(pod["id"])}


def pods() -> dict[str, Any]:
    if not _runpod_key():
        return {"pods": [], "error": NO_KEY}
    from ..client.control import ControlPlane

    global _pods_seen
    try:
        with ControlPlane.from_settings() as plane:
            listed = {"pods": [pod_row(p) for p in _our_pods(plane)], "error": None}
    except RpremoteError as e:
        listed = {"pods": [], "error": _words(e)}
    _pods_seen = (time.monotonic(), listed)
    return listed


_pods_seen: tuple[float, dict[str, Any]] | None = None
PODS_FRESH_S = 10.0  # the cost's burn rate asks RunPod for the Pods at most this often


def _recent_pods() -> dict[str, Any]:
    global _pods_seen
    seen = _pods_seen
    if seen is not None and time.monotonic() - seen[0] < PODS_FRESH_S:
        return seen[1]
    listed = pods()
    _pods_seen = (time.monotonic(), listed)
    return listed


def pod_action(pod_id: str, action: str) -> dict[str, Any]:
    if action not in ("stop", "terminate"):
        raise Problem(404, f"no Pod action {action!r} (stop or terminate)")
    if not _runpod_key():
        raise Problem(400, NO_KEY)
    from ..client.control import ControlPlane

    try:
        with ControlPlane.from_settings() as plane:
            pod = next((p for p in _our_pods(plane) if p.get("id") == pod_id), None)
            if pod is None:
                raise Problem(404, f"no Pod {pod_id!r} made by rpremote under this key "
                                   "(other Pods are never touched)")
            global _pods_seen
            _pods_seen = None  # the burn rate changes now
            if action == "terminate":
                plane.request("DELETE", f"/v2/pods/{pod_id}")
                return {"id": pod_id, "status": "TERMINATED"}
            if "stop" not in (pod.get("actions") or ["stop"]):
                return {"id": pod_id, "status": pod.get("status")}
            after = plane.request("POST", f"/v2/pods/{pod_id}/action", json={"action": "stop"})
            status = (after or {}).get("status") if isinstance(after, dict) else None
            return {"id": pod_id, "status": status or "EXITED"}
    except RpremoteError as e:
        raise Problem(502, _words(e)) from None


# -- cost -------------------------------------------------------------------------------------

def cost() -> dict[str, Any]:
    """Spend today and this month (local time) from the journal, and the burn rate now:
    running Pods' $/h plus, for each running job, its $/s x 3600. Jobs on the local target
    count what they *would* cost on RunPod, as the journal records."""
    now = datetime.datetime.now().astimezone()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    j = journal.journal()
    end = now.timestamp() + 1
    try:
        month_usd = j.cost_between(month.timestamp(), end)
        today_usd = j.cost_between(day.timestamp(), end)
        running = j.recent(limit=500, status=rp.IN_PROGRESS)
    except Exception as e:
        raise Problem(500, f"the job journal {j.path} cannot be read: {_words(e)}") from None
    burn = sum(((e.usd_per_s or 0.0) * 3600 for e in running
               if e.target != "pod"), 0.0)  # a Pod's jobs are paid by the Pod's own $/h
    pods_error = None
    if _runpod_key():
        listed = _recent_pods()
        pods_error = listed["error"]
        burn += sum(p["usd_per_h"] or 0.0 for p in listed["pods"] if p["status"] == "RUNNING")
    return {"today_usd": today_usd, "month_usd": month_usd,
            "burn_usd_per_h": burn, "error": pods_error}
