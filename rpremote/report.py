"""What a job is doing, told to whoever watches: the observer interface and its terminal form.

The core calls a ``Reporter``; it never prints by itself. The terminal reporter is the default
for scripts: remote output goes to this process's stdout/stderr as it arrives, each line
prefixed ``[remote:NAME]``; a status line on stderr appears only for calls that take longer
than a second (queued / running on worker W / done in T). A map reports its progress through
two optional methods, ``map_update(progress)`` and ``map_finished(progress, status)``
(a ``MapView``): on a terminal that is a progress bar (tqdm, imported only then),
in a CI log a plain line every tenth of the way or every ``MAP_LINE_EVERY_S``, and a summary.

Who reports is chosen per call by ``default_reporter(context)``: ``configure(reporter=...)``
wins; else a factory installed with ``set_default_factory`` (``%load_ext rpremote`` installs
the notebook views of ``notebook/widgets.py`` this way, so the core never imports
``notebook/``); else the terminal reporter.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from . import displays

if TYPE_CHECKING:
    from .progress_updates import Progress
    from .resources import Resources


class JobView(Protocol):
    name: str
    endpoint: str
    id: str | None
    submitted_at: float


class MapView(Protocol):
    """How far a map is, as its reporter sees it (``mapping.MapProgress``). An interface, so
    this module, which the map imports, needs nothing from the map."""

    name: str
    endpoint: str
    total: int | None
    done: int
    failed: int
    running: int  # items in jobs submitted and not yet back
    execution_s: float  # the map's billed execution time so far

    @property
    def finished(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def items_per_s(self) -> float | None: ...
    def cancel(self) -> None: ...  # from any thread: a notebook's Cancel button


class Reporter(Protocol):
    """What a job tells. Optional, looked up with ``getattr``: ``map_update(progress)`` and
    ``map_finished(progress, status)`` for a map (status ``COMPLETED``, ``FAILED``,
    ``CANCELLED`` or ``STOPPED`` when the caller stopped iterating)."""

    def status(self, job: JobView, status: str, worker: str | None) -> None: ...
    def log(self, job: JobView, stream: str, text: str) -> None: ...
    def finished(self, job: JobView, status: str) -> None: ...
    # Optional: display(job, data, metadata[, display_id=..., update=...]) for rich outputs
    # (Jupyter mime bundles); a reporter without it gets their text form through log().
    # Optional: progress(job, update) for what the function says with rpremote.progress().


@dataclass(frozen=True)
class ReportContext:
    """What a reporter factory learns about the work it will report on."""

    kind: str = "call"  # "call", "cell" (a %%runpod cell) or "map"
    blocking: bool = True  # the caller waits for it (a call, a map); False: spawn, stream, attach
    target: str | None = None  # "local", "runpod", ...
    resources: "Resources | None" = None  # GPU and price; None when not known (attach)


ReporterFactory = Callable[[ReportContext], "Reporter | None"]

SLOW_CALL_S = 1.0
PROGRESS_LINE_EVERY_S = 10.0  # progress lines: at each tenth of the way, or this often
MAP_LINE_EVERY_S = 10.0  # no-TTY map lines: at each tenth of the way, or this often
MAP_LINE_STEPS = 10

_PHRASES = {
    "IN_QUEUE": "queued on {endpoint}",
    "IN_PROGRESS": "running on worker {worker}",
}


class TerminalReporter:
    """Plain lines; safe in a CI log (no cursor tricks)."""

    def __init__(self, quiet: bool = False, tty: bool | None = None):
        self.quiet = quiet
        self.tty = tty  # None: ask stderr when a map starts
        self._partial: dict[tuple[int, str], str] = {}
        self._shown: dict[int, str] = {}
        self._lock = threading.RLock()
        self._bar: Any = None  # a tqdm bar while a map runs on a TTY
        self._map_line_at = (-MAP_LINE_EVERY_S, -1)  # (when, tenth) of the last plain map line
        self._progress_at: dict[int, tuple[float, int, str | None]] = {}  # per job: (when, tenth, message)

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

    def progress(self, job: JobView, update: "Progress") -> None:
        """A line for what the function says of its progress: when it passes a tenth of the
        way, says something new, or every 10 s; never more than one a second."""
        now = time.monotonic()
        if self.quiet or now - job.submitted_at < SLOW_CALL_S:  # a fast call says nothing
            return
        fraction = update.fraction
        tenth = int(fraction * 10) if fraction is not None else -1
        with self._lock:
            when, last_tenth, last_message = self._progress_at.get(id(job), (-1e9, -2, None))
            changed = tenth != last_tenth or update.message != last_message
            if not ((changed and now - when >= 1.0) or now - when >= PROGRESS_LINE_EVERY_S
                    or (fraction == 1.0 and tenth != last_tenth)):
                return
            self._progress_at[id(job)] = (now, tenth, update.message)
        self._write("stderr", f"rpremote: {job.name}: {update.describe()}\n")

    def finished(self, job: JobView, status: str) -> None:
        with self._lock:
            self._progress_at.pop(id(job), None)
            rest = [(k, v) for k, v in self._partial.items() if k[0] == id(job)]
            for k, v in rest:
                del self._partial[k]
                self._write(k[1], self._prefix(job) + v + "\n")
            was_shown = self._shown.pop(id(job), None) is not None
        if was_shown and not self.quiet:
            took = time.monotonic() - job.submitted_at
            word = {"COMPLETED": "done", "FAILED": "failed", "CANCELLED": "cancelled",
                    "TIMED_OUT": "timed out", "UNKNOWN": "outcome unknown"}.get(
                        status, status.lower())
            self._write("stderr", f"rpremote: {job.name}: {word} in {took:.1f} s\n")

    # -- maps --------------------------------------------------------------------------------

    def map_update(self, progress: "MapView") -> None:
        if self.quiet:
            return
        with self._lock:
            if self.tty is None:
                self.tty = _isatty(sys.stderr)
            elapsed = progress.elapsed
            if elapsed < SLOW_CALL_S and self._bar is None:
                return  # a map that ends within a second says nothing, as a call does
            if self.tty:
                self._update_bar(progress)
                return
            when, tenth = self._map_line_at
            now_tenth = (MAP_LINE_STEPS * progress.finished // progress.total
                         if progress.total else tenth)
            if now_tenth > tenth or elapsed - when >= MAP_LINE_EVERY_S:
                self._map_line_at = (elapsed, now_tenth)
                self._write("stderr", f"rpremote: map {progress.name}: {_map_counts(progress)}\n")

    def map_finished(self, progress: "MapView", status: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._bar is not None:
                self._update_bar(progress)
                self._bar.close()
                self._bar = None
            elif status == "COMPLETED" and progress.elapsed < SLOW_CALL_S:
                return
            word = {"COMPLETED": "done", "FAILED": "failed", "CANCELLED": "cancelled",
                    "STOPPED": "stopped"}.get(status, status.lower())
            self._write("stderr", f"rpremote: map {progress.name}: {word}, "
                                  f"{_map_counts(progress, final=True)}\n")

    def _update_bar(self, progress: "MapView") -> None:
        if self._bar is None:
            from tqdm import tqdm  # only a map on a terminal needs it

            try:  # a terminal that says it is 0 columns wide (a bare pty) gets a bar anyway
                sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
            except (AttributeError, OSError, ValueError):
                sized = False
            width = ({"dynamic_ncols": True} if sized
                     else {"ncols": shutil.get_terminal_size().columns})
            # Not drawn yet (delay); its clock starts when the map did, for a true rate.
            self._bar = tqdm(total=progress.total, desc=f"map {progress.name}", unit="item",
                             file=sys.stderr, leave=True, delay=1e-9, smoothing=0, **width)
            self._bar.start_t -= progress.elapsed
            fresh = True
        else:
            fresh = False
        bar = self._bar
        bar.set_postfix_str(f"{progress.failed} failed, {progress.running} running"
                            if progress.failed else f"{progress.running} running", refresh=False)
        bar.update(progress.finished - bar.n)
        if fresh:
            bar.refresh()

    def _write(self, stream: str, text: str) -> None:
        if not text:
            return
        out = sys.stderr if stream == "stderr" else sys.stdout
        bar = self._bar
        if bar is not None:  # lines go above the bar, not through it
            with self._lock:
                bar.clear()
                out.write(text)
                out.flush()
                bar.refresh()
            return
        out.write(text)
        out.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _map_counts(progress: "MapView", final: bool = False) -> str:
    """``40/100 items (38 done, 2 failed, 8 running), 4.2 items/s``."""
    total = f"/{progress.total}" if progress.total is not None else ""
    parts = [f"{progress.done} done"]
    if progress.failed:
        parts.append(f"{progress.failed} failed")
    if progress.running and not final:
        parts.append(f"{progress.running} running")
    rate = progress.items_per_s
    speed = f", {rate:.3g} items/s" if rate else ""
    took = f" in {progress.elapsed:.1f} s" if final else ""
    return f"{progress.finished}{total} items{took} ({', '.join(parts)}){speed}"


def _retry_phrase(job: JobView) -> str:
    attempts = getattr(job, "attempts", None) or [("?", None)]
    job_id, exc = attempts[-1]
    reason = type(exc).__name__ if exc is not None else "a failure"
    first_line = str(exc).strip().splitlines()[0][:120] if exc is not None and str(exc).strip() else ""
    if first_line:
        reason += f": {first_line}"
    return f"attempt {len(attempts)} (job {job_id}) failed with {reason}; retrying"


_factory: ReporterFactory | None = None


def set_default_factory(factory: ReporterFactory | None) -> ReporterFactory | None:
    """Install what makes a reporter for each call (None: back to the terminal); returns the
    previous one. The factory may return None to leave a call to the terminal reporter."""
    global _factory
    previous, _factory = _factory, factory
    return previous


def default_reporter(context: ReportContext | None = None) -> Reporter:
    """The reporter ``configure(reporter=...)`` chose, else the installed factory's (not when
    ``quiet``), else the terminal one."""
    from . import config

    settings = config.settings()
    if settings.reporter:
        return settings.reporter
    factory = _factory
    if factory is not None and not settings.quiet:
        made = factory(context or ReportContext())
        if made is not None:
            return made
    return TerminalReporter(quiet=bool(settings.quiet))
