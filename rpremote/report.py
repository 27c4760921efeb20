"""What a job is doing, told to whoever watches: the observer interface and its terminal form.

The core calls a ``Reporter``; it never prints by itself. The terminal reporter is the default
for scripts: remote output goes to this process's stdout/stderr as it arrives, each line
prefixed ``[remote:NAME]``; a status line on stderr appears only for calls that take longer
than a second (queued / running on worker W / done in T). Notebook widgets (a later issue)
implement the same methods.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol

from . import displays


class JobView(Protocol):
    name: str
    endpoint: str
    id: str | None
    submitted_at: float


class Reporter(Protocol):
    def status(self, job: JobView, status: str, worker: str | None) -> None: ...
    def log(self, job: JobView, stream: str, text: str) -> None: ...
    def finished(self, job: JobView, status: str) -> None: ...
    # Optional: display(job, data, metadata[, display_id=..., update=...]) for rich outputs
    # (Jupyter mime bundles); a reporter without it gets their text form through log().


SLOW_CALL_S = 1.0

_PHRASES = {
    "IN_QUEUE": "queued on {endpoint}",
    "IN_PROGRESS": "running on worker {worker}",
}


class TerminalReporter:
    """Plain lines; safe in a CI log (no cursor tricks)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._partial: dict[tuple[int, str], str] = {}
        self._shown: dict[int, str] = {}
        self._lock = threading.Lock()

    def _prefix(self, job: JobView) -> str:
        return f"[remote:{job.name}] "

    def log(self, job: JobView, stream: str, text: str) -> None:
        key = (id(job), stream)
        with self._lock:
            text = self._partial.pop(key, "") + text
            lines = text.split("\n")
            if lines[-1]:
                self._partial[key] = lines[-1]
            self._write(stream, "".join(self._prefix(job) + line + "\n" for line in lines[:-1]))

    def display(self, job: JobView, data: dict, metadata: dict, **how: Any) -> None:
        """A rich output: after the job's text so far; in a notebook as itself, else a line."""
        with self._lock:
            for stream in ("stdout", "stderr"):
                rest = self._partial.pop((id(job), stream), None)
                if rest is not None:
                    self._write(stream, self._prefix(job) + rest + "\n")
        if displays.publisher is not None:
            displays.publisher(data, metadata, **how)
        else:
            self.log(job, "stdout", displays.describe(data, metadata) + "\n")

    def status(self, job: JobView, status: str, worker: str | None) -> None:
        if status == "RETRYING" and not self.quiet:  # always worth a line, even for a fast call
            self._write("stderr", f"rpremote: {job.name}: {_retry_phrase(job)}\n")
            return
        if self.quiet or time.monotonic() - job.submitted_at < SLOW_CALL_S:
            return
        phrase = _PHRASES.get(status, status.lower()).format(endpoint=job.endpoint,
                                                             worker=worker or "?")
        with self._lock:
            if self._shown.get(id(job)) == phrase:
                return
            self._shown[id(job)] = phrase
        self._write("stderr", f"rpremote: {job.name}: {phrase}\n")

    def finished(self, job: JobView, status: str) -> None:
        with self._lock:
            rest = [(k, v) for k, v in self._partial.items() if k[0] == id(job)]
            for k, v in rest:
                del self._partial[k]
                self._write(k[1], self._prefix(job) + v + "\n")
            was_shown = self._shown.pop(id(job), None) is not None
        if was_shown and not self.quiet:
            took = time.monotonic() - job.submitted_at
            word = {"COMPLETED": "done", "FAILED": "failed", "CANCELLED": "cancelled",
                    "TIMED_OUT": "timed out"}.get(status, status.lower())
            self._write("stderr", f"rpremote: {job.name}: {word} in {took:.1f} s\n")

    @staticmethod
    def _write(stream: str, text: str) -> None:
        if not text:
            return
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text)
        out.flush()


def _retry_phrase(job: JobView) -> str:
    attempts = getattr(job, "attempts", None) or [("?", None)]
    job_id, exc = attempts[-1]
    reason = type(exc).__name__ if exc is not None else "a failure"
    first_line = str(exc).strip().splitlines()[0][:120] if exc is not None and str(exc).strip() else ""
    if first_line:
        reason += f": {first_line}"
    return f"attempt {len(attempts)} (job {job_id}) failed with {reason}; retrying"


def default_reporter() -> Reporter:
    """The reporter ``configure(reporter=...)`` chose, else the terminal one."""
    from . import config

    settings = config.settings()
    return settings.reporter or TerminalReporter(quiet=bool(settings.quiet))
