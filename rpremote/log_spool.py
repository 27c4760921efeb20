"""Each job's output on disk, as it arrives: the log spool, so other processes can read it live.

RunPod's ``/stream`` hands each chunk to one reader: only the process following a job sees its
output while it runs. So that process keeps what it receives in ``<journal dir>/logs/<job>.log``
(private: 0700 directory, 0600 files), and ``rpremote logs``, ``%runpod logs`` and the
JupyterLab sidebar read that file. Appending is one ``write`` to a file kept open (no fsync:
a spool is a convenience, like the journal, and never a reason for a call to fail or slow).

A spool is bounded (``MAX_BYTES``): past that, the older half is dropped and the file starts
with a note line saying how many bytes went. Readers ask by *logical* offset (bytes ever
written), so an offset stays valid across a drop: a reader behind the drop gets the note and
what is left.

Beside each spool, ``<job>.follow`` says who follows the job: its mtime is the follower's last
sign of life (``HEARTBEAT_S``), its text the number of output batches spooled so far (so a
process that takes over a job nobody follows, ``log_follow.py``, continues where the last one
stopped instead of writing the platform's aggregate output a second time) and ``done`` once
the follower saw the job end: the spool then holds all the output there is. ``<job>.traceback``
keeps a failed job's traceback. Standard library only.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import NamedTuple

from .private import FILE_MODE, private_dir

DIRNAME = "logs"
MAX_BYTES = 4 * 1024 * 1024  # per job; past it the older half is dropped
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # all jobs' spools; past it the oldest jobs' go (on prune)
STALE_S = 20.0  # a follower silent this long is gone: someone else may take the job over
HEARTBEAT_S = 1.0  # the follow file is touched at most this often (and on each new batch)
NOTE_RE = re.compile(rb"^\[rpremote: (\d+) bytes of older output dropped\]\n")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def spool_dir(journal_dir: Path) -> Path:
    return Path(journal_dir) / DIRNAME


def safe_id(job_id: str) -> str:
    """A job id usable as a file name (platform ids are; anything else is refused)."""
    if not _SAFE_ID.match(job_id or "") or job_id.startswith("."):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def paths(directory: Path, job_id: str) -> tuple[Path, Path, Path]:
    """The spool, follow and traceback files of a job."""
    base = Path(directory) / safe_id(job_id)
    return base.with_name(base.name + ".log"), base.with_name(base.name + ".follow"), \
        base.with_name(base.name + ".traceback")


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        pass
    return fd


def _note(dropped: int) -> bytes:
    return f"[rpremote: {dropped} bytes of older output dropped]\n".encode()


class SpoolWriter:
    """Appends one job's output to its spool; one per job per following process."""

    def __init__(self, directory: Path, job_id: str, max_bytes: int = MAX_BYTES):
        self.directory = Path(directory)
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.path, self.follow_path, self.traceback_path = paths(self.directory, job_id)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._follow_fd: int | None = None
        self._batches = -1
        self._beat_at = 0.0
        self.mid_line = False  # the last text written did not end its line
        self.beaten = False  # this writer has told the follow file it follows the job
        self.decided: tuple[int | None, bool] | None = None  # (batch, spooled?) when not

    def _ensure(self) -> int:
        if self._fd is None:
            private_dir(self.directory, top=self.directory.parent)
            self._fd = _open_private(self.path, os.O_WRONLY | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def append(self, text: str, batches: int | None = None) -> None:
        """Add output; ``batches``: how many output batches of the job this text completes."""
        data = text.encode("utf-8", "replace")
        with self._lock:
            fd = self._ensure()
            os.write(fd, data)
            self._size += len(data)
            if data:
                self.mid_line = not data.endswith(b"\n")
            if self._size > self.max_bytes:
                self._drop_older()
            if batches is not None and batches != self._batches:
                self._beat(batches)

    def heartbeat(self, batches: int | None = None, done: bool = False,
                  left: bool = False) -> None:
        """The follower is alive (it is about to ask the platform for more output); ``done``:
        it saw the job end, the spool is complete; ``left``: it stepped aside."""
        now = time.monotonic()
        if batches is None and not (done or left) and now - self._beat_at < HEARTBEAT_S:
            return
        with self._lock:
            self._beat(self._batches if batches is None else batches,
                       "done" if done else "left" if left else "")

    def _beat(self, batches: int, word: str = "") -> None:
        if self._follow_fd is None:
            private_dir(self.directory, top=self.directory.parent)
            self._follow_fd = _open_private(self.follow_path, os.O_WRONLY)
        self._batches = max(batches, 0)
        text = f"{self._batches:>12} {word:4} {os.getpid():>10}\n"
        os.pwrite(self._follow_fd, text.encode(), 0)  # also the mtime
        self._beat_at = time.monotonic()
        self.beaten = True

    def _drop_older(self) -> None:
        """Keep the newer half (from a line start), after a note saying how much went."""
        with open(self.path, "rb") as f:
            data = f.read()
        dropped, header = _header(data)
        body = data[header:]
        cut = len(body) - self.max_bytes // 2
        newline = body.find(b"\n", cut)
        if 0 <= newline < len(body) - 1:
            cut = newline + 1
        kept = _note(dropped + cut) + body[cut:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = _open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, kept)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = _open_private(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(kept)

    def write_traceback(self, text: str) -> None:
        private_dir(self.directory, top=self.directory.parent)
        fd = _open_private(self.traceback_path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)

    def close(self) -> None:
        with self._lock:
            for name in ("_fd", "_follow_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                    setattr(self, name, None)


def _header(data: bytes) -> tuple[int, int]:
    """(bytes dropped so far, length of the note line) of a spool's contents."""
    m = NOTE_RE.match(data)
    return (int(m.group(1)), m.end()) if m else (0, 0)


def read(directory: Path, job_id: str, offset: int = 0) -> tuple[str, int, bool]:
    """``(text, next offset, spool exists)``: the output from logical byte ``offset`` on.
    A reader whose offset lies in what was dropped gets the note, then all that is kept.
    The end of a character cut by a concurrent write is left for the next read."""
    path = paths(directory, job_id)[0]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "", max(offset, 0), False
    dropped, header = _header(data)
    offset = min(max(int(offset), 0), dropped + len(data) - header)
    if offset < dropped:
        note, body, start = data[:header].decode(), data[header:], dropped
    else:
        note, body, start = "", data[header + offset - dropped:], offset
    text, used = _decode(body)
    return note + text, start + used, True


def _decode(chunk: bytes) -> tuple[str, int]:
    """The text of ``chunk`` and how many bytes it used (an incomplete last character is not)."""
    for trim in range(0, 4):
        part = chunk[: len(chunk) - trim] if trim else chunk
        try:
            return part.decode("utf-8"), len(part)
        except UnicodeDecodeError as e:
            if e.start < len(chunk) - 4:
                break
    return chunk.decode("utf-8", "replace"), len(chunk)


def size(directory: Path, job_id: str) -> int:
    """How many bytes of output the job's spool has received in all (0 without a spool)."""
    path = paths(directory, job_id)[0]
    try:
        with open(path, "rb") as f:
            head = f.read(80)
            total = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return 0
    dropped, header = _header(head)
    return dropped + total - header


def follower(directory: Path, job_id: str) -> tuple[float | None, int]:
    """(seconds since the follower's last sign of life or None if never, batches spooled)."""
    state = follow_state(directory, job_id)
    return state.age, state.batches


class FollowState(NamedTuple):
    age: float | None  # seconds since the follower's last sign of life; None: never followed
    batches: int  # output batches spooled so far
    done: bool  # a follower saw the job end: the spool is whole
    pid: int | None  # the last follower's process
    left: bool  # that follower stepped aside (the job's submitter follows it again)


def follow_state(directory: Path, job_id: str) -> FollowState:
    path = paths(directory, job_id)[1]
    try:
        with open(path, "rb") as f:
            text = f.read(64)
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return FollowState(None, 0, False, None, False)
    words = text.split()
    numbers = [int(w) for w in words if w.isdigit()]
    return FollowState(age, numbers[0] if numbers else 0, b"done" in words,
                       numbers[1] if len(numbers) > 1 else None, b"left" in words)


def mark_resumed(directory: Path, job_id: str) -> None:
    """The job's submitter follows it again: whoever took it over should step aside."""
    path = paths(directory, job_id)[0].with_suffix(".resumed")
    os.close(_open_private(path, os.O_WRONLY))
    os.utime(path)


def resumed_since(directory: Path, job_id: str, since: float) -> bool:
    try:
        return os.stat(paths(directory, job_id)[0].with_suffix(".resumed")).st_mtime >= since
    except FileNotFoundError:
        return False


def traceback_text(directory: Path, job_id: str) -> str | None:
    try:
        return paths(directory, job_id)[2].read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def prune(directory: Path, keep: set[str], max_total: int = MAX_TOTAL_BYTES) -> int:
    """Remove the spool files of jobs not in ``keep`` (the journal forgot them), then the
    oldest jobs' files while all spools together pass ``max_total``. Returns files removed."""
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    by_job: dict[str, list[tuple[str, os.stat_result]]] = {}
    for name in names:
        job_id, dot, suffix = name.rpartition(".")
        if suffix == "tmp":
            job_id, dot, suffix = job_id.rpartition(".")
        if not dot or suffix not in ("log", "follow", "traceback", "resumed"):
            continue
        try:
            st = os.stat(Path(directory) / name)
        except FileNotFoundError:
            continue
        by_job.setdefault(job_id, []).append((name, st))
    newest_first = sorted(by_job, key=lambda j: max(st.st_mtime for _, st in by_job[j]),
                          reverse=True)
    kept = 0
    for job_id in newest_first:
        size = sum(st.st_size for _, st in by_job[job_id])
        if job_id in keep and kept + size <= max_total:
            kept += size
            continue
        for name, _ in by_job[job_id]:
            try:
                os.unlink(Path(directory) / name)
                removed += 1
            except OSError:
                pass
    return removed
