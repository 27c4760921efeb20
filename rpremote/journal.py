"""The job journal: every job this user submitted, in one SQLite file, for the CLI and the sidebar.

``<data dir>/jobs.sqlite3`` holds one row per job: where it ran (endpoint, target), what it was
(function or cell name, kind, GPU), how it went (status, worker, times, error's first line) and
what it would cost on RunPod. Never the API key, the secret, the payload or the result: the
journal is metadata that may be shown, copied and shared.

The file is created on the first write, so ``import rpremote`` touches nothing. WAL mode and a
busy timeout make it safe from several processes and threads. The journal is a convenience,
never a reason for a call to fail: a journal that cannot be written warns once on stderr and
the call carries on. It keeps the newest ``MAX_ROWS`` jobs, pruned now and then on write.

``JournalReporter`` records jobs as they go: it wraps the reporter a ``Job`` talks to, so every
``@remote`` call, spawn, generator, ``aio`` call and map job is recorded when its id is known
and updated on each status change (one write per change, not per poll), with where it came
from (``source``: the notebook or script; ``cell``: the notebook cell's execution count). It
also keeps each job's output in its log spool (``log_spool.py``) for other processes to read.
"""

from __future__ import annotations

import atexit
import functools
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import platform as rp
from .errors import RpremoteError
from .paths import data_dir
from .private import private_dir, private_sqlite

if TYPE_CHECKING:
    import sqlite3

    from .report import JobView, Reporter
    from .resources import Resources

FILENAME = "jobs.sqlite3"
MAX_ROWS = 10_000
PRUNE_EVERY = 500  # inserts between prunes (and once on a process's first insert)
BUSY_TIMEOUT_MS = 2_000
RETRY_AFTER_FAILURE_S = 30.0  # a journal that failed is left alone this long
ERROR_MAX_CHARS = 200
RETRYING = "RETRYING"  # the job's own failure is already recorded; the next attempt is a new row
_ENDED = (*rp.TERMINAL_STATES, "EXPIRED", "UNKNOWN")
TAKE_BACK_WAIT_S = 15.0  # a submitter waits this long at most for a log follower to step aside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    target TEXT,
    name TEXT,
    kind TEXT,
    gpu TEXT,
    status TEXT,
    worker TEXT,
    submitted_at REAL,
    started_at REAL,
    finished_at REAL,
    delay_ms INTEGER,
    execution_ms INTEGER,
    cost_usd REAL,
    error TEXT,
    attempts INTEGER,
    source TEXT,
    cell TEXT,
    usd_per_s REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_submitted ON jobs (submitted_at);
"""
# Columns added after the first release: added to an older journal when it is opened.
_ADDED = (("source", "TEXT"), ("cell", "TEXT"), ("usd_per_s", "REAL"))


@dataclass(frozen=True)
class Entry:
    """One journal row. Times are epoch seconds; ``cost_usd`` is what RunPod would charge
    (flex price × execution time; None for CPU or an unknown price); on the ``local`` target
    nothing is charged, it is what the job *would* cost."""

    id: str
    endpoint: str
    target: str | None = None
    name: str | None = None
    kind: str | None = None
    gpu: str | None = None
    status: str | None = None
    worker: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    delay_ms: int | None = None
    execution_ms: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    attempts: int | None = None
    source: str | None = None  # the notebook's path, or the script (sys.argv[0]); None: unknown
    cell: str | None = None  # the notebook cell's execution count, when it came from one
    usd_per_s: float | None = None  # what a second of it costs (the cost_usd rate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(Entry))


class AmbiguousJobId(RpremoteError, LookupError):
    """A job id prefix that matches more than one job."""


class Journal:
    """One journal file; one connection per process, shared by threads under a lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: "sqlite3.Connection | None" = None
        self._warned = False
        self._failed_until = 0.0
        self._inserts = 0

    # -- writing (never raises) ----------------------------------------------------------------

    def record(self, job_id: str, endpoint: str, **values: Any) -> bool:
        """Insert a job, or update the columns given when it is there already."""
        values = _clean({"endpoint": endpoint, **values})
        names = ["id", *values]
        sql = (f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT (id) DO UPDATE SET "
               + ", ".join(f"{n} = excluded.{n}" for n in values))
        ok = self._write(sql, (job_id, *values.values()))
        if ok:
            self._inserts += 1
            if self._inserts % PRUNE_EVERY == 1:
                self.prune()
        return ok

    def update(self, job_id: str, **values: Any) -> bool:
        """Set some columns of a recorded job (nothing happens for an unknown id)."""
        values = _clean(values)
        if not values:
            return True
        sql = f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in values)} WHERE id = ?"
        return self._write(sql, (*values.values(), job_id))

    def prune(self, keep: int = MAX_ROWS) -> bool:
        """Drop all but the newest ``keep`` jobs, and the log spools of those dropped."""
        ok = self._write(
            "DELETE FROM jobs WHERE submitted_at < (SELECT submitted_at FROM jobs "
            "ORDER BY submitted_at DESC LIMIT 1 OFFSET ?)", (keep - 1,))
        if ok and self.spool_dir.exists():
            from . import log_spool

            try:
                kept = {row[0] for row in self._read("SELECT id FROM jobs", ())}
                log_spool.prune(self.spool_dir, kept)
            except Exception:
                pass
        return ok

    @property
    def spool_dir(self) -> Path:
        """Where the jobs' log spools are (``log_spool.py``): beside the journal."""
        from .log_spool import spool_dir

        return spool_dir(self.path.parent)

    def _write(self, sql: str, params: tuple) -> bool:
        import sqlite3

        if self._failed_until and time.monotonic() < self._failed_until:
            return False
        opened = False
        try:
            with self._lock:
                conn = self._connect(create=True)
                assert conn is not None
                opened = True
                conn.execute(sql, params)
            self._failed_until = 0.0
            return True
        except (sqlite3.Error, OSError) as e:
            if not opened:  # cannot be opened (read-only, not a directory): leave it a while
                self._failed_until = time.monotonic() + RETRY_AFTER_FAILURE_S
            else:  # busy past the timeout, disk full, ...: this write is lost, the next may not be
                self._drop_connection()
            if not self._warned:
                self._warned = True
                print(f"rpremote: cannot write the job journal {self.path} ({type(e).__name__}: "
                      f"{e}); jobs are not recorded there, calls go on as usual",
                      file=sys.stderr, flush=True)
            return False

    # -- reading -------------------------------------------------------------------------------

    def recent(self, limit: int = 50, status: str | None = None,
               name: str | None = None, source: str | None = None) -> list[Entry]:
        """The newest jobs first; ``status``, ``name`` and ``source`` filter exactly."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status.upper())
        if name:
            where.append("name = ?")
            params.append(name)
        if source:
            where.append("source = ?")
            params.append(source)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM jobs"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY submitted_at DESC LIMIT ?")
        return [Entry(*row) for row in self._read(sql, (*params, limit))]

    def sources(self) -> list[str]:
        """The notebooks and scripts jobs came from, most recent first."""
        rows = self._read("SELECT source, MAX(submitted_at) AS t FROM jobs "
                          "WHERE source IS NOT NULL GROUP BY source ORDER BY t DESC", ())
        return [row[0] for row in rows]

    def unended(self, limit: int = 200) -> list[Entry]:
        """The newest jobs the journal has not seen end."""
        ended = (*rp.TERMINAL_STATES, "EXPIRED", "UNKNOWN")
        sql = (f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE status IS NULL OR status NOT IN "
               f"({', '.join('?' * len(ended))}) ORDER BY submitted_at DESC LIMIT ?")
        return [Entry(*row) for row in self._read(sql, (*ended, limit))]

    def cost_between(self, start: float, end: float) -> float:
        """What the jobs that ended in ``[start, end)`` (epoch seconds) cost, in US$."""
        rows = self._read("SELECT TOTAL(cost_usd) FROM jobs WHERE finished_at >= ? "
                          "AND finished_at < ?", (start, end))
        return float(rows[0][0]) if rows else 0.0

    def get(self, job_id: str) -> Entry | None:
        """The job with this id or unique id prefix; ``AmbiguousJobId`` when several match."""
        rows = self._read(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
        if not rows and job_id:
            rows = self._read(f"SELECT {', '.join(COLUMNS)} FROM jobs "
                              "WHERE substr(id, 1, ?) = ? LIMIT 6", (len(job_id), job_id))
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise AmbiguousJobId(f"job id prefix {job_id!r} matches several jobs ({shown}); "
                                 "give more of the id")
        return Entry(*rows[0]) if rows else None

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        _after_the_call.drain()  # what this process's ended jobs left to write is read too
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return []
            return conn.execute(sql, params).fetchall()

    # -- the connection ------------------------------------------------------------------------

    def _connect(self, create: bool) -> "sqlite3.Connection | None":
        import sqlite3

        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        # Private whatever the user's umask (this is their process: its umask is theirs):
        # the directory 0700, the file 0600 before SQLite opens it, so its -wal/-shm too.
        private_dir(self.path.parent, top=data_dir())
        private_sqlite(self.path)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            for column, kind in _ADDED:
                if column not in have:
                    try:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError:  # added meanwhile by another process
                        pass
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None

    def close(self) -> None:
        self._drop_connection()


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise TypeError(f"not journal columns: {', '.join(sorted(unknown))}")
    if values.get("error"):
        values["error"] = first_line(values["error"])
    return values


def first_line(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return (lines[0] if lines else "")[:ERROR_MAX_CHARS]


class _AfterTheCall:
    """Writes an ended job leaves behind (its journal row, its spool's end), done on a thread
    of their own so that the call returns first: on a warm call they are a tenth of its time.

    Readers of the journal in this process wait for them (``drain``), and so does the
    interpreter's exit (``atexit``): a process that ends normally loses none. Only a process
    killed within the few milliseconds after a call returned may miss its last row.
    """

    def __init__(self) -> None:
        self._queue: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._done = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._warned = False

    def __call__(self, write: "Callable[[], None]") -> None:
        with self._done:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rpremote-journal",
                                                daemon=True)
                self._thread.start()
        self._queue.put(write)

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            try:
                write()
            except Exception as e:  # never the caller's problem; said once
                if not self._warned:
                    self._warned = True
                    print(f"rpremote: a job's journal row was not written ({type(e).__name__}: "
                          f"{e})", file=sys.stderr, flush=True)
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every write handed over so far is done."""
        if threading.current_thread() is self._thread:
            return
        with self._done:
            self._done.wait_for(lambda: self._pending == 0, timeout)

    def forget(self) -> None:
        """In a forked child: the thread and the queued writes belong to the parent."""
        self._queue = queue.SimpleQueue()
        self._done = threading.Condition()
        self._pending = 0
        self._thread = None


_after_the_call = _AfterTheCall()
atexit.register(_after_the_call.drain)
os.register_at_fork(after_in_child=_after_the_call.forget)
_journals: dict[Path, Journal] = {}
_journals_lock = threading.Lock()


def journal(path: Path | None = None) -> Journal:
    """The journal for ``path`` (default: ``data_dir() / "jobs.sqlite3"``), one per process."""
    path = Path(path) if path is not None else data_dir() / FILENAME
    with _journals_lock:
        found = _journals.get(path)
        if found is None:
            found = _journals[path] = Journal(path)
        return found


def record(job_id: str, endpoint: str, **values: Any) -> bool:
    return journal().record(job_id, endpoint, **values)


def update(job_id: str, **values: Any) -> bool:
    return journal().update(job_id, **values)


def recent(limit: int = 50, status: str | None = None, name: str | None = None) -> list[Entry]:
    return journal().recent(limit, status, name)


def get(job_id: str) -> Entry | None:
    return journal().get(job_id)


# -- recording jobs as they go ----------------------------------------------------------------


class JournalReporter:
    """A reporter that passes everything on to ``inner`` and writes the journal on the side:
    a row when a job's id is first seen, an update when its status or worker changes, the
    times, error and cost when it ends. Every log line also goes to the job's log spool
    (``log_spool.py``), so other processes can show the output of a job this one follows.

    ``adopted``: the journal row of a job submitted elsewhere that this process now follows
    (``log_follow.py``): its name, kind, times and source are kept, not written again."""

    def __init__(self, inner: "Reporter", *, target: str, resources: "Resources | None" = None,
                 kind: str = "call", path: Path | None = None,
                 usd_per_s: float | None = None, adopted: Entry | None = None):
        self.inner = inner
        self.target = target
        self.kind = kind
        self.gpu = resources.describe() if resources is not None else None
        # What a second of the job costs: the target's own price when it has one (a Pod's),
        # else the flex price of the function's GPU (Serverless, and the local estimate).
        self.usd_per_s = usd_per_s or (resources.flex_usd_per_s if resources is not None
                                       else None)
        self.adopted = adopted
        if adopted is not None:
            self.usd_per_s = adopted.usd_per_s
        self.journal = journal(path)
        self.source, self.cell = (None, None) if adopted is not None else origin()
        self._seen: dict[str, tuple[str, str | None]] = {}  # job id -> (status, worker) written
        self._spools: dict[str, Any] = {}  # job id -> its SpoolWriter
        self._spool_failed = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # whatever else the inner reporter offers
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- the log spool --------------------------------------------------------------------------

    def _spool(self, job: "JobView") -> Any:
        job_id = job.id
        if not job_id or self._spool_failed:
            return None
        writer = self._spools.get(job_id)
        if writer is None:
            from .log_spool import SpoolWriter

            try:
                writer = SpoolWriter(self.journal.spool_dir, job_id)
            except ValueError:  # not an id that makes a file name: not spooled
                return None
            with self._lock:
                writer = self._spools.setdefault(job_id, writer)
        return writer

    def _spooling(self, action: Any) -> None:
        """Spooling is a convenience: a failure warns once and the job goes on."""
        try:
            action()
        except OSError as e:
            self._spool_failed = True
            print(f"rpremote: cannot write the log spool in {self.journal.spool_dir} "
                  f"({type(e).__name__}: {e}); other processes will not see this job's output "
                  "live", file=sys.stderr, flush=True)

    def following(self, job: "JobView") -> int | None:
        """The job is about to be asked for more output: this process follows it. Returns,
        the first time, how many output batches another process took meanwhile (it followed
        the job for its logs: ``log_follow.py``; what they said is in the spool), else None."""
        writer = self._spool(job)
        if writer is None:
            return None
        taken = None
        if not writer.beaten:
            try:
                taken = self._take_back(writer)
            except OSError:
                taken = None
        self._spooling(lambda: writer.heartbeat(getattr(job, "_batches_seen", None)))
        return taken

    def _take_back(self, writer: Any) -> int | None:
        """Another process followed this job for its logs: ask it to step aside, wait until
        it did (one long-poll at most), and return how many batches it took."""
        from . import log_spool

        state = log_spool.follow_state(writer.directory, writer.job_id)
        if state.pid is None or state.pid == os.getpid():
            return None
        if state.age is not None and state.age < log_spool.STALE_S and not state.left \
                and not state.done:
            log_spool.mark_resumed(writer.directory, writer.job_id)
            deadline = time.monotonic() + TAKE_BACK_WAIT_S
            while time.monotonic() < deadline:
                time.sleep(0.05)
                state = log_spool.follow_state(writer.directory, writer.job_id)
                if state.left or state.done or (state.age or 0) >= log_spool.STALE_S:
                    break
        return state.batches

    def step_aside(self, job: "JobView") -> None:
        """This process followed the job for its logs and now leaves it to its submitter."""
        writer = self._spool(job)
        if writer is not None:
            self._spooling(lambda: writer.heartbeat(getattr(job, "_batches_seen", None),
                                                    left=True))
            writer.close()
            with self._lock:
                self._spools.pop(job.id or "", None)

    # -- the reporter ---------------------------------------------------------------------------

    def status(self, job: "JobView", status: str, worker: str | None) -> None:
        self.inner.status(job, status, worker)
        job_id = job.id
        if not job_id or status == RETRYING:
            return
        with self._lock:
            before = self._seen.get(job_id)
            if before == (status, worker):
                return
            self._seen[job_id] = (status, worker)
        if before is None:
            self.journal.record(job_id, **self._first(job, status))
        else:
            self.journal.update(job_id, status=status, worker=worker,
                                **self._started(job))

    def log(self, job: "JobView", stream: str, text: str) -> None:
        self.inner.log(job, stream, text)
        self._spool_text(job, text)

    def _spool_text(self, job: "JobView", text: str) -> None:
        writer = self._spool(job)
        if writer is not None and self._spools_batch(writer, job):
            self._spooling(lambda: writer.append(text, getattr(job, "_batches_seen", None)))

    def _spools_batch(self, writer: Any, job: "JobView") -> bool:
        """Whether this process writes the output it is handed now. Not when another process
        follows the job (this one only asked its status, and got the platform's whole output
        at the end: the follower writes it), nor what another follower already wrote."""
        if writer.beaten:
            return True  # this process follows the job
        batch = getattr(job, "_batches_seen", None)
        decided = writer.decided
        if decided is None or decided[0] != batch:
            state = self._other_follower(writer)
            if state is None:
                spools = True
            elif state.age is not None and state.age < _stale_s():
                spools = False  # it follows the job live, and writes this too
            else:
                spools = batch is None or batch > state.batches  # it stopped: carry on after it
            decided = writer.decided = (batch, spools)
        return decided[1]

    @staticmethod
    def _other_follower(writer: Any) -> Any:
        """The follow state when another process follows (or followed) the job, else None."""
        from . import log_spool

        try:
            state = log_spool.follow_state(writer.directory, writer.job_id)
        except OSError:
            return None
        if state.pid is None or state.pid == os.getpid() or state.left:
            return None
        return state

    def displayed(self, job: "JobView", data: dict, metadata: dict, update: bool = False) -> None:
        """A rich output the inner reporter showed as itself: its text form, on a line of its
        own, goes to the spool (an updated display, a progress bar, only once)."""
        if update:
            return
        from .displays import describe

        writer = self._spool(job)
        if writer is not None and self._spools_batch(writer, job):
            line = describe(data, metadata) + "\n"
            self._spooling(lambda: writer.append(
                ("\n" if writer.mid_line else "") + line, getattr(job, "_batches_seen", None)))

    def finished(self, job: "JobView", status: str) -> None:
        self.inner.finished(job, status)
        job_id = job.id
        if not job_id:
            return
        with self._lock:
            self._seen.pop(job_id, None)
            writer = self._spools.pop(job_id, None)
        values = self._first(job, status)
        error = traceback = None
        final = getattr(job, "_final", None) or {}
        result = getattr(job, "_result", None)
        if isinstance(result, dict) and result.get("ok") is False:
            # The platform says COMPLETED; the call raised: the journal tells the call's outcome.
            err = result.get("error") or {}
            values["status"] = rp.FAILED
            error = f"{err.get('type', 'Error')}: {first_line(err.get('message', ''))}"
            traceback = _traceback_of(err)
        elif status != rp.COMPLETED and final.get("error"):
            error = final["error"]
            if len(str(error).strip().splitlines()) > 1:
                traceback = str(error)
        execution = getattr(job, "execution_time", None)
        cost = (execution * self.usd_per_s if execution is not None and self.usd_per_s
                else None)
        values.update(finished_at=self._finished_at(job), execution_ms=_ms(execution),
                      cost_usd=cost, error=error)
        keep = self.adopted is not None and self.adopted.status in _ENDED
        batches = getattr(job, "_batches_seen", None)
        _after_the_call(lambda: self._write_ended(job, writer, traceback, batches,
                                                  None if keep else values))

    def _write_ended(self, job: "JobView", writer: Any, traceback: str | None,
                     batches: int | None, values: dict[str, Any] | None) -> None:
        """The ended job's spool is closed, marked whole, and its journal row written."""
        if writer is None:
            writer = self._spool(job)
            self._spools.pop(job.id, None)
        if writer is not None:  # the spool is whole: readers need not ask the platform
            if traceback:
                self._spooling(lambda: writer.write_traceback(traceback))
            other = None if writer.beaten else self._other_follower(writer)
            if other is None or other.age is None or other.age >= _stale_s():
                self._spooling(lambda: writer.heartbeat(batches, done=True))
            # (else the process that follows the job says when its spool is whole)
            writer.close()
        if values is not None:  # (what the journal says of an adopted, ended job stays)
            self.journal.record(job.id, **values)

    def _finished_at(self, job: "JobView") -> float:
        """Now; for an adopted job that ended before we looked, when it ended."""
        entry = self.adopted
        execution = getattr(job, "execution_time", None)
        delay = getattr(job, "delay_time", None)
        if entry is not None and entry.submitted_at and execution is not None and delay is not None:
            return min(time.time(), entry.submitted_at + delay + execution)
        return time.time()

    def _first(self, job: "JobView", status: str) -> dict[str, Any]:
        if self.adopted is not None:
            return dict(endpoint=job.endpoint, status=status,
                        worker=getattr(job, "worker", None),
                        **self._started(job, self.adopted.submitted_at))
        submitted = time.time() - (time.monotonic() - job.submitted_at)
        return dict(endpoint=job.endpoint, target=self.target, name=job.name, kind=self.kind,
                    gpu=self.gpu, status=status, worker=getattr(job, "worker", None),
                    submitted_at=submitted,
                    attempts=len(getattr(job, "attempts", None) or ()) + 1,
                    source=self.source, cell=self.cell, usd_per_s=self.usd_per_s,
                    **self._started(job, submitted))

    def _started(self, job: "JobView", submitted: float | None = None) -> dict[str, Any]:
        delay = getattr(job, "delay_time", None)
        if delay is None:
            return {}
        if submitted is None:
            submitted = (self.adopted.submitted_at if self.adopted is not None else None) or (
                time.time() - (time.monotonic() - job.submitted_at))
        return {"delay_ms": _ms(delay), "started_at": submitted + delay}


def _stale_s() -> float:
    from .log_spool import STALE_S

    return STALE_S


def _traceback_of(err: dict[str, Any]) -> str | None:
    try:
        from .tracebacks import text_of

        text = text_of(err)
    except Exception:
        text = err.get("traceback")
    return str(text) if text else None


def origin() -> tuple[str | None, str | None]:
    """Where the calls of this process come from: ``(notebook path, cell)`` in a Jupyter
    kernel (the server tells the kernel its notebook in ``JPY_SESSION_NAME``; the cell is its
    execution count), else ``(the script, None)``; ``(None, None)`` when unknown."""
    ipython = sys.modules.get("IPython")
    shell = None
    if ipython is not None:
        try:
            shell = ipython.get_ipython()
        except Exception:
            shell = None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        import os

        source = os.environ.get("JPY_SESSION_NAME") or None
        count = getattr(shell, "execution_count", None)
        return source, (str(count) if isinstance(count, int) else None)
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-m"):
        return None, None
    return _script(argv0), None


@functools.lru_cache(maxsize=8)
def _script(argv0: str) -> str:
    """The script's full path, found once (it is asked on every call; the directory it is
    relative to is the one the process started in)."""
    try:
        return str(Path(argv0).resolve())
    except OSError:
        return argv0


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))


def watching(inner: "Reporter", target: Any, resources: "Resources | None",
             kind: str) -> "Reporter":
    """``inner``, with every job it hears about recorded in the journal of this user."""
    return JournalReporter(inner, target=getattr(target, "name", str(target)),
                           resources=resources, kind=kind,
                           usd_per_s=getattr(target, "usd_per_s", None))
