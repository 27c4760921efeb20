"""Durable state of the emulator: jobs, stream chunks, endpoint specs and control-plane
objects in SQLite (WAL).

The store is the source of truth, so a restarted emulator resumes its queue and still serves
finished results inside their retention. It is used from the server's event-loop thread only;
every call is a short local transaction, so no locking beyond SQLite's own is needed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import platform as rp
from ..private import private_dir, private_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sync INTEGER NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    webhook TEXT,
    s3config TEXT,
    low_priority INTEGER NOT NULL DEFAULT 0,
    exec_timeout_ms INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker_id TEXT,
    output TEXT,
    error TEXT,
    delete_at REAL NOT NULL,
    ttl_at REAL NOT NULL,
    exec_deadline REAL,
    delivered INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (endpoint, status, seq);
CREATE INDEX IF NOT EXISTS jobs_delete ON jobs (delete_at);
CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (status, exec_deadline);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (kind, id)
);
"""

JOB_COLUMNS = (
    "id endpoint seq sync status input webhook s3config low_priority exec_timeout_ms created_at "
    "started_at finished_at worker_id output error delete_at ttl_at exec_deadline delivered retries"
).split()


@dataclass
class Job:
    """One row of ``jobs``. ``output`` is JSON text or None when the job has no output key."""

    id: str
    endpoint: str
    seq: int
    sync: int
    status: str
    input: str
    webhook: str | None
    s3config: str | None
    low_priority: int
    exec_timeout_ms: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    output: str | None
    error: str | None
    delete_at: float
    ttl_at: float
    exec_deadline: float | None
    delivered: int
    retries: int

    @property
    def terminal(self) -> bool:
        return self.status in rp.TERMINAL_STATES

    def status_body(self) -> dict[str, Any]:
        """The platform's ``/status`` object for this job."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            body["delayTime"] = int((self.started_at - self.created_at) * 1000)
            body["workerId"] = self.worker_id
        if self.finished_at is not None and self.started_at is not None:
            body["executionTime"] = int((self.finished_at - self.started_at) * 1000)
        if self.output is not None:
            body["output"] = json.loads(self.output)
        if self.error is not None:
            body["error"] = self.error
        if self.retries:
            body["retries"] = self.retries
        return body


class Store:
    def __init__(self, path: Path):
        self.path = path
        private_dir(path.parent)
        private_sqlite(path)  # 0600, and so its -wal/-shm (they hold every job's payloads)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
        self._seq = row[0]

    def close(self) -> None:
        self.db.close()

    # -- jobs ---------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def insert_job(self, job: Job) -> None:
        values = [getattr(job, c) for c in JOB_COLUMNS]
        marks = ",".join("?" * len(JOB_COLUMNS))
        self.db.execute(f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({marks})", values)

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(
            f"SELECT {','.join(JOB_COLUMNS)} FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        return Job(*row) if row else None

    def update(self, job_id: str, **fields: Any) -> None:
        sets = ",".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def take_queued(self, endpoint: str, limit: int) -> list[Job]:
        rows = self.db.execute(
            f"SELECT {','.join(JOB_COLUMNS)} FROM jobs WHERE endpoint=? AND status=? "
            "ORDER BY seq LIMIT ?",
            (endpoint, rp.IN_QUEUE, limit),
        ).fetchall()
        return [Job(*r) for r in rows]

    def queued_ids(self, endpoint: str) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM jobs WHERE endpoint=? AND status=? ORDER BY seq", (endpoint, rp.IN_QUEUE)
        )
        return [r[0] for r in rows]

    def oldest_waiting(self, endpoint: str) -> float | None:
        """Submit time of the oldest queued job that may trigger a scale-up (not lowPriority)."""
        return self.db.execute(
            "SELECT MIN(created_at) FROM jobs WHERE endpoint=? AND status=? AND low_priority=0",
            (endpoint, rp.IN_QUEUE),
        ).fetchone()[0]

    def counts(self, endpoint: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE endpoint=? GROUP BY status", (endpoint,)
        )
        counts = {status: n for status, n in rows}
        retried = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE endpoint=? AND retries>0", (endpoint,)
        ).fetchone()[0]
        counts["retried"] = retried
        return counts

    def scaling_demand(self, endpoint: str) -> tuple[int, int]:
        """(queued jobs that may trigger a scale-up, jobs in progress) for the scaler."""
        counts = dict(self.db.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE endpoint=? AND "
            "((status=? AND low_priority=0) OR status=?) GROUP BY status",
            (endpoint, rp.IN_QUEUE, rp.IN_PROGRESS),
        ).fetchall())
        return counts.get(rp.IN_QUEUE, 0), counts.get(rp.IN_PROGRESS, 0)

    def active_count(self) -> int:
        """Jobs queued or running on any endpoint."""
        return self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", (rp.IN_QUEUE, rp.IN_PROGRESS)
        ).fetchone()[0]

    def queued(self) -> list[Job]:
        """Every job waiting in a queue, on any endpoint, oldest first."""
        return [Job(*r) for r in self.db.execute(
            f"SELECT {','.join(JOB_COLUMNS)} FROM jobs WHERE status=? ORDER BY seq", (rp.IN_QUEUE,))]

    def in_progress(self, worker_id: str | None = None) -> list[Job]:
        sql = f"SELECT {','.join(JOB_COLUMNS)} FROM jobs WHERE status=?"
        args: tuple = (rp.IN_PROGRESS,)
        if worker_id is not None:
            sql += " AND worker_id=?"
            args += (worker_id,)
        return [Job(*r) for r in self.db.execute(sql, args)]

    def past_deadline(self, now: float) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM jobs WHERE status=? AND exec_deadline<?", (rp.IN_PROGRESS, now)
        )
        return [r[0] for r in rows]

    def expired(self, now: float) -> list[tuple[str, str, str | None]]:
        """(id, status, worker) of jobs whose TTL or retention has run out."""
        rows = self.db.execute("SELECT id, status, worker_id FROM jobs WHERE delete_at<?", (now,))
        return list(rows)

    def delete(self, job_ids: Iterable[str]) -> None:
        ids = [(i,) for i in job_ids]
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM jobs WHERE id=?", ids)
        self.db.executemany("DELETE FROM chunks WHERE job_id=?", ids)
        self.db.execute("COMMIT")

    # -- stream chunks ------------------------------------------------------------------------

    def add_chunk(self, job_id: str, data: str) -> None:
        self.db.execute(
            "INSERT INTO chunks (job_id, n, data) VALUES "
            "(?, (SELECT COALESCE(MAX(n), 0) + 1 FROM chunks WHERE job_id=?), ?)",
            (job_id, job_id, data),
        )

    def chunks_after(self, job_id: str, after: int) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "SELECT n, data FROM chunks WHERE job_id=? AND n>? ORDER BY n", (job_id, after)
        )
        return list(rows)

    def clear_chunks(self, job_id: str) -> None:
        self.db.execute("DELETE FROM chunks WHERE job_id=?", (job_id,))

    # -- endpoints ----------------------------------------------------------------------------

    def save_endpoint(self, endpoint_id: str, spec: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO endpoints (id, spec) VALUES (?, ?) "
            "ON CONFLICT(id) DO UPDATE SET spec=excluded.spec",
            (endpoint_id, json.dumps(spec)),
        )

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE id=?", (endpoint_id,))

    def endpoints(self) -> dict[str, dict[str, Any]]:
        return {i: json.loads(s) for i, s in self.db.execute("SELECT id, spec FROM endpoints")}

    # -- control-plane objects (REST v2: endpoints, templates, network volumes) ---------------

    def put_resource(self, kind: str, resource_id: str, body: dict[str, Any]) -> None:
        """Create or replace one object; a replaced object keeps its place in the listing."""
        self.db.execute(
            "INSERT INTO resources (kind, id, body) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, id) DO UPDATE SET body=excluded.body",
            (kind, resource_id, json.dumps(body)),
        )

    def resource(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT body FROM resources WHERE kind=? AND id=?", (kind, resource_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def resources(self, kind: str, before: int | None = None,
                  limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, body)`` of the objects of a kind, newest first; ``before``: seq below this."""
        rows = self.db.execute(
            "SELECT seq, body FROM resources WHERE kind=? AND seq<? ORDER BY seq DESC LIMIT ?",
            (kind, before if before is not None else 2 ** 62, limit if limit is not None else -1),
        )
        return [(seq, json.loads(body)) for seq, body in rows]

    def delete_resource(self, kind: str, resource_id: str) -> None:
        self.db.execute("DELETE FROM resources WHERE kind=? AND id=?", (kind, resource_id))
