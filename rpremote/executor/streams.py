"""Per-job capture of ``sys.stdout`` / ``sys.stderr`` in a worker that runs jobs in threads.

``print``, ``logging`` handlers created on ``sys.stderr``, ``warnings`` and
``traceback.print_exc`` all write through ``sys.stdout``/``sys.stderr`` at call time, so one
router per stream, installed once, sends each write to the job of the writing thread. Threads
the user's code starts (tqdm monitors, data loaders) are not registered; their writes go to the
only running job when there is exactly one, and never from the main thread, where the SDK's
own logging runs. Output written at file-descriptor level (C extensions, subprocesses) is not
captured: it lands in the worker's log.
"""

from __future__ import annotations

import io
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

Sink = Callable[[str, str], None]
S = TypeVar("S")


class ThreadSinks(Generic[S]):
    """Which job a write (or a display) belongs to: the sink its thread registered; from a
    thread the user's code started, the only job's when exactly one runs; never from the main
    thread, where the SDK's own logging runs."""

    def __init__(self) -> None:
        self._sinks: dict[int, S] = {}
        self._lock = threading.Lock()
        self._main_thread = threading.main_thread().ident

    def current(self) -> S | None:
        ident = threading.get_ident()
        sink = self._sinks.get(ident)
        if sink is None and ident != self._main_thread and len(self._sinks) == 1:
            sink = next(iter(self._sinks.values()), None)
        return sink

    @contextmanager
    def registered(self, sink: S) -> Iterator[None]:
        """``sink`` is this thread's inside the block."""
        ident = threading.get_ident()
        with self._lock:
            self._sinks[ident] = sink
        try:
            yield
        finally:
            with self._lock:
                self._sinks.pop(ident, None)


_sinks: ThreadSinks[Sink] = ThreadSinks()
_lock = threading.Lock()


class _Router(io.TextIOBase):
    def __init__(self, name: str, fallback):
        self.name = name
        self.fallback = fallback

    def write(self, text: str) -> int:
        sink = _sinks.current()
        if sink is None:
            return self.fallback.write(text)
        sink(self.name, text)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fallback.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.fallback, "encoding", "utf-8")


def install() -> None:
    """Put the routers in place (idempotent)."""
    with _lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router("stderr", sys.stderr)


@contextmanager
def captured(sink: Sink) -> Iterator[None]:
    """Send this thread's stdout/stderr writes to ``sink(stream, text)`` inside the block."""
    install()
    with _sinks.registered(sink):
        yield
