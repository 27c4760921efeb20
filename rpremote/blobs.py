"""The offload store, as both sides reach it: big pieces of payloads, by content address.

A piece of ``protocol.OFFLOAD_MIN_BYTES`` or more never travels inside a request or result:
the sender puts it in a store under its BLAKE3 digest and sends the reference; the receiver
gets it and checks the digest. Content addressing makes repetition free: a piece the store
already has (the same weights, the same dataset, an unchanged module) is not sent again.

Two kinds of store, one interface (``has``, ``put``, ``get``):

- ``DirectoryStore``: a directory both sides can open — the local emulator's store on this
  machine (files are written once, renamed into place, read by a copy-on-write ``mmap``: no
  copy until the reader writes), or a network volume mounted on both sides.
- ``HttpStore``: the store the emulator serves at ``/rpremote/v1/blobs/{digest}`` (PUT, GET,
  HEAD; bearer key), spoken with ``http.client`` because it is the fastest stdlib path for
  hundreds of MB (no per-chunk Python work) and the worker side must stay stdlib-only.

A third, ``s3.S3Store`` (any S3-compatible bucket, or a RunPod network volume's S3 API), has
the same interface and the same key layout (``<prefix>/<digest[:2]>/<digest>``), so a worker
that has the volume mounted reads and writes it as a ``DirectoryStore``.

``ship`` uploads what an envelope still holds (``"_raw"``) and strips it; ``store_from_env``
is how a worker finds its store. Stdlib only at import (plus ``protocol`` and ``private``;
``s3`` and boto3 load only for an S3 store): both sides import this.
"""

from __future__ import annotations

import http.client
import mmap
import os
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from . import protocol
from .config import NO_STORE
from .errors import OffloadError  # noqa: F401  (here too: where callers have long found it)
from .platform import NETWORK_VOLUME_DIR
from .private import make_dirs

KNOWN_RECHECK_S = 600.0  # a piece seen in the store is trusted to be there this long
_IO_CHUNK = 8 * 1024 * 1024


class DirectoryStore:
    """Pieces as files ``<root>/<digest[:2]>/<digest>`` (mode 0600 under a 0700 root)."""

    kind = "directory"

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.uploaded_bytes = 0
        self.uploads = 0

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise OffloadError(f"not a content address: {key!r}")
        return self.root / key[:2] / key

    def has(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.utime(path)  # a piece in use is not expired
            return True
        except FileNotFoundError:
            return False

    def put(self, key: str, data: Any) -> None:
        path = self._path(key)
        make_dirs(path.parent)  # 0700 levels, whatever this process's umask
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:  # e.g. ENOSPC: the store's disk (or /dev/shm) is full
            os.unlink(tmp)
            raise OffloadError(f"could not store a {memoryview(data).nbytes:,}-byte piece in "
                               f"{self.root}: {e}") from e
        except BaseException:
            os.unlink(tmp)
            raise
        self.uploaded_bytes += memoryview(data).nbytes
        self.uploads += 1

    def get(self, key: str, size: int) -> Any:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                if size == 0:
                    return bytearray()
                # Copy-on-write: the pages come from the page cache; writing to the array
                # (numpy, torch) copies only the pages written, and never touches the file.
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except FileNotFoundError:
            raise OffloadError(f"piece {key[:12]}... ({size:,} bytes) is not in the offload "
                               f"store {self.root} (expired, or the store was cleared)") from None


class HttpStore:
    """The emulator's offload store over HTTP; one keep-alive connection per thread."""

    kind = "http"

    def __init__(self, url: str, key: str, *, timeout: float = 300.0):
        parsed = urllib.parse.urlsplit(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise OffloadError(f"offload store URL must be http(s)://host[:port]/path, got {url!r}")
        self.url = url.rstrip("/")
        self._parsed = parsed
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout = timeout
        self._local = threading.local()
        self.uploaded_bytes = 0
        self.uploads = 0

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r})"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._parsed.hostname, self._parsed.port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, key: str, body: Any = None) -> http.client.HTTPResponse:
        path = f"{self._parsed.path}/{key}"
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Length"] = str(memoryview(body).nbytes)
            headers["Content-Type"] = "application/octet-stream"
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers)
                return conn.getresponse()
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise OffloadError(f"offload store {self.url} did not answer {method}: {e}") from e
        raise AssertionError("unreachable")

    def has(self, key: str) -> bool:
        resp = self._request("HEAD", key)
        resp.read()
        if resp.status in (200, 404):
            return resp.status == 200
        raise OffloadError(f"offload store {self.url} answered HEAD with {resp.status}")

    def put(self, key: str, data: Any) -> None:
        resp = self._request("PUT", key, body=memoryview(data).cast("B"))
        text = resp.read()
        if resp.status not in (200, 201):
            raise OffloadError(f"offload store {self.url} refused a {memoryview(data).nbytes:,}-byte "
                               f"piece ({resp.status}): {text.decode(errors='replace')[:300]}")
        self.uploaded_bytes += memoryview(data).nbytes
        self.uploads += 1

    def get(self, key: str, size: int) -> Any:
        resp = self._request("GET", key)
        if resp.status != 200:
            text = resp.read().decode(errors="replace")[:300]
            raise OffloadError(f"piece {key[:12]}... ({size:,} bytes) could not be fetched from "
                               f"{self.url} ({resp.status}): {text}")
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = resp.readinto(view[got:got + _IO_CHUNK])
            if not n:
                break
            got += n
        if got != size or resp.read(1):
            raise OffloadError(f"piece {key[:12]}... from {self.url} has the wrong size "
                               f"(expected {size:,} bytes)")
        return buf


class Shipper:
    """Puts the pieces an envelope still holds into a store, skipping what it has already."""

    def __init__(self, store: Any):
        self.store = store
        self._known: dict[str, float] = {}
        self._lock = threading.Lock()

    def ship(self, envelope: Any) -> int:
        """Upload pending pieces; returns the bytes actually sent (0 when all were there)."""
        sent = 0
        for piece in protocol.pending_pieces(envelope):
            key = piece["b3"]
            with self._lock:
                seen = self._known.get(key)
            fresh = seen is not None and time.monotonic() - seen < KNOWN_RECHECK_S
            if not fresh and not self.store.has(key):
                self.store.put(key, piece["_raw"])
                sent += piece["size"]
            with self._lock:
                self._known[key] = time.monotonic()
            del piece["_raw"]
        return sent

    def fetch(self, key: str, size: int) -> Any:
        return self.store.get(key, size)


class CachedFetch:
    """A worker's recent pieces in memory (LRU by bytes): fetched once, then copied locally.

    Only for stores that cost a transfer (HTTP, S3); a directory store's page cache does this.
    Each call gets its own writable copy, so a call that changes its argument in place does
    not change the next call's. Only content that matches its digest is kept: a tampered or
    damaged object in a bucket is refused by every call, and the next one fetches it again.
    """

    def __init__(self, store: Any, max_bytes: int):
        self.store = store
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, key: str, size: int) -> Any:
        with self._lock:
            held = self._items.get(key)
            if held is not None:
                self._items.move_to_end(key)
        if held is not None:
            return bytearray(held)
        data = self.store.get(key, size)
        if size <= self.max_bytes // 2 and protocol.digest(data) == key:
            with self._lock:
                self._items[key] = bytes(data)
                self._bytes += size
                while self._bytes > self.max_bytes and self._items:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        return data


class UnavailableStore:
    """The store a worker was given but cannot use (boto3 missing, a URL that does not parse):
    every job that needs a piece fails with ``reason``, and jobs that need none still run."""

    kind = "unavailable"

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"UnavailableStore({self.reason!r})"

    def has(self, key: str) -> bool:
        raise OffloadError(self.reason)

    def put(self, key: str, data: Any) -> None:
        raise OffloadError(self.reason)

    def get(self, key: str, size: int) -> Any:
        raise OffloadError(self.reason)


def store_from_env(env: Mapping[str, str] | None = None) -> Any | None:
    """The worker's store, in this order:

    1. ``RPREMOTE_STORE=runpod-volume://VOLUME_ID[/PREFIX]`` and the volume mounted here
       (``RPREMOTE_VOLUME_MOUNT``, default ``/runpod-volume``): a ``DirectoryStore`` on
       ``<mount>/<prefix>``, read and written directly, no keys needed;
    2. ``RPREMOTE_STORE`` otherwise: an ``s3.S3Store`` (boto3's own sources for credentials);
    3. ``RPREMOTE_BLOB_DIR`` when it is reachable here (and the transport is not forced to
       http), else ``RPREMOTE_BLOB_URL`` with ``RPREMOTE_BLOB_KEY`` (or the worker's
       ``RUNPOD_AI_API_KEY``): the emulator's store;

    None when there is none.
    """
    env = os.environ if env is None else env
    url = (env.get("RPREMOTE_STORE") or "").strip()
    if url.lower() not in NO_STORE:
        return _configured_store(url, env)
    directory = env.get("RPREMOTE_BLOB_DIR")
    if directory and env.get("RPREMOTE_BLOB_TRANSPORT") != "http" and os.access(directory, os.W_OK):
        return DirectoryStore(directory)
    url = env.get("RPREMOTE_BLOB_URL")
    key = env.get("RPREMOTE_BLOB_KEY") or env.get("RUNPOD_AI_API_KEY")
    if url and key:
        return HttpStore(url, key)
    return None


def _configured_store(url: str, env: Mapping[str, str]) -> Any:
    try:
        from .s3 import S3Store, parse_store

        location = parse_store(url)
        if location.scheme == "runpod-volume":
            mount = Path(env.get("RPREMOTE_VOLUME_MOUNT") or NETWORK_VOLUME_DIR)
            if mount.is_dir():
                return DirectoryStore(mount.joinpath(*location.prefix.strip("/").split("/"))
                                      if location.prefix.strip("/") else mount)
        return S3Store(location, env=dict(env))
    except Exception as e:  # noqa: BLE001 -- said by every job that needs the store
        return UnavailableStore(f"this worker cannot use its offload store RPREMOTE_STORE={url}: "
                                f"{type(e).__name__}: {e}")


NO_STORE_HINT = ("configure an offload store: RPREMOTE_STORE=s3://BUCKET[/PREFIX] or "
                 "runpod-volume://VOLUME_ID[/PREFIX] (in the endpoint's environment), or "
                 "RPREMOTE_BLOB_DIR on a directory both sides mount, or RPREMOTE_BLOB_URL "
                 "(+ RPREMOTE_BLOB_KEY) at an `rpremote serve` both sides reach; the local "
                 "target has one already")
