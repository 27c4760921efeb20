"""``GET /v2/serverless/{id}/workers/{workerId}/logs``: a worker's log as Server-Sent Events
(runpod-rest-v2.md §4.8, §2.1).

``container`` lines are what the worker process printed (its log file under ``<state>/logs``);
``system`` lines are the emulator's about it: that it started, or why it cannot (the failed
"pull" of an image the emulator has no command for: how a caller learns why a worker is
UNHEALTHY), and that its process exited, with its exit code (how a caller learns why a start
command failed: the log of a worker that ended stays readable a while, ``engine.ENDED_KEEP_S``).
Query: ``source``, ``tail`` (0-5000, default 100; 0 = live only), ``since`` (RFC 3339);
``Last-Event-ID`` resumes after that event. The stream follows the log until the worker is
gone. Each frame: ``id: <ts>/<12-digit sequence>`` and ``data: {"ts", "source",
"line"}`` (CONFLICT §9.1.18: the text says the id is the ``ts``, the example adds the sequence;
we send the example's form, which also makes ids unique).
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ... import platform as rp
from .plane import ControlPlane, rfc3339
from .problems import Problem, invalid, not_found
from .serverless import _record, workers_of

SOURCES = ("container", "system")
POLL_S = 0.5
HEARTBEAT_S = 15.0


def _parse_time(text: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(text.replace("Z", "+0000")[:24],
                                                   "%Y-%m-%dT%H:%M:%S%z")))
    except ValueError:
        raise invalid([f"query.since: '{text}' is not an RFC 3339 time like "
                       "2026-06-01T12:00:00Z"]) from None


def _params(request: Request) -> tuple[str | None, int, float | None, int | None]:
    q = request.query_params
    source = q.get("source")
    if source is not None and source not in SOURCES:
        raise invalid([f"query.source: value must be one of {', '.join(SOURCES)}"])
    try:
        tail = int(q.get("tail", rp.LOG_TAIL_DEFAULT))
    except ValueError:
        raise invalid([f"query.tail: got '{q.get('tail')}', want integer"]) from None
    if not 0 <= tail <= rp.LOG_TAIL_MAX:
        raise invalid([f"query.tail: must be 0-{rp.LOG_TAIL_MAX}, got {tail}"])
    since = _parse_time(q["since"]) if "since" in q else None
    resume = None
    last = request.headers.get("last-event-id")
    if last:
        try:
            resume = int(last.rsplit("/", 1)[-1])
        except ValueError:
            raise Problem(400, f"Last-Event-ID {last!r} is not an event id of this "
                               "stream") from None
    return source, tail, since, resume


def _frame(seq: int, ts: float, source: str, line: str) -> str:
    data = json.dumps({"ts": rfc3339(ts), "source": source, "line": line}, ensure_ascii=False)
    return f"id: {rfc3339(ts)}/{seq:012d}\ndata: {data}\n\n"


class _LogFile:
    """Complete lines appended to a worker's log file since the last read."""

    def __init__(self, path: Path | None):
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[str]:
        if self.path is None:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]


async def worker_logs(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    endpoint_id, worker_id = record["object"]["id"], request.path_params["worker"]
    found = [w for w, _ in workers_of(cp, record) if w.id == worker_id]
    ended = cp.engine.ended.get(worker_id)
    if ended is not None and ended.worker.endpoint != endpoint_id:
        ended = None
    if not found and ended is None:
        raise not_found("worker", worker_id)
    worker = found[0] if found else ended.worker
    source, tail, since, resume = _params(request)
    ep = cp.engine.endpoints.get(endpoint_id)
    proc = ep.supervisor.procs.get(worker_id) if ep and ep.supervisor else None
    pid = proc.pid if proc else ended.pid if ended else None
    system = [f"worker {worker_id} cannot start: {worker.unhealthy}"] if worker.placeholder else \
        [f"worker {worker_id} started{f' (pid {pid})' if pid else ''}"]
    log = _LogFile(proc.log_path if proc else ended.log_path if ended else None)

    def alive() -> bool:
        w = cp.engine.workers.get(worker_id)
        return w is not None and w.endpoint == endpoint_id and not cp.engine.closing

    async def events() -> AsyncIterator[str]:
        history = [(worker.created_at, "system", line) for line in system]
        if log.path is not None:
            mtime = log.path.stat().st_mtime if log.path.exists() else time.time()
            history += [(mtime, "container", line) for line in log.read()]
        if ended is not None:
            history.append((ended.ended_at, "system", ended.describe()))
        seq = 0
        shown = []
        for ts, src, line in history:
            seq += 1
            if (source in (None, src) and (since is None or ts >= since)
                    and (resume is None or seq > resume)):
                shown.append(_frame(seq, ts, src, line))
        if resume is None:  # a resumed stream sends all it missed; a new one its tail
            shown = shown[-tail:] if tail else []
        for frame in shown:
            yield frame
        beat = time.monotonic()
        while True:
            running = alive()
            fresh = log.read() if source in (None, "container") else []
            for line in fresh:
                seq += 1
                if resume is None or seq > resume:
                    yield _frame(seq, time.time(), "container", line)
            if not running:
                end = cp.engine.ended.get(worker_id)
                if ended is None and end is not None and source in (None, "system"):
                    seq += 1  # it ended while followed: say how
                    if resume is None or seq > resume:
                        yield _frame(seq, end.ended_at, "system", end.describe())
                return
            if time.monotonic() - beat > HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
