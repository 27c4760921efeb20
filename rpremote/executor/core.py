"""Run one rpremote request in the calling thread and report it as events.

No ``runpod`` here: the SDK adapter (``worker.py``) and the Pod server call ``Executor.run``
from a thread of their own and ship what it puts in the ``EventBuffer``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from types import CoroutineType, TracebackType
from typing import Any, Callable

import cloudpickle

from .. import parity, protocol, tracebacks
from ..blobs import NO_STORE_HINT, CachedFetch, OffloadError, Shipper
from ..capture import devices, dumps_result, loads
from ..errors import DependencyInstallError, SignatureError, UnpicklableError, VersionMismatch
from . import display, progress, streams
from .events import EventBuffer
from .installer import Installer

FUNCTION_CACHE_SIZE = 64
# Pieces fetched over the network (HTTP, S3) kept in memory, so repeated calls with the same
# weights fetch once.
FETCH_CACHE_BYTES = int(os.environ.get("RPREMOTE_FETCH_CACHE_MB", "2048")) * 1024 * 1024


class JobStopped(BaseException):
    """Raised inside the user's thread when the platform stops its job (cancel, timeout)."""


def load_secret(env: dict[str, str] | None = None) -> bytes | None:
    """The signing secret from ``RPREMOTE_SECRET`` or the file named by ``RPREMOTE_SECRET_FILE``."""
    env = os.environ if env is None else env
    if env.get("RPREMOTE_SECRET"):
        return env["RPREMOTE_SECRET"].encode()
    if env.get("RPREMOTE_SECRET_FILE"):
        try:
            return Path(env["RPREMOTE_SECRET_FILE"]).read_text().strip().encode() or None
        except OSError:
            return None
    return None


class Executor:
    """Runs requests; keeps unpickled functions warm so their module state survives calls.

    A function is cached by the digest of its pickle: the same function sent again is the
    same live object, with the same globals, so a model it loaded into a global is still
    there on the next call. A changed function is a new object with fresh globals.
    """

    def __init__(self, secret: bytes | None, store: Any | None = None):
        self.secret = secret
        # Big pieces of requests come from, and of results go to, the offload store.
        self.store = store
        self.shipper = Shipper(store) if store is not None else None
        self.fetch = None
        if store is not None:
            self.fetch = (store.get if store.kind == "directory"  # the page cache does it
                          else CachedFetch(store, FETCH_CACHE_BYTES))
        self._functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.installer = Installer()

    def run(self, request: Any, out: EventBuffer) -> None:
        """Run ``request``; every outcome, including refusal, ends in one result event."""
        try:
            self._run(request, out)
        finally:
            out.finish()

    def _run(self, request: Any, out: EventBuffer) -> None:
        call_id = request.get("call") if isinstance(request, dict) else None
        try:
            protocol.check_request(self.secret, request)
        except SignatureError as e:
            return self._put(out, self._refusal(call_id, protocol.REFUSED_SIGNATURE, e))
        except VersionMismatch as e:
            return self._put(out, self._refusal(call_id, protocol.REFUSED_VERSION, e))
        except ValueError as e:
            return self._put(out, self._refusal(call_id, protocol.REFUSED_INPUT, e))

        shown = functools.partial(self._display, out, call_id)
        told = lambda update: out.progress(update.as_event())  # noqa: E731
        with streams.captured(out.log), display.captured(shown), progress.captured(told):
            try:  # dependencies first: by-reference modules are imported while unpickling
                self.installer.prepare(request, functools.partial(out.log, "stdout"))
                parity.check_worker(request.get("client"), request["python"],
                                    cloudpickle.__version__)
            except VersionMismatch as e:
                return self._put(out, self._refusal(call_id, protocol.REFUSED_VERSION, e))
            except DependencyInstallError as e:
                return self._put(out, self._exception(call_id, e, None,
                                                      note="while installing dependencies"))
            except ValueError as e:  # a malformed requirement list
                return self._put(out, self._refusal(call_id, protocol.REFUSED_INPUT, e))
            try:
                fn = self._function(request["fn"])
                with devices("keep"):
                    payload = loads(*protocol.decode_parts(request["args"], self.fetch))
            except BaseException as e:  # e.g. a by-reference module missing on the worker
                return self._put(out, self._exception(
                    call_id, e, e.__traceback__, note="while unpickling the function or its arguments"))
            try:
                if request["kind"] == protocol.MAP:  # per-item failures are in the outcome
                    value = self._map(fn, payload, star=bool(request.get("star")))
                else:
                    value = self._call(fn, *payload, call_id, out)
            except JobStopped:
                raise
            except UnpicklableError as e:  # an item that cannot travel
                return self._put(out, self._unpicklable(call_id, e))
            except BaseException as e:
                return self._put(out, self._exception(call_id, e, _user_frames(e.__traceback__)))
        try:
            blob = dumps_result(value, label="result")
        except UnpicklableError as e:
            if request["kind"] != protocol.MAP:
                return self._put(out, self._unpicklable(call_id, e))
            blob = dumps_result(self._isolate_unpicklable(value))
        self._put(out, protocol.ok_result(self.secret, call_id, blob))

    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict, call_id: str | None,
              out: EventBuffer) -> Any:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            return asyncio.run(value)
        if inspect.isgenerator(value) or inspect.isasyncgen(value):
            return self._yield_items(call_id, value, out)
        return value

    def _map(self, fn: Callable[..., Any], items: list[Any], *,
             star: bool) -> tuple[list[Any], dict[int, Any]]:
        """A batch of calls, ``fn(item)`` (``fn(*item)`` with ``star``): the values in order
        (``None`` where an item failed) and each failed item's error info by index.

        Columns rather than a pair per item: a batch of thousands of tiny items then costs
        few objects to build, pickle and unpickle on either side. The values are pickled as
        one (fast); only when that fails is each tried alone (``_isolate_unpicklable``), so a
        value that cannot travel fails its item, not the batch.
        """
        values: list[Any] = []
        errors: dict[int, Any] = {}
        for i, item in enumerate(items):
            try:
                value = fn(*item) if star else fn(item)
                if type(value) is CoroutineType:  # inspect.iscoroutine, per item: cheaper
                    value = asyncio.run(value)
            except JobStopped:
                raise
            except BaseException as e:
                errors[i] = self._error_info(e, _user_frames(e.__traceback__))
                value = None
            values.append(value)
        return values, errors

    @staticmethod
    def _isolate_unpicklable(outcome: tuple[list[Any], dict[int, Any]]) -> tuple[list[Any], dict[int, Any]]:
        """A map batch that cannot be pickled whole: fail only the items that cannot travel."""
        values, errors = outcome
        for i, value in enumerate(values):
            if i not in errors:
                try:
                    dumps_result(value, label=f"results[{i}]")
                except UnpicklableError as e:
                    values[i] = None
                    errors[i] = protocol.error_info(
                        protocol.RESULT_PICKLING, "ResultPicklingError",
                        f"the function ran, but what it returned cannot be sent back: {e}",
                        module="rpremote.errors")
        return values, errors

    def _yield_items(self, call_id: str | None, gen: Any, out: EventBuffer) -> int:
        """Send each yielded value as it is produced; the result is how many there were."""
        count = 0

        def send(item: Any) -> None:
            nonlocal count
            self._put(out, protocol.item_event(self.secret, call_id, count,
                                        dumps_result(item, label=f"item[{count}]")))
            count += 1

        if inspect.isasyncgen(gen):
            async def drain() -> None:
                async for item in gen:
                    send(item)
            asyncio.run(drain())
        else:
            for item in gen:
                send(item)
        return count

    def _unpicklable(self, call_id: str | None, err: UnpicklableError) -> dict[str, Any]:
        return protocol.error_result(
            self.secret, call_id, protocol.RESULT_PICKLING, "ResultPicklingError",
            f"the function ran, but what it returned cannot be sent back: {err}",
            module="rpremote.errors",
        )

    def _function(self, blob: dict[str, Any]) -> Callable[..., Any]:
        key = blob["b3"]
        with self._cache_lock:
            fn = self._functions.get(key)
            if fn is not None:
                self._functions.move_to_end(key)
                return fn
        fn = loads(protocol.decode_blob(blob, self.fetch))
        with self._cache_lock:
            self._functions[key] = fn
            while len(self._functions) > FUNCTION_CACHE_SIZE:
                self._functions.popitem(last=False)
        return fn

    def _display(self, out: EventBuffer, call_id: str | None, data: dict[str, Any],
                 metadata: dict[str, Any], display_id: str | None, update: bool) -> None:
        """One rich output, in order with the job's prints (called in the job's threads)."""
        event = protocol.display_event(self.secret, call_id, data, metadata,
                                       display_id=display_id, update=update)
        if protocol.pending_pieces(event):
            try:
                self._ship(event)
            except OffloadError as e:
                size = sum(p["size"] for p in protocol.pending_pieces(event))
                event = protocol.display_event(self.secret, call_id, {"text/plain": (
                    f"[rpremote: a display of {size:,} bytes ({', '.join(sorted(data))}) could "
                    f"not be sent back: {e}]")})
        out.put(event)

    def _put(self, out: EventBuffer, event: dict[str, Any]) -> None:
        """Send an event, its big pieces through the offload store first."""
        if protocol.pending_pieces(event):
            try:
                self._ship(event)
            except OffloadError as e:
                if event.get("t") == protocol.ITEM:
                    raise  # fails the generator, whose result says why
                event = protocol.error_result(self.secret, event.get("call"), protocol.RESULT_PICKLING,
                                              "OffloadError", f"the function ran, but {e}",
                                              module="rpremote.blobs")
        out.put(event)

    def _ship(self, event: dict[str, Any]) -> None:
        if self.shipper is None:
            size = sum(p["size"] for p in protocol.pending_pieces(event))
            raise OffloadError(f"what it sends back holds {size:,} bytes in pieces too big to "
                               f"send inline, and this worker has no offload store: {NO_STORE_HINT}")
        self.shipper.ship(event)

    def _refusal(self, call_id: str | None, kind: str, err: Exception) -> dict[str, Any]:
        return protocol.error_result(self.secret, call_id, kind, type(err).__name__, str(err),
                                     module=type(err).__module__)

    def _exception(self, call_id: str | None, err: BaseException, tb: TracebackType | None,
                   note: str = "") -> dict[str, Any]:
        return self._signed_error(call_id, self._error_info(err, tb, note))

    def _signed_error(self, call_id: str | None, info: dict[str, Any]) -> dict[str, Any]:
        event = {"t": protocol.RESULT, "call": call_id, "ok": False, "error": info}
        return protocol.sign(self.secret, event) if self.secret else event

    @staticmethod
    def _error_info(err: BaseException, tb: TracebackType | None, note: str = "") -> dict[str, Any]:
        try:  # described once: drawn here as the text, and by the client with the lines we lack
            desc = tracebacks.describe(err, tb)
            text, described = tracebacks.render(desc), {"tb": desc, "note": note}
        except Exception:
            text, described = "".join(traceback.format_exception(type(err), err, tb)), {}
        if note:
            text = f"({note})\n{text}"
        kind = protocol.EXCEPTION
        if isinstance(err, SystemExit):
            kind = protocol.SYSTEM_EXIT
        elif isinstance(err, KeyboardInterrupt):
            kind = protocol.KEYBOARD_INTERRUPT
        pickled = None
        if kind == protocol.EXCEPTION:
            try:
                pickled = dumps_result(err, label="exception")
            except Exception:
                pickled = None  # the client gets a RemoteError with type, message, traceback
        extra = {"code": _jsonable(err.code)} if isinstance(err, SystemExit) else {}
        extra.update(described)
        return protocol.error_info(kind, type(err).__qualname__, str(err), text,
                                   type(err).__module__, pickled, **extra)


_ASYNCIO_DIR = str(Path(asyncio.__file__).parent)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the first frame of the user's code: rpremote's (the executor, a
    cell's runner, which may have come by value from the client's copy) and asyncio's skipped."""
    while tb is not None and _plumbing(tb.tb_frame):
        tb = tb.tb_next
    return tb


def _plumbing(frame: Any) -> bool:
    module = frame.f_globals.get("__name__") or ""
    return (module == "rpremote" or module.startswith("rpremote.")
            or frame.f_code.co_filename.startswith(_ASYNCIO_DIR))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, str, type(None))) else repr(value)
