"""One remote job: a handle to submit it, follow its events, and get its value or exception.

A blocking call goes out through ``/runsync`` with a one-second wait, so a fast call is one
HTTP round trip; a slower one continues through ``/stream`` long-polls, so output arrives while
it runs (a ``/runsync`` that returns a non-terminal status must be followed, the platform
says). ``spawn`` and generators use ``/run`` and follow the same way.

Ctrl-C while following cancels the remote job before ``KeyboardInterrupt`` goes up; while a
job is being submitted the interrupt is held until its id is known (``interrupts``). With a
``Retries`` policy, ``result()`` submits the same signed request again after a lost worker or
a named exception; ``attempts`` lists the ids that failed.

A job on a local emulator that stops (killed, out of memory) ends ``UNKNOWN`` as soon as a
request finds the emulator's process gone: ``OutcomeUnknown`` says so, the journal records it,
and it is never sent again (it may have run) nor followed on the emulator that replaces it.

A ``Job`` is followed lazily, by whoever asks for its events, logs or result; every event is
kept, so ``events()`` can be iterated again from the start. One thread at a time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator

from . import platform as rp
from . import displays, protocol, tracebacks
from .capture import devices, loads
from .errors import (
    EmulatorStopped, JobCancelled, JobExpired, JobFailed, JobTimeout, OutcomeUnknown, RemoteError,
    RemoteKeyboardInterrupt, RemoteSystemExit, RemoteTraceback, ResultPicklingError, SignatureError,
    VersionMismatch, WorkerLost,
)
from .client.drive import adrive, drive, sleep
from .frames import user_facing
from .interrupts import held_interrupt
from .progress_updates import Progress
from .report import Reporter
from .retries import Retries

FIRST_WAIT_MS = 1_000
RETRYING = "RETRYING"  # between a failed attempt and the next (not a platform state)
EXPIRED = "EXPIRED"  # the platform deleted the job (ttl); /status answers 404
UNKNOWN = "UNKNOWN"  # the emulator holding the job stopped before telling its outcome
EMPTY_STREAM_BACKOFF_S = 0.25
STATUS_FRESH_S = 0.5  # `job.status` asks the platform again when its news is older than this
SHORT_WAIT_S = 5.0  # below this much time left, poll /status instead of holding a /stream
MAX_KEPT_LOG_CHARS = 10 * 1024 * 1024


class Job:
    """A remote job: ``id``, ``status``, ``result()``, ``wait()``, ``cancel()``, ``logs``, ``events()``."""

    def __init__(self, queue, endpoint: str, *, secret: bytes, name: str, reporter: Reporter,
                 call_id: str | None, job_id: str | None = None, retries: Retries | None = None,
                 fetch: protocol.Fetch | None = None, result_device: str = "cpu"):
        self.queue = queue
        self.endpoint = endpoint
        self.secret = secret
        self.name = name
        self.reporter = reporter
        self.call_id = call_id
        self.id: str | None = job_id
        self._status: str | None = None
        self._seen_at = 0.0  # when the platform last told us the status
        self._lock = threading.RLock()  # a follower thread and `status` both absorb replies
        self.worker: str | None = None
        self.delay_time: float | None = None  # seconds in the queue
        self.execution_time: float | None = None  # seconds running
        self.submitted_at = time.monotonic()
        self._events: list[dict[str, Any]] = []
        self.progress: Progress | None = None  # what the function last said with rpremote.progress
        self._logs: list[str] = []
        self._log_chars = 0
        self._batches_seen = 0
        self._result: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self.retries = retries
        self.fetch = fetch  # big pieces of results come from the target's offload store
        self.result_device = result_device  # where tensors in results land (capture.tensors)
        self.attempts: list[tuple[str, BaseException]] = []  # (job id, why) of failed tries
        self._submission: tuple[dict[str, Any], dict[str, Any] | None, bool] | None = None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} on {self.endpoint}: {self._status}>"

    @property
    def status(self) -> str | None:
        """The platform's state (``IN_QUEUE``, ``IN_PROGRESS``, ``COMPLETED``, ...), asked afresh
        when the last news is older than half a second; the last known one if the platform
        cannot be reached (``refresh()`` raises instead)."""
        if self.id is not None and not self.done and time.monotonic() - self._seen_at > STATUS_FRESH_S:
            try:
                self.refresh()
            except Exception:
                pass
        return self._status

    @user_facing
    def refresh(self) -> str | None:
        """Ask the platform for the job's state now (status, worker, times); returns the status."""
        if self.id is None or self.done:
            return self._status
        self._absorb(drive(self._status_steps(), self._perform))
        return self._status

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, request: dict[str, Any], policy: dict[str, Any] | None, *, sync: bool) -> "Job":
        """Send the request (``/runsync`` when ``sync``, else ``/run``); returns at once after."""
        with held_interrupt() as interrupted:
            drive(self._submit_steps(request, policy, sync), self._perform)
            if interrupted:
                self.cancel()  # then the held KeyboardInterrupt is raised
        return self

    async def asubmit(self, request: dict[str, Any], policy: dict[str, Any] | None, *,
                      sync: bool) -> "Job":
        """``submit`` on the event loop; cancelling the task still cancels the job it made."""
        sending = asyncio.ensure_future(adrive(self._submit_steps(request, policy, sync),
                                               self._aperform))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            await _quietly(sending)  # the job may exist already: learn its id, then stop it
            await self.acancel()
            raise
        return self

    def _submit_steps(self, request: dict[str, Any], policy: dict[str, Any] | None, sync: bool):
        self._submission = (request, policy, sync)
        body: dict[str, Any] = {"input": request}
        if policy:
            body["policy"] = policy
        self.submitted_at = time.monotonic()
        try:
            if sync:
                st = yield ("runsync", self.endpoint, body, FIRST_WAIT_MS)
            else:
                st = yield ("run", self.endpoint, body)
        except EmulatorStopped as e:
            if e.sent is False:
                raise  # nothing left: the caller may send it to the emulator that replaces it
            raise OutcomeUnknown(
                f"{e.where} stopped while {self.name} was being submitted: whether its job was "
                "queued, and ran, is unknown (the next call starts a new emulator)",
                None, UNKNOWN) from None
        self.id = st["id"]
        self._absorb(st)

    @classmethod
    @user_facing
    def attach(cls, job_id: str, endpoint: str, *, name: str | None = None) -> "Job":
        """A handle to a job submitted elsewhere (another process), on the current target.

        Its result is accepted when signed with your secret; which call it answers cannot be
        checked here, since the request is not known to this process.
        """
        from . import config
        from .client import targets
        from .report import default_reporter

        secret, _ = config.secret_source()
        target = targets.current()
        job = cls(target.queue, endpoint, secret=secret, name=name or job_id,
                  reporter=default_reporter(), call_id=None, job_id=job_id,
                  fetch=target.blobs.fetch)
        job._absorb(drive(job._status_steps(), job._perform))
        return job

    def _perform(self, action: tuple) -> Any:
        return self.queue.call(*action)

    async def _aperform(self, action: tuple) -> Any:
        return await self.queue.for_loop().call(*action)

    # -- public surface -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._final is not None

    @property
    def logs(self) -> str:
        """The output seen so far (stdout and stderr interleaved as they arrived)."""
        return "".join(self._logs)

    @user_facing
    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Every event (log, item, display, progress, result) from the start, then new ones
        as they arrive."""
        deadline = _deadline(timeout)
        n = 0
        while True:
            while n < len(self._events):
                n += 1
                yield self._events[n - 1]
            if self.done:
                return
            drive(self._step(deadline), self._perform)

    @user_facing
    async def aevents(self, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """``events`` for asyncio: ``async for event in job.aevents()``."""
        deadline = _deadline(timeout)
        n = 0
        while True:
            while n < len(self._events):
                n += 1
                yield self._events[n - 1]
            if self.done:
                return
            await adrive(self._step(deadline), self._aperform)

    @user_facing
    def wait(self, timeout: float | None = None) -> "Job":
        """Follow the job until it ends; ``TimeoutError`` if ``timeout`` seconds pass first.

        Ctrl-C while waiting cancels the remote job, then raises ``KeyboardInterrupt``.
        """
        deadline = _deadline(timeout)
        try:
            while not self.done:
                drive(self._step(deadline), self._perform)
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self

    @user_facing
    async def await_done(self, timeout: float | None = None) -> "Job":
        """``wait`` for asyncio; cancelling the awaiting task cancels the remote job."""
        deadline = _deadline(timeout)
        try:
            while not self.done:
                await adrive(self._step(deadline), self._aperform)
        except (asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.shield(self.acancel())
            raise
        return self

    @user_facing
    def result(self, timeout: float | None = None) -> Any:
        """The function's value, or raise what it raised (see ``decode_result``).

        With ``retries``, a failure that earns a retry submits the call again (after the
        policy's backoff) and follows the new job; ``timeout`` covers all attempts.
        """
        deadline = _deadline(timeout)
        while True:
            self.wait(_left(deadline))
            delay, value = self._retry_or_raise(deadline)
            if delay is None:
                return value
            time.sleep(delay)
            request, policy, sync = self._again()
            self.submit(request, policy, sync=sync)

    @user_facing
    async def aresult(self, timeout: float | None = None) -> Any:
        """``result`` for asyncio (``await job`` does this)."""
        deadline = _deadline(timeout)
        while True:
            await self.await_done(_left(deadline))
            delay, value = self._retry_or_raise(deadline)
            if delay is None:
                return value
            await asyncio.sleep(delay)
            request, policy, sync = self._again()
            await self.asubmit(request, policy, sync=sync)

    def __await__(self):
        return self.aresult().__await__()

    @user_facing
    def cancel(self) -> None:
        """Cancel: a queued job is removed, a running one gets the platform's stop signal."""
        if self.id is None or self.done:
            return
        with held_interrupt():  # a second Ctrl-C must not stop the cancel from going out
            try:
                st = self.queue.cancel(self.endpoint, self.id)
            except Exception:
                return
            if st.get("status") in rp.TERMINAL_STATES:
                with self._lock:  # a Cancel button's thread, beside the follower
                    self._finish(st)

    @user_facing
    async def acancel(self) -> None:
        """``cancel`` for asyncio."""
        if self.id is None or self.done:
            return
        try:
            st = await self._aperform(("cancel", self.endpoint, self.id))
        except Exception:
            return
        if st.get("status") in rp.TERMINAL_STATES:
            self._finish(st)

    @user_facing
    def items(self) -> Iterator[Any]:
        """The values a generator function yields, as they are produced, then its outcome."""
        expected = 0
        for event in self.events():
            if event.get("t") == protocol.ITEM:
                yield self._item(event, expected)
                expected += 1
        self._check_item_count(expected)

    @user_facing
    async def aitems(self) -> AsyncIterator[Any]:
        """``items`` for asyncio: ``async for value in job.aitems()``."""
        expected = 0
        async for event in self.aevents():
            if event.get("t") == protocol.ITEM:
                yield self._item(event, expected)
                expected += 1
        self._check_item_count(expected)

    def _item(self, event: dict[str, Any], expected: int) -> Any:
        """Item number ``expected``'s value: signed by our secret, for this call, none skipped."""
        protocol.check_result(self.secret, self.call_id, event)
        if event.get("i") != expected:
            raise JobFailed(f"item {expected} of job {self.id} is missing "
                            f"(got item {event.get('i')})", self.id, self._status)
        return self._load(event["value"])

    def _check_item_count(self, expected: int) -> None:
        """The job's outcome (raised if it failed) must count the items that arrived."""
        count = self._outcome()
        if isinstance(count, int) and count != expected:
            raise JobFailed(f"job {self.id} yielded {count} items but {expected} arrived",
                            self.id, self._status)

    # -- retrying -----------------------------------------------------------------------------

    def _retry_or_raise(self, deadline: float | None) -> tuple[float | None, Any]:
        """``(None, value)`` when the job succeeded; ``(delay, error)`` when it earns a retry;
        otherwise raises the job's failure."""
        try:
            return None, self._outcome()
        except Exception as exc:
            policy = self.retries
            if (policy is None or self._submission is None
                    or len(self.attempts) >= policy.max_retries or not policy.applies(exc)):
                raise
            delay = policy.delay(len(self.attempts) + 1)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise
            self.attempts.append((self.id or "?", exc))
            self._status = RETRYING
            self.reporter.status(self, RETRYING, self.worker)
            return delay, exc

    def _again(self) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
        """Forget the failed attempt; the submission to send again."""
        self.id = self._status = self.worker = self._result = self._final = None
        self.delay_time = self.execution_time = None
        self._batches_seen = 0
        request, policy, sync = self._submission  # type: ignore[misc]
        return request, policy, sync

    # -- following ----------------------------------------------------------------------------

    def _step(self, deadline: float | None):
        """One long-poll: new chunks, maybe a new status, maybe the end (sans-I/O steps)."""
        following = getattr(self.reporter, "following", None)
        if following is not None:  # the journal's log spool: "this process follows the job"
            taken = following(self)
            if taken and taken > self._batches_seen:
                # Another process followed it meanwhile, for its logs (they are in the spool):
                # the platform's final output is read on from there, not twice.
                self._batches_seen = taken
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self.id} ({self.name}) still {self._status} after the timeout")
            if left < SHORT_WAIT_S:
                # A /stream long-poll may be held longer than we may wait: look, then nap.
                self._absorb((yield from self._status_steps()))
                if not self.done:
                    yield sleep(min(left, EMPTY_STREAM_BACKOFF_S))
                return
        started = time.monotonic()
        try:
            s = yield ("stream", self.endpoint, self.id)
        except JobFailed as e:
            if e.http_status != 404:
                raise
            self._gone()
        except EmulatorStopped as e:
            self._lost(e)
        with self._lock:
            for chunk in s.get("stream") or ():
                self._batch(chunk.get("output"))
        status = s.get("status")
        if status in rp.TERMINAL_STATES or (status == rp.IN_PROGRESS and not self.worker):
            # /status has the times, the worker, and whatever output the stream did not carry.
            return self._absorb((yield from self._status_steps()))
        self._note_status(s)
        if not s.get("stream") and time.monotonic() - started < EMPTY_STREAM_BACKOFF_S:
            yield sleep(EMPTY_STREAM_BACKOFF_S)  # a server that does not hold the poll

    def _status_steps(self):
        try:
            return (yield ("status", self.endpoint, self.id))
        except JobFailed as e:
            if e.http_status != 404:
                raise
            self._gone()
        except EmulatorStopped as e:
            self._lost(e)

    def _lost(self, stopped: EmulatorStopped) -> None:
        """The emulator holding the job stopped: it may have run, or not; no one can say."""
        with self._lock:
            message = (f"{stopped.where} stopped while job {self.id} ({self.name}) was "
                       f"{self._status or rp.IN_QUEUE}: its outcome is unknown (the next call "
                       "starts a new emulator)")
            if self._final is None:  # (not ended meanwhile by another thread's cancel)
                self._status = UNKNOWN
                self._final = {"status": UNKNOWN, "error": message}
                self.reporter.finished(self, UNKNOWN)
        raise OutcomeUnknown(message, self.id, UNKNOWN) from None

    def _gone(self) -> None:
        """The platform forgot the job (404): its ttl ran out, or it ended long ago."""
        ttl = (self._submission or ({}, None, False))[1] or {}
        why = (f"its ttl of {ttl['ttl'] / 1000:g} s (queue time plus run time) ran out"
               if "ttl" in ttl else "its ttl ran out or its result outlived the retention time")
        self._status = EXPIRED
        self._final = {"status": EXPIRED}
        self.reporter.finished(self, EXPIRED)
        raise JobExpired(f"job {self.id} ({self.name}) no longer exists on {self.endpoint}: {why}",
                         self.id, EXPIRED, http_status=404)

    def _absorb(self, st: dict[str, Any]) -> None:
        """A full ``/status`` (or ``/runsync``) body."""
        with self._lock:
            out = st.get("output")
            if isinstance(out, list):
                for batch in out[self._batches_seen:]:
                    self._batch(batch)
            if st.get("status") in rp.TERMINAL_STATES:
                self._finish(st)
            else:
                self._note_status(st)

    def _note_status(self, st: dict[str, Any]) -> None:
        self.worker = st.get("workerId") or self.worker
        if st.get("delayTime") is not None:
            self.delay_time = st["delayTime"] / 1000
        self._status = st.get("status", self._status)
        self._seen_at = time.monotonic()
        self.reporter.status(self, self._status, self.worker)

    def _finish(self, st: dict[str, Any]) -> None:
        if self._final is not None:
            return
        self._note_times(st)
        self._status = st["status"]
        self._final = st
        self.reporter.finished(self, self._status)

    def _note_times(self, st: dict[str, Any]) -> None:
        self.worker = st.get("workerId") or self.worker
        if st.get("delayTime") is not None:
            self.delay_time = st["delayTime"] / 1000
        if st.get("executionTime") is not None:
            self.execution_time = st["executionTime"] / 1000

    def _batch(self, batch: Any) -> None:
        self._batches_seen += 1
        for event in batch if isinstance(batch, list) else ():
            if not isinstance(event, dict):
                continue
            self._events.append(event)
            kind = event.get("t")
            if kind == protocol.LOG:
                text = str(event.get("data", ""))
                self._keep_log(text)
                self.reporter.log(self, event.get("stream", "stdout"), text)
            elif kind == protocol.DISPLAY:
                self._display(event)
            elif kind == protocol.PROGRESS:
                update = Progress.from_event(event)
                if update is not None:
                    self.progress = update
                    told = getattr(self.reporter, "progress", None)
                    if told is not None:
                        told(self, update)
            elif kind == protocol.RESULT:
                self._result = event

    def _display(self, event: dict[str, Any]) -> None:
        """A rich output: to the reporter's ``display`` if it has one, else as a log line."""
        try:
            protocol.check_result(self.secret, self.call_id, event)
            data, metadata = protocol.display_bundle(event, self.fetch)
        except Exception as e:  # unsigned, or its piece is gone from the store: say so
            self.reporter.log(self, "stderr", f"[rpremote: a display output was not shown: {e}]\n")
            return
        show = getattr(self.reporter, "display", None)
        if show is None:
            self.reporter.log(self, "stdout", displays.describe(data, metadata) + "\n")
        elif event.get("display_id"):
            show(self, data, metadata, display_id=event["display_id"],
                 update=bool(event.get("update")))
        else:
            show(self, data, metadata)
        if show is not None:  # shown as itself: its text form still goes to the log spool
            displayed = getattr(self.reporter, "displayed", None)
            if displayed is not None:
                displayed(self, data, metadata, update=bool(event.get("update")))

    def _load(self, blob: dict[str, Any]) -> Any:
        """Unpickle a signed blob: big pieces from the store, tensors onto ``result_device``."""
        with devices(self.result_device):
            return loads(*protocol.decode_parts(blob, self.fetch))

    def _keep_log(self, text: str) -> None:
        self._logs.append(text)
        self._log_chars += len(text)
        while self._log_chars > MAX_KEPT_LOG_CHARS and len(self._logs) > 1:
            self._log_chars -= len(self._logs.pop(0))

    # -- outcome ------------------------------------------------------------------------------

    def _outcome(self) -> Any:
        if self._result is not None:
            return decode_result(self._result, self.secret, self.call_id, self._load)
        st = self._final or {}
        where = f"job {self.id} ({self.name}) on {self.endpoint}"
        if self._status == rp.TIMED_OUT:
            raise JobTimeout(f"{where} ran past its execution timeout", self.id, self._status)
        if self._status == rp.CANCELLED:
            raise JobCancelled(f"{where} was cancelled", self.id, self._status)
        if self._status == EXPIRED:
            raise JobExpired(f"{where} no longer exists (its ttl ran out)", self.id, self._status)
        if self._status == UNKNOWN:
            raise OutcomeUnknown(st.get("error") or f"the outcome of {where} is unknown",
                                 self.id, self._status)
        error = st.get("error") or "no error message"
        lost = _worker_lost(error)
        if lost:
            raise WorkerLost("WorkerLost", lost)
        raise JobFailed(f"{where} failed without a result: {error}", self.id, self._status)


def _worker_lost(error: str) -> str | None:
    try:
        info = json.loads(error)
    except (TypeError, ValueError):
        return None
    if isinstance(info, dict) and info.get("error_type") == "WorkerLost":
        return info.get("error_message") or "the worker running the job was lost"
    return None


def decode_result(event: dict[str, Any], secret: bytes, call_id: str | None,
                  load: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """The value of a signed result event, or raise the remote failure faithfully."""
    protocol.check_result(secret, call_id, event)
    if event.get("ok"):
        return (load or _load_inline)(event["value"])
    raise remote_exception(event.get("error") or {})


def _load_inline(blob: dict[str, Any]) -> Any:
    return loads(*protocol.decode_parts(blob))


def remote_exception(err: dict[str, Any]) -> BaseException:
    """The exception to raise here for a remote failure (call only on signed results)."""
    kind, type_name = err.get("kind"), err.get("type", "Exception")
    message, tb, module = err.get("message", ""), tracebacks.text_of(err), err.get("module", "")
    if kind == protocol.REFUSED_SIGNATURE:
        return SignatureError(f"the worker refused the request: {message}")
    if kind == protocol.REFUSED_VERSION:
        return VersionMismatch(message)
    if kind == protocol.SYSTEM_EXIT:
        exc: BaseException = RemoteSystemExit(type_name, message, tb, module)
        exc.code = err.get("code")  # type: ignore[attr-defined]
        return exc
    if kind == protocol.KEYBOARD_INTERRUPT:
        return RemoteKeyboardInterrupt(type_name, message, tb, module)
    if kind == protocol.RESULT_PICKLING:
        return ResultPicklingError(type_name, message, tb, module)
    if kind == protocol.EXCEPTION and err.get("pickled"):
        try:
            original = loads(*protocol.decode_parts(err["pickled"]))
        except Exception:
            original = None
        if isinstance(original, BaseException):
            original.__cause__ = RemoteTraceback(tb)
            original.remote_traceback = tb  # type: ignore[attr-defined]
            return original
    return RemoteError(type_name, message, tb, module)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


async def _quietly(task: "asyncio.Future[Any]") -> None:
    try:
        await task
    except BaseException:
        pass
