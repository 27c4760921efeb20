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
from typing import Callable, Iterator

Sink = Callable[[str, str], None]

_sinks: dict[int, Sink] = {}
_lock = threading.Lock()
_main_thread = threading.main_thread().ident


class _Router(io.TextIOBase):
    def __init__(self, name: str, fallback):
        self.name = name
        self.fallback = fallback

    def _sink(self) -> Sink | None:
        ident = threading.get_ident()
        sink = _sinks.get(ident)
        if sink is None and ident != _main_thread and len(_sinks) == 1:
            sink = next(iter(_sinks.values()), None)
        return sink

    def write(self, text: str) -> int:
        sink = self._sink()
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
    ident = threading.get_ident()
    with _lock:
        _sinks[ident] = sink
    try:
        yield
    finally:
        with _lock:
            _sinks.pop(ident, None)
