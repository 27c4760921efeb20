"""Following a job that was submitted elsewhere, so that its output reaches the log spool.

The process that submits a job follows it while it waits for its result; a spawned job whose
process ended (or never waited) is followed by nobody, and RunPod keeps a running job's output
for whoever reads ``/stream``. So whoever asks for the logs of such a job first — ``rpremote
logs``, ``%runpod logs``, the JupyterLab sidebar — takes it over: a lock file
(``<job>.follow``, ``flock``) makes sure one process does, and the spool's batch count makes
it continue where the last follower stopped. Taking over only happens when the job's follower
has been silent for ``log_spool.STALE_S``.

The job is reached on the target it ran on (the journal says which), never by starting the
local emulator: a job that ran on an emulator that is gone is gone with it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Any, Callable

from . import journal, log_spool
from . import platform as rp

ENDED = (*rp.TERMINAL_STATES, "EXPIRED", "UNKNOWN")


class CannotFollow(Exception):
    """The job cannot be reached (its emulator is gone, the target has no key, ...)."""


def ended(entry: journal.Entry) -> bool:
    return entry.status in ENDED


def complete(entry: journal.Entry, path: Any = None) -> bool:
    """The job ended and its spool holds all its output (a follower saw the end)."""
    return ended(entry) and log_spool.follow_state(journal.journal(path).spool_dir,
                                                   entry.id).done


def queue_for(entry: journal.Entry) -> Any:
    """A queue client (``QueueClient``) for the target the job ran on; never starts anything.
    Raises ``CannotFollow`` saying why there is none."""
    from .client.queue import QueueClient

    if entry.target in (None, "local"):
        from .client.local import LocalEmulator

        emulator = LocalEmulator.running()
        if emulator is None:
            raise CannotFollow(f"the local emulator is not running, so job {entry.id} is gone "
                               "with it (it stops after 15 idle minutes)")
        return QueueClient(emulator.url, emulator.key,
                           where=f"the local emulator (pid {emulator.pid})")
    if entry.target == "runpod":
        from . import config
        from .client.control.plane import queue_url_setting

        key, _ = config.runpod_api_key()
        if not key:
            raise CannotFollow(f"job {entry.id} ran on RunPod and no RunPod API key is set: "
                               + config.API_KEY_HOW)
        url, _ = queue_url_setting()
        return QueueClient(url, key, where=f"RunPod's job API at {url}")
    if entry.target == "pod":
        from .errors import RpremoteError

        try:
            from .client.pod import PodTarget

            return PodTarget().queue
        except RpremoteError as e:
            raise CannotFollow(f"job {entry.id} ran on rpremote's Pod: {e}") from None
    raise CannotFollow(f"job {entry.id} ran on the {entry.target!r} target, which this "
                       "version of rpremote cannot reach")


class _Silent:
    """The reporter under the journal's for a job followed only for its spool."""

    def status(self, job: Any, status: str, worker: str | None) -> None:
        pass

    def log(self, job: Any, stream: str, text: str) -> None:
        pass

    def finished(self, job: Any, status: str) -> None:
        pass


class Takeover:
    """This process follows ``entry``'s job until it ends (holding its follow lock)."""

    def __init__(self, entry: journal.Entry, lock_fd: int, path: Any = None):
        self.entry = entry
        self._lock_fd = lock_fd
        self._path = path
        self.problem: str | None = None
        self.stopped = threading.Event()
        self._since = time.time() - 0.01

    def run(self, stop: Callable[[], bool] | None = None) -> None:
        """Follow until the job ends or ``stop()`` says so (asked between long-polls);
        problems end up in ``problem``."""
        from .client.drive import drive
        from .errors import RpremoteError

        queue = None
        try:
            queue = queue_for(self.entry)
            job = _adopted_job(self.entry, queue, self._path)
            directory = journal.journal(self._path).spool_dir
            while not job.done:
                if log_spool.resumed_since(directory, job.id, self._since) or (stop and stop()):
                    # The job's submitter follows it again (it waits for its result), or we
                    # were told to stop: step aside, saying how many batches were taken, so
                    # whoever follows next reads on from there.
                    job.reporter.step_aside(job)
                    break
                drive(job._step(None), job._perform)  # one long-poll (seconds at most)
        except CannotFollow as e:
            self.problem = str(e)
        except (RpremoteError, OSError) as e:
            # EXPIRED / UNKNOWN were recorded by the job itself; say what happened in words.
            self.problem = " ".join(str(e).split())
        except Exception as e:  # never let a follower thread die with a traceback
            self.problem = f"{type(e).__name__}: {e}"
        finally:
            if queue is not None and self.entry.target != "pod":
                try:
                    queue.close()
                except Exception:
                    pass
            self.release()
            self.stopped.set()

    def release(self) -> None:
        if self._lock_fd >= 0:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = -1


def _adopted_job(entry: journal.Entry, queue: Any, path: Any = None) -> Any:
    from . import config
    from .client.drive import drive
    from .job import Job

    j = journal.journal(path)
    _, batches = log_spool.follower(j.spool_dir, entry.id)
    reporter = journal.JournalReporter(_Silent(), target=entry.target or "local",
                                       kind=entry.kind or "call", path=path, adopted=entry)
    secret, _ = config.secret_source()
    job = Job(queue, entry.endpoint, secret=secret, name=entry.name or entry.id,
              reporter=reporter, call_id=None, job_id=entry.id)
    job._batches_seen = batches  # what earlier followers spooled is not written again
    job._absorb(drive(job._status_steps(), job._perform))
    return job


def _followed(directory: Any, entry: journal.Entry) -> bool:
    """Whether there is nothing to take over: the spool is whole, or a process follows the
    job (a sign of life within ``STALE_S``; one that stepped aside for the job's submitter
    counts until the submitter's own signs of life come)."""
    state = log_spool.follow_state(directory, entry.id)
    if state.done and ended(entry):
        return True
    if state.age is None or state.age >= log_spool.STALE_S or state.pid is None:
        return False  # (no pid: an empty follow file, made by a taker that holds its lock)
    if not state.left:
        return True
    return log_spool.resumed_since(directory, entry.id, time.time() - log_spool.STALE_S)


def take_over(entry: journal.Entry, path: Any = None) -> Takeover | None:
    """A ``Takeover`` when nobody follows the job and its spool is not whole yet (it runs, or
    it ended unseen: its output is then asked of the platform once); its follow lock is this
    process's then. None when the spool is whole or someone follows the job."""
    j = journal.journal(path)
    directory = j.spool_dir
    if _followed(directory, entry):
        return None
    from .private import private_dir

    private_dir(directory, top=directory.parent)
    follow_path = log_spool.paths(directory, entry.id)[1]
    fd = os.open(follow_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # another process is taking it over right now
    if _followed(directory, entry):  # looked again, under the lock
        os.close(fd)
        return None
    return Takeover(entry, fd, path)


_threads: dict[str, Takeover] = {}
_threads_lock = threading.Lock()
_problems: dict[str, tuple[float, str]] = {}  # job id -> (when, why it could not be followed)


def follow_in_background(entry: journal.Entry, path: Any = None) -> str | None:
    """Make sure someone follows the job (a daemon thread of this process, if nobody does).
    Returns the reason it cannot be followed, if the last try here failed (else None)."""
    with _threads_lock:
        running = _threads.get(entry.id)
        if running is not None and not running.stopped.is_set():
            return None
        failed = _problems.get(entry.id)
    if failed is not None and time.monotonic() - failed[0] < log_spool.STALE_S:
        return failed[1]  # tried again after a while, not on every poll
    takeover = take_over(entry, path)
    if takeover is None:
        return None
    with _threads_lock:
        _threads[entry.id] = takeover
        _problems.pop(entry.id, None)

    def run() -> None:
        takeover.run()
        with _threads_lock:
            if takeover.problem:
                _problems[entry.id] = (time.monotonic(), takeover.problem)
            if _threads.get(entry.id) is takeover:
                del _threads[entry.id]

    threading.Thread(target=run, name=f"rpremote-follow-{entry.id[:13]}", daemon=True).start()
    return None


def problem(job_id: str) -> str | None:
    """Why the last follower of this process could not follow the job, if it could not."""
    with _threads_lock:
        failed = _problems.get(job_id)
    return failed[1] if failed else None
