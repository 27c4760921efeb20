"""The wire format shared by client and executor: versioned envelopes, blobs, events, signatures.

A job's ``input`` is a request envelope; the worker streams back events. Pickles are code, so
every request and every result is signed with HMAC-SHA256 under the user's secret, and each
side checks the signature *before* unpickling anything.

Blobs (pickled bytes) travel as ``{"sha256", "size", "z", "b64"}``. Signatures cover a blob's
digest, not its text, so signing is one hash of the bytes and a blob can later move out of
band (offload store) without changing what is signed; ``decode_blob`` checks the digest.

Stdlib only: the worker imports this without the client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import uuid
import zlib
from typing import Any

from .errors import SignatureError, VersionMismatch

PROTOCOL_VERSION = 1

# Request kinds: one call, or a batch of calls of one function (map).
CALL = "call"
MAP = "map"

# Event types ("t").
LOG = "log"
ITEM = "item"  # one value yielded by a generator function
RESULT = "result"

# Error kinds in a failed result.
EXCEPTION = "exception"
SYSTEM_EXIT = "system_exit"
KEYBOARD_INTERRUPT = "keyboard_interrupt"
RESULT_PICKLING = "result_pickling"
REFUSED_SIGNATURE = "refused_signature"
REFUSED_VERSION = "refused_version"
REFUSED_INPUT = "refused_input"
INTERNAL = "internal"

_COMPRESS_MIN = 4096


def python_version() -> str:
    """``"3.11"``: cloudpickle by value needs the same minor version on both sides."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def new_call_id() -> str:
    return uuid.uuid4().hex


# -- blobs ------------------------------------------------------------------------------------


def encode_blob(raw: bytes) -> dict[str, Any]:
    """Bytes -> JSON-safe blob; zlib (fast level) only where it saves a tenth or more."""
    blob: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "z": 0}
    data = raw
    if len(raw) >= _COMPRESS_MIN:
        packed = zlib.compress(raw, 1)
        if len(packed) < 0.9 * len(raw):
            blob["z"], data = 1, packed
    blob["b64"] = base64.b64encode(data).decode("ascii")
    return blob


def decode_blob(blob: dict[str, Any]) -> bytes:
    """JSON blob -> bytes, refusing bytes whose digest is not the one that was signed."""
    try:
        data = base64.b64decode(blob["b64"])
        raw = zlib.decompress(data) if blob.get("z") else data
    except (KeyError, TypeError, ValueError, zlib.error) as e:
        raise SignatureError(f"malformed blob ({e}); refusing to unpickle it") from None
    if hashlib.sha256(raw).hexdigest() != blob.get("sha256"):
        raise SignatureError("blob content does not match its signed digest; refusing to unpickle it")
    return raw


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and "sha256" in value and "size" in value


def _signable(value: Any) -> Any:
    """The envelope as it is signed: blobs reduced to their digest and size."""
    if _is_blob(value):
        return {"sha256": value["sha256"], "size": value["size"]}
    if isinstance(value, dict):
        return {k: _signable(v) for k, v in value.items() if k != "sig"}
    if isinstance(value, list):
        return [_signable(v) for v in value]
    return value


def signature(secret: bytes, envelope: dict[str, Any]) -> str:
    canonical = json.dumps(_signable(envelope), sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, envelope: dict[str, Any]) -> dict[str, Any]:
    envelope["sig"] = signature(secret, envelope)
    return envelope


def is_signed_by(secret: bytes | None, envelope: dict[str, Any]) -> bool:
    given = envelope.get("sig")
    if not secret or not isinstance(given, str):
        return False
    return hmac.compare_digest(given, signature(secret, envelope))


# -- requests ---------------------------------------------------------------------------------


def call_request(secret: bytes, fn: bytes, args: bytes, *, name: str, kind: str = CALL,
                 requirements: list[str] | tuple[str, ...] = (),
                 system_packages: list[str] | tuple[str, ...] = (),
                 client_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """A signed request to call ``fn``: ``args`` is a pickled ``(args, kwargs)`` for a call,
    a pickled list of them for a map batch (the result is then a list of outcomes).

    ``requirements`` (pip requirement strings) and ``system_packages`` (Debian names) are
    installed by the worker before it unpickles anything; ``client_env`` (cloudpickle's
    version, by-reference packages' versions) is what the worker checks for parity.
    """
    return sign(secret, {
        "rpremote": PROTOCOL_VERSION,
        "kind": kind,
        "call": new_call_id(),
        "python": python_version(),
        "name": name,
        "fn": encode_blob(fn),
        "args": encode_blob(args),
        "requirements": list(requirements),
        "system": list(system_packages),
        "client": client_env or {},
    })


def check_request(secret: bytes | None, request: Any) -> dict[str, Any]:
    """Refuse what must not be unpickled: not ours, another protocol, unsigned, other Python.

    The order matters: the signature is checked before anything in the request is trusted.
    """
    if not isinstance(request, dict) or "rpremote" not in request:
        raise ValueError("this endpoint runs the rpremote executor; its input must be an "
                         "rpremote request envelope (send it with rpremote's client)")
    if request["rpremote"] != PROTOCOL_VERSION or request.get("kind") not in (CALL, MAP):
        raise VersionMismatch(
            f"request uses rpremote protocol {request['rpremote']!r} (kind "
            f"{request.get('kind')!r}), this worker speaks {PROTOCOL_VERSION} (call, map); use "
            "the same rpremote version on both sides"
        )
    if not secret:
        raise SignatureError(
            "this worker has no signing secret (RPREMOTE_SECRET or RPREMOTE_SECRET_FILE in the "
            "endpoint's environment), so it refuses to unpickle anything"
        )
    if "sig" not in request:
        raise SignatureError("request is not signed; refusing to unpickle it")
    if not is_signed_by(secret, request):
        raise SignatureError(
            "request signature does not match: it was tampered with, or the client's secret "
            "differs from this worker's RPREMOTE_SECRET; refusing to unpickle it"
        )
    theirs, ours = request.get("python"), python_version()
    if theirs != ours:
        raise VersionMismatch(
            f"the client runs Python {theirs} but this worker runs Python {ours} "
            f"({sys.version.split()[0]}); functions travel by value and need the same minor "
            f"version: use a worker image with Python {theirs}, or a client with Python {ours}"
        )
    return request


# -- events -----------------------------------------------------------------------------------


def log_event(stream: str, data: str) -> dict[str, Any]:
    return {"t": LOG, "stream": stream, "data": data}


def item_event(secret: bytes | None, call_id: str, index: int, value: bytes) -> dict[str, Any]:
    """One yielded value; signed like a result and numbered so none can be dropped or reordered."""
    event = {"t": ITEM, "call": call_id, "i": index, "value": encode_blob(value)}
    return sign(secret, event) if secret else event


def error_info(kind: str, type_name: str, message: str, traceback: str = "", module: str = "",
               pickled: bytes | None = None, **extra: Any) -> dict[str, Any]:
    """What a failure is, in a form both sides read without unpickling (``pickled`` aside)."""
    error: dict[str, Any] = {
        "kind": kind, "type": type_name, "module": module, "message": message,
        "traceback": traceback, **extra,
    }
    if pickled is not None:
        error["pickled"] = encode_blob(pickled)
    return error


def ok_result(secret: bytes | None, call_id: str, value: bytes) -> dict[str, Any]:
    return _signed_result(secret, {"t": RESULT, "call": call_id, "ok": True, "value": encode_blob(value)})


def error_result(
    secret: bytes | None,
    call_id: str | None,
    kind: str,
    type_name: str,
    message: str,
    traceback: str = "",
    module: str = "",
    pickled: bytes | None = None,
    **extra: Any,
) -> dict[str, Any]:
    error = error_info(kind, type_name, message, traceback, module, pickled, **extra)
    return _signed_result(secret, {"t": RESULT, "call": call_id, "ok": False, "error": error})


def _signed_result(secret: bytes | None, event: dict[str, Any]) -> dict[str, Any]:
    return sign(secret, event) if secret else event


def check_result(secret: bytes, call_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
    """Accept a result or item only if it is signed with our secret and answers our call.

    ``call_id=None`` (a job re-attached from another process, whose request is not known here)
    checks the signature only.
    """
    if not is_signed_by(secret, event):
        said = ""
        err = event.get("error")
        if isinstance(err, dict) and err.get("message"):
            said = f" The worker said: {err.get('type', 'error')}: {err['message']}"
        raise SignatureError(
            "the worker's result is not signed with your secret, so it is not unpickled "
            "(is the endpoint's RPREMOTE_SECRET the same as yours?)." + said
        )
    if call_id is not None and event.get("call") != call_id:
        raise SignatureError("the result answers another call (replayed?); refusing it")
    return event
