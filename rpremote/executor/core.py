"""Run one rpremote request in the calling thread and report it as events.

No ``runpod`` here: the SDK adapter (``worker.py``) and the Pod server call ``Executor.run``
from a thread of their own and ship what it puts in the ``EventBuffer``.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from .. import protocol
from ..capture import dumps, loads
from ..errors import SignatureError, UnpicklableError, VersionMismatch
from . import streams
from .events import EventBuffer

FUNCTION_CACHE_SIZE = 64


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

    def __init__(self, secret: bytes | None):
        self.secret = secret
        self._functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

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
            return out.put(self._refusal(call_id, protocol.REFUSED_SIGNATURE, e))
        except VersionMismatch as e:
            return out.put(self._refusal(call_id, protocol.REFUSED_VERSION, e))
        except ValueError as e:
            return out.put(self._refusal(call_id, protocol.REFUSED_INPUT, e))

        with streams.captured(out.log):
            try:
                fn = self._function(request["fn"])
                args, kwargs = loads(protocol.decode_blob(request["args"]))
            except BaseException as e:  # e.g. a by-reference module missing on the worker
                return out.put(self._exception(call_id, e, e.__traceback__,
                                               note="while unpickling the function or its arguments"))
            try:
                value = fn(*args, **kwargs)
            except JobStopped:
                raise
            except BaseException as e:
                # Skip our own frame: the traceback starts in the user's function.
                tb = e.__traceback__.tb_next if e.__traceback__ else None
                return out.put(self._exception(call_id, e, tb))
        try:
            blob = dumps(value, label="result")
        except UnpicklableError as e:
            return out.put(protocol.error_result(
                self.secret, call_id, protocol.RESULT_PICKLING, "ResultPicklingError",
                f"the function returned, but its result cannot be sent back: {e}",
                module="rpremote.errors",
            ))
        out.put(protocol.ok_result(self.secret, call_id, blob))

    def _function(self, blob: dict[str, Any]) -> Callable[..., Any]:
        key = blob["sha256"]
        with self._cache_lock:
            fn = self._functions.get(key)
            if fn is not None:
                self._functions.move_to_end(key)
                return fn
        fn = loads(protocol.decode_blob(blob))
        with self._cache_lock:
            self._functions[key] = fn
            while len(self._functions) > FUNCTION_CACHE_SIZE:
                self._functions.popitem(last=False)
        return fn

    def _refusal(self, call_id: str | None, kind: str, err: Exception) -> dict[str, Any]:
        return protocol.error_result(self.secret, call_id, kind, type(err).__name__, str(err),
                                     module=type(err).__module__)

    def _exception(self, call_id: str | None, err: BaseException, tb: TracebackType | None,
                   note: str = "") -> dict[str, Any]:
        text = "".join(traceback.format_exception(type(err), err, tb))
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
                pickled = dumps(err, label="exception")
            except Exception:
                pickled = None  # the client gets a RemoteError with type, message, traceback
        extra = {"code": _jsonable(err.code)} if isinstance(err, SystemExit) else {}
        return protocol.error_result(
            self.secret, call_id, kind, type(err).__qualname__, str(err), traceback=text,
            module=type(err).__module__, pickled=pickled, **extra,
        )


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, str, type(None))) else repr(value)
