"""Routes ``rpremote.progress(...)`` calls to the job of the calling thread.

The same per-thread routing as a job's prints (``streams.ThreadSinks``): a call from the
job's thread, or from a thread its code started while it is the only job, reaches that job;
any other call (the SDK's main thread) is dropped.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from .. import progress_updates as user_api
from .streams import ThreadSinks

Sink = Callable[[user_api.Progress], None]
_sinks: ThreadSinks[Sink] = ThreadSinks()


def _route(update: user_api.Progress) -> None:
    sink = _sinks.current()
    if sink is not None:
        sink(update)


@contextmanager
def captured(sink: Sink) -> Iterator[None]:
    """Send this thread's progress updates to ``sink`` inside the block."""
    user_api.route = _route
    with _sinks.registered(sink):
        yield
