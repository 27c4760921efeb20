"""The wire format shared by client and executor: versioned envelopes, blobs, events, signatures.

A job's ``input`` is a request envelope; the worker streams back events. Pickles are code, so
every request and every result is signed with HMAC-SHA256 under the user's secret, and each
side checks the signature *before* unpickling anything.

A blob (a pickle) is a *piece*, ``{"b3", "size", "z", "b64"}`` inline or ``{"b3", "size",
"ref": 1}`` when it lives in the offload store, plus, for pickle-5 out-of-band buffers (numpy
arrays, tensors), ``"buffers": [piece, ...]``. Pieces of ``OFFLOAD_MIN_BYTES`` or more always go
by reference: until the sender ships them they carry their bytes under ``"_raw"`` (which makes
the envelope unserializable, on purpose). ``b3`` is the BLAKE3 digest: the content address in
the store, and what signatures cover, so signing is one hash of the bytes and a piece can move
out of band without changing what is signed; ``decode_parts`` checks every digest.

Stdlib and blake3 only: the worker imports this without the client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import uuid
import zlib
from typing import Any, Callable, Sequence

from blake3 import blake3

from .errors import SignatureError, VersionMismatch
from .progress_updates import EVENT as PROGRESS_EVENT

PROTOCOL_VERSION = 2  # 2: a map batch is a column of items, its outcome (values, errors)

# Request kinds: one call, or a batch of calls of one function (map).
CALL = "call"
MAP = "map"

# Event types ("t").
LOG = "log"
ITEM = "item"  # one value yielded by a generator function
DISPLAY = "display"  # a rich output (display(), plt.show()): a Jupyter mime bundle
PROGRESS = PROGRESS_EVENT  # rpremote.progress(): how far the job is (not signed: no code)
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

# A display bundle this big or bigger (as JSON) goes through the offload store, so that one
# image stays well inside RunPod's 1 MB stream chunk; one bigger than the most is not sent.
DISPLAY_INLINE_BYTES = 512 * 1024
MAX_DISPLAY_BYTES = 32 * 1024 * 1024

_COMPRESS_MIN = 4096
# A piece this big or bigger goes through the offload store, never inline: well under RunPod's
# 10 MB /run limit after base64, and where out-of-band transfer starts to pay.
OFFLOAD_MIN_BYTES = 1024 * 1024
# A function (with the user's modules it carries) goes by reference from this size: a worker
# that has it cached by digest fetches nothing, and an unchanged module is uploaded once.
FUNCTION_OFFLOAD_MIN_BYTES = 16 * 1024
_THREADED_HASH_MIN = 8 * 1024 * 1024

Fetch = Callable[[str, int], Any]  # (digest, size) -> a bytes-like object from the store


def python_version() -> str:
    """``"3.11"``: cloudpickle by value needs the same minor version on both sides."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def new_call_id() -> str:
    return uuid.uuid4().hex


# -- blobs ------------------------------------------------------------------------------------


def digest(data: Any) -> str:
    """BLAKE3 hex digest of a bytes-like object (all cores for big ones)."""
    if len(memoryview(data).cast("B")) >= _THREADED_HASH_MIN:
        return blake3(data, max_threads=blake3.AUTO).hexdigest()
    return blake3(data).hexdigest()


def _piece(raw: Any, offload_min: int = OFFLOAD_MIN_BYTES) -> dict[str, Any]:
    """One run of bytes: inline (zlib where it saves a tenth) or, when big, by reference."""
    view = memoryview(raw).cast("B")
    piece: dict[str, Any] = {"b3": digest(view), "size": view.nbytes}
    if view.nbytes >= offload_min:
        piece["ref"] = 1
        piece["_raw"] = view
        return piece
    data: Any = view
    piece["z"] = 0
    if view.nbytes >= _COMPRESS_MIN:
        packed = zlib.compress(view, 1)
        if len(packed) < 0.9 * view.nbytes:
            piece["z"], data = 1, packed
    piece["b64"] = base64.b64encode(data).decode("ascii")
    return piece


def encode_blob(raw: Any, buffers: Sequence[Any] = (), *,
                offload_min: int = OFFLOAD_MIN_BYTES) -> dict[str, Any]:
    """A pickle (and its out-of-band buffers) -> a JSON-safe blob, big pieces by reference."""
    blob = _piece(raw, offload_min)
    if buffers:
        blob["buffers"] = [_piece(b) for b in buffers]
    return blob


def _decode_piece(piece: dict[str, Any], fetch: Fetch | None) -> Any:
    try:
        if piece.get("ref"):
            if fetch is None:
                raise SignatureError(
                    f"a {piece['size']:,}-byte piece is in an offload store, but none is "
                    "configured here (see the README, 'Big payloads')")
            data = fetch(piece["b3"], int(piece["size"]))
        else:
            data = base64.b64decode(piece["b64"])
            if piece.get("z"):
                data = zlib.decompress(data)
    except (KeyError, TypeError, ValueError, zlib.error) as e:
        raise SignatureError(f"malformed blob ({e}); refusing to unpickle it") from None
    if len(data) != piece.get("size") or digest(data) != piece.get("b3"):
        raise SignatureError("blob content does not match its signed digest; refusing to unpickle it")
    return data


def decode_parts(blob: dict[str, Any], fetch: Fetch | None = None) -> tuple[Any, list[Any]]:
    """The pickle and its out-of-band buffers, every digest checked (pieces fetched by ref)."""
    main = _decode_piece(blob, fetch)
    return main, [_decode_piece(p, fetch) for p in blob.get("buffers") or ()]


def decode_blob(blob: dict[str, Any], fetch: Fetch | None = None) -> bytes:
    """The bytes of a blob that has no out-of-band buffers (a function, an exception)."""
    main, buffers = decode_parts(blob, fetch)
    if buffers:
        raise SignatureError("unexpected out-of-band buffers in this blob; refusing it")
    return main


def pending_pieces(envelope: Any) -> list[dict[str, Any]]:
    """Pieces by reference whose bytes the sender still holds (``"_raw"``): to ship first."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "_raw" in value:
                found.append(value)
            for v in value.values():
                if isinstance(v, (dict, list)):
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(envelope)
    return found


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and "b3" in value and "size" in value


def _signable(value: Any) -> Any:
    """The envelope as it is signed: pieces reduced to their digest and size."""
    if _is_blob(value):
        reduced = {"b3": value["b3"], "size": value["size"]}
        if value.get("buffers"):
            reduced["buffers"] = [_signable(b) for b in value["buffers"]]
        return reduced
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


def call_request(secret: bytes, fn: bytes, args: Any, *, name: str, kind: str = CALL,
                 star: bool = False,
                 requirements: list[str] | tuple[str, ...] = (),
                 system_packages: list[str] | tuple[str, ...] = (),
                 client_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """A signed request to call ``fn``: ``args`` is a pickled ``(args, kwargs)`` for a call;
    for a map batch, a pickled list of items, each the one argument of a call (with
    ``star``: each a tuple of arguments), and the result is ``(values, {index: error})``.
    Either bytes or ``(bytes, out-of-band buffers)``.

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
        "fn": encode_blob(fn, offload_min=FUNCTION_OFFLOAD_MIN_BYTES),
        "args": _encode(args),
        **({"star": True} if star else {}),
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


def _encode(pickled: Any) -> dict[str, Any]:
    """``bytes`` or ``(bytes, buffers)`` -> blob."""
    return encode_blob(*pickled) if isinstance(pickled, tuple) else encode_blob(pickled)


def item_event(secret: bytes | None, call_id: str, index: int, value: Any) -> dict[str, Any]:
    """One yielded value; signed like a result and numbered so none can be dropped or reordered."""
    event = {"t": ITEM, "call": call_id, "i": index, "value": _encode(value)}
    return sign(secret, event) if secret else event


def display_event(secret: bytes | None, call_id: str | None, data: dict[str, Any],
                  metadata: dict[str, Any] | None = None, *, display_id: str | None = None,
                  update: bool = False) -> dict[str, Any]:
    """One rich output in Jupyter's shape: ``data`` maps mime types to text (binary types,
    e.g. ``image/png``, as base64 text) or JSON, ``metadata`` likewise per type.

    Signed like a result: the client renders HTML and JavaScript from it, which in a notebook
    is code. A big bundle is one JSON piece by reference (``"bundle"``); one past
    ``MAX_DISPLAY_BYTES`` is replaced by a note saying so.
    """
    raw = json.dumps({"data": data, "metadata": metadata or {}}, separators=(",", ":"),
                     default=repr).encode()
    if len(raw) > MAX_DISPLAY_BYTES:
        kinds = ", ".join(sorted(data)) or "nothing"
        raw = json.dumps({"data": {"text/plain": (
            f"[rpremote: a display of {len(raw):,} bytes ({kinds}) is too big to send back; "
            f"the most is {MAX_DISPLAY_BYTES:,} bytes: save it to a file instead]")},
            "metadata": {}}).encode()
    event: dict[str, Any] = {"t": DISPLAY, "call": call_id}
    if display_id:
        event["display_id"] = str(display_id)
        if update:
            event["update"] = True
    if len(raw) >= DISPLAY_INLINE_BYTES:
        event["bundle"] = encode_blob(raw, offload_min=DISPLAY_INLINE_BYTES)
    else:
        event.update(json.loads(raw))  # what the JSON encoder made of it, nothing else
    return sign(secret, event) if secret else event


def display_bundle(event: dict[str, Any], fetch: Fetch | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` of a display event (check its signature first)."""
    if "bundle" in event:
        body = json.loads(bytes(decode_blob(event["bundle"], fetch)))
    else:
        body = event
    data, metadata = body.get("data"), body.get("metadata")
    if not isinstance(data, dict):
        raise ValueError("a display event without a mime bundle")
    return data, metadata if isinstance(metadata, dict) else {}


def error_info(kind: str, type_name: str, message: str, traceback: str = "", module: str = "",
               pickled: Any = None, **extra: Any) -> dict[str, Any]:
    """What a failure is, in a form both sides read without unpickling (``pickled`` aside)."""
    error: dict[str, Any] = {
        "kind": kind, "type": type_name, "module": module, "message": message,
        "traceback": traceback, **extra,
    }
    if pickled is not None:
        error["pickled"] = _encode(pickled)
    return error


def ok_result(secret: bytes | None, call_id: str, value: Any) -> dict[str, Any]:
    return _signed_result(secret, {"t": RESULT, "call": call_id, "ok": True, "value": _encode(value)})


def error_result(
    secret: bytes | None,
    call_id: str | None,
    kind: str,
    type_name: str,
    message: str,
    traceback: str = "",
    module: str = "",
    pickled: Any = None,
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
