"""One remote job: submit it, follow its events, turn its result into a value or an exception.

A call goes out through ``/runsync`` with a one-second wait: a fast call is one HTTP round
trip. A slower one continues through ``/stream`` long-polls, so its output arrives while it
runs, as the platform requires for a ``/runsync`` that returns a non-terminal status.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import platform as rp
from . import protocol
from .capture import loads
from .errors import (
    JobCancelled, JobFailed, JobTimeout, RemoteError, RemoteKeyboardInterrupt, RemoteSystemExit,
    RemoteTraceback, ResultPicklingError, SignatureError, VersionMismatch, WorkerLost,
)
from .report import Reporter

FIRST_WAIT_MS = 1_000
EMPTY_STREAM_BACKOFF_S = 0.25


class Job:
    def __init__(self, queue, endpoint: str, request: dict[str, Any], *, name: str,
                 secret: bytes, reporter: Reporter, policy: dict[str, Any] | None = None):
        self.queue = queue
        self.endpoint = endpoint
        self.request = request
        self.name = name
        self.secret = secret
        self.reporter = reporter
        self.policy = policy or {}
        self.id: str | None = None
        self.status: str | None = None
        self.worker: str | None = None
        self.submitted_at = time.monotonic()
        self._batches_seen = 0
        self._result: dict[str, Any] | None = None

    def run(self) -> Any:
        """Submit, follow to the end, return the value or raise what the function raised."""
        body: dict[str, Any] = {"input": self.request}
        if self.policy:
            body["policy"] = self.policy
        self.submitted_at = time.monotonic()
        st = self.queue.runsync(self.endpoint, body, wait_ms=FIRST_WAIT_MS)
        self.id = st["id"]
        try:
            st = self._follow(st)
        except KeyboardInterrupt:
            self._cancel_quietly()
            raise
        self.reporter.finished(self, st["status"])
        return self._outcome(st)

    # -- following ----------------------------------------------------------------------------

    def _follow(self, st: dict[str, Any]) -> dict[str, Any]:
        while st["status"] not in rp.TERMINAL_STATES:
            self._note_status(st)
            started = time.monotonic()
            s = self.queue.stream(self.endpoint, self.id)
            for chunk in s.get("stream") or ():
                self._batch(chunk.get("output"))
            if s["status"] in rp.TERMINAL_STATES:
                return self._final_status(s)
            if s["status"] != self.status and s["status"] == rp.IN_PROGRESS and not self.worker:
                s = self.queue.status(self.endpoint, self.id)
                if s["status"] in rp.TERMINAL_STATES:
                    return self._final_status(s)
            elif not s.get("stream") and time.monotonic() - started < EMPTY_STREAM_BACKOFF_S:
                time.sleep(EMPTY_STREAM_BACKOFF_S)  # a server that does not hold the poll
            st = s
        self._absorb_output(st)
        return st

    def _final_status(self, s: dict[str, Any]) -> dict[str, Any]:
        if self._result is not None and s["status"] == rp.COMPLETED:
            return s
        st = self.queue.status(self.endpoint, self.id)
        self._absorb_output(st)
        return st

    def _absorb_output(self, st: dict[str, Any]) -> None:
        self.worker = st.get("workerId") or self.worker
        out = st.get("output")
        if isinstance(out, list):
            for batch in out[self._batches_seen:]:
                self._batch(batch)

    def _note_status(self, st: dict[str, Any]) -> None:
        self.worker = st.get("workerId") or self.worker
        if st["status"] != self.status or self.worker:
            self.status = st["status"]
            self.reporter.status(self, self.status, self.worker)

    def _batch(self, batch: Any) -> None:
        self._batches_seen += 1
        for event in batch if isinstance(batch, list) else ():
            kind = event.get("t") if isinstance(event, dict) else None
            if kind == protocol.LOG:
                self.reporter.log(self, event.get("stream", "stdout"), str(event.get("data", "")))
            elif kind == protocol.RESULT:
                self._result = event

    def _cancel_quietly(self) -> None:
        try:
            self.queue.cancel(self.endpoint, self.id)
        except Exception:
            pass

    # -- outcome ------------------------------------------------------------------------------

    def _outcome(self, st: dict[str, Any]) -> Any:
        self.status = st["status"]
        if self._result is not None:
            return decode_result(self._result, self.secret, self.request["call"])
        where = f"job {self.id} on {self.endpoint}"
        if self.status == rp.TIMED_OUT:
            raise JobTimeout(f"{where} ran past its execution timeout", self.id, self.status)
        if self.status == rp.CANCELLED:
            raise JobCancelled(f"{where} was cancelled", self.id, self.status)
        error = st.get("error") or "no error message"
        lost = _worker_lost(error)
        if lost:
            raise WorkerLost("WorkerLost", lost)
        raise JobFailed(f"{where} failed without a result: {error}", self.id, self.status)


def _worker_lost(error: str) -> str | None:
    try:
        info = json.loads(error)
    except (TypeError, ValueError):
        return None
    if isinstance(info, dict) and info.get("error_type") == "WorkerLost":
        return info.get("error_message") or "the worker running the job was lost"
    return None


def decode_result(event: dict[str, Any], secret: bytes, call_id: str) -> Any:
    """The value of a signed result event, or raise the remote failure faithfully."""
    protocol.check_result(secret, call_id, event)
    if event.get("ok"):
        return loads(protocol.decode_blob(event["value"]))
    err = event.get("error") or {}
    kind, type_name = err.get("kind"), err.get("type", "Exception")
    message, tb, module = err.get("message", ""), err.get("traceback", ""), err.get("module", "")
    if kind == protocol.REFUSED_SIGNATURE:
        raise SignatureError(f"the worker refused the request: {message}")
    if kind == protocol.REFUSED_VERSION:
        raise VersionMismatch(message)
    if kind == protocol.SYSTEM_EXIT:
        exc: BaseException = RemoteSystemExit(type_name, message, tb, module)
        exc.code = err.get("code")  # type: ignore[attr-defined]
        raise exc
    if kind == protocol.KEYBOARD_INTERRUPT:
        raise RemoteKeyboardInterrupt(type_name, message, tb, module)
    if kind == protocol.RESULT_PICKLING:
        raise ResultPicklingError(type_name, message, tb, module)
    if kind == protocol.EXCEPTION and err.get("pickled"):
        try:
            original = loads(protocol.decode_blob(err["pickled"]))
        except Exception:
            original = None
        if isinstance(original, BaseException):
            original.__cause__ = RemoteTraceback(tb)
            original.remote_traceback = tb  # type: ignore[attr-defined]
            raise original
    raise RemoteError(type_name, message, tb, module)
