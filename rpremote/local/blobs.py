"""The emulator's offload store: ``/rpremote/v1/blobs/{digest}`` over a directory.

Authenticated (the client's key or the workers' token), size-limited (per piece and in
total: the least recently used pieces go first), expiring (pieces unused for ``ttl_s`` are
removed), and content-checked: a PUT whose bytes do not hash to its name is refused, so
what sits under a digest is always that content. Clients on this machine write the same
directory directly (``rpremote.blobs.DirectoryStore``); this HTTP face is for those that
cannot, and is what a store reached over a network looks like.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from blake3 import blake3
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..blobs import DirectoryStore, OffloadError
from ..private import make_dirs, private_dir
from .api_error import ApiError

PIECE_MAX_BYTES_DEFAULT = 8 * 1024 ** 3
TOTAL_MAX_BYTES_DEFAULT = 64 * 1024 ** 3
TTL_S_DEFAULT = 24 * 3600.0
SWEEP_EVERY_S = 60.0
# A container's /dev/shm is often 64 MB (Docker's default): too small to hold big pieces.
SHM_MIN_BYTES = 2 * 1024 ** 3
_SEND_CHUNK = 4 * 1024 * 1024


def blob_root(state_dir: Path) -> Path:
    """Where the pieces live: in memory (``/dev/shm``) when this machine has it, since a
    disk-backed page cache throttles writers of hundreds of MB (64 MiB: 35 ms to tmpfs, 110-320
    ms to disk here); else beside the emulator's state. One directory per state directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and _size(shm) >= SHM_MIN_BYTES:
        tag = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]
        return shm / f"rpremote-{os.getuid()}" / tag
    return Path(state_dir) / "blobs"


def _size(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_blocks * st.f_frsize


def _memory_cap(root: Path, wanted: int) -> int:
    """On tmpfs the store is RAM: at most half of it."""
    try:
        st = os.statvfs(root)
    except OSError:
        return wanted
    if str(root).startswith("/dev/shm/"):
        return min(wanted, st.f_blocks * st.f_frsize // 2)
    return wanted


class BlobService:
    """The store's files, limits, counters and sweeping; routes call its methods."""

    def __init__(self, root: Path, *, piece_max_bytes: int = PIECE_MAX_BYTES_DEFAULT,
                 total_max_bytes: int = TOTAL_MAX_BYTES_DEFAULT, ttl_s: float = TTL_S_DEFAULT):
        self.root = Path(root)
        # /dev/shm/rpremote-<uid> is a name in a world-writable directory: it must be ours.
        shared = self.root.parent.name == f"rpremote-{os.getuid()}"
        private_dir(self.root, top=self.root.parent if shared else None)
        self.files = DirectoryStore(self.root)
        self.total_max_bytes = _memory_cap(self.root, total_max_bytes)
        self.piece_max_bytes = min(piece_max_bytes, self.total_max_bytes)
        self.ttl_s = ttl_s
        self.puts = self.put_bytes = self.gets = self.get_bytes = 0
        self._last_sweep = 0.0

    def close(self) -> None:
        """A store in memory (/dev/shm) goes with the emulator: RAM is not a cache to leak.
        Results still retained then lose their big pieces (the client says they expired)."""
        if str(self.root).startswith("/dev/shm/"):
            shutil.rmtree(self.root, ignore_errors=True)

    def path(self, key: str) -> Path:
        try:
            return self.files._path(key)
        except OffloadError as e:
            raise ApiError(400, str(e)) from None

    async def put(self, request: Request, key: str) -> Response:
        path = self.path(key)
        length = request.headers.get("content-length")
        if not (length and length.isdigit()):
            raise ApiError(411, "PUT a piece with a Content-Length")
        size = int(length)
        if size > self.piece_max_bytes:
            raise ApiError(413, f"a piece of {size:,} bytes is over this store's limit of "
                                f"{self.piece_max_bytes:,} (rpremote serve --blob-max-mb)")
        if path.exists():
            await _drain(request)
            os.utime(path)
            return JSONResponse({"b3": key, "size": size, "stored": False})
        make_dirs(path.parent)
        hasher = blake3()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        got = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    got += len(chunk)
                    if got > size:
                        raise ApiError(400, "the body is longer than its Content-Length")
                    hasher.update(chunk)
                    f.write(chunk)
            if got != size:
                raise ApiError(400, f"the body ended after {got:,} of {size:,} bytes")
            if hasher.hexdigest() != key:
                raise ApiError(400, "the body's BLAKE3 digest is not the name it was PUT under")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.puts += 1
        self.put_bytes += size
        self.sweep(force=True)
        return JSONResponse({"b3": key, "size": size, "stored": True}, status_code=201)

    def get(self, key: str, head: bool = False) -> Response:
        path = self.path(key)
        try:
            size = path.stat().st_size
            os.utime(path)
        except FileNotFoundError:
            raise ApiError(404, f"no piece {key} in this store (expired, or never uploaded)") from None
        if head:
            return Response(headers={"Content-Length": str(size)})
        self.gets += 1
        self.get_bytes += size
        response = FileResponse(path, media_type="application/octet-stream")
        response.chunk_size = _SEND_CHUNK
        return response

    def stats(self) -> dict[str, Any]:
        count, total = self._usage()
        return {"dir": str(self.root), "pieces": count, "bytes": total, "puts": self.puts,
                "put_bytes": self.put_bytes, "gets": self.gets, "get_bytes": self.get_bytes,
                "piece_max_bytes": self.piece_max_bytes, "total_max_bytes": self.total_max_bytes,
                "ttl_s": self.ttl_s}

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                if path.name.startswith(".incoming-"):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, path))
        return entries

    def _usage(self) -> tuple[int, int]:
        entries = self._entries()
        return len(entries), sum(size for _, size, _ in entries)

    def sweep(self, force: bool = False) -> int:
        """Remove expired pieces, then the least recently used beyond the total limit."""
        now = time.time()
        if not force and now - self._last_sweep < min(SWEEP_EVERY_S, self.ttl_s / 2):
            return 0
        self._last_sweep = now
        removed = 0
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for mtime, size, path in entries:
            if now - mtime > self.ttl_s or total > self.total_max_bytes:
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
        return removed


async def _drain(request: Request) -> None:
    async for _ in request.stream():
        pass
