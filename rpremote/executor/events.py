"""From the user's thread to whoever ships events: a buffer that coalesces log text.

The user thread writes (print can be called a million times); the shipper drains in batches
whenever it is ready to send. Consecutive writes to one stream become one log event, the
shipper is woken once per batch rather than once per write, and text waiting to be sent is
bounded: past ``max_pending`` the oldest unsent text is dropped with a note saying how much.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .. import protocol

MAX_PENDING_LOG_BYTES = 8 * 1024 * 1024
BATCH_LOG_BYTES = 256 * 1024


class EventBuffer:
    def __init__(self, wake: Callable[[], None] = lambda: None,
                 max_pending: int = MAX_PENDING_LOG_BYTES):
        self._wake = wake
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._pending_log = 0
        self._dropped = 0
        self._max_pending = max_pending
        self.finished = False

    def put(self, event: dict[str, Any]) -> None:
        with self._lock:
            was_empty = not self._events
            self._events.append(event)
        if was_empty:
            self._wake()

    def progress(self, event: dict[str, Any]) -> None:
        """A progress update; one not sent yet is replaced when nothing came after it (a
        function may report on every step of a tight loop)."""
        with self._lock:
            was_empty = not self._events
            if self._events and self._events[-1]["t"] == protocol.PROGRESS:
                self._events[-1] = event
            else:
                self._events.append(event)
        if was_empty:
            self._wake()

    def log(self, stream: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            was_empty = not self._events
            last = self._events[-1] if self._events else None
            if last is not None and last["t"] == protocol.LOG and last["stream"] == stream \
                    and len(last["data"]) < BATCH_LOG_BYTES:
                last["data"] += text
            else:
                self._events.append(protocol.log_event(stream, text))
            self._pending_log += len(text)
            if self._pending_log > self._max_pending:
                self._drop_oldest_log()
        if was_empty:
            self._wake()

    def finish(self) -> None:
        with self._lock:
            self.finished = True
        self._wake()

    def drain(self) -> list[dict[str, Any]]:
        """Everything waiting, oldest first (one batch)."""
        with self._lock:
            events, self._events = self._events, []
            self._pending_log = 0
            if self._dropped:
                note = f"[rpremote: {self._dropped} bytes of output dropped: written faster than it could be sent]\n"
                events.insert(0, protocol.log_event("stderr", note))
                self._dropped = 0
        return events

    def _drop_oldest_log(self) -> None:
        for i, ev in enumerate(self._events):
            if ev["t"] == protocol.LOG:
                self._dropped += len(ev["data"])
                self._pending_log -= len(ev["data"])
                del self._events[i]
                return
