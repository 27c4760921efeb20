"""Each HTTP answer of the emulator leaves in one write, headers and body together.

An ASGI app sends an answer as two messages (``http.response.start``, then the body), and
uvicorn writes each to the socket as it comes: two TCP segments (asyncio sets TCP_NODELAY),
so the peer (a client blocked in ``recv``, a worker's aiohttp loop) wakes twice per answer.
On a warm call's three exchanges that is three extra wake-ups on a busy 2-core machine.

``protocol_class()`` is uvicorn's httptools protocol with its transport wrapped: writes made
in one turn of the event loop are joined and sent at the end of that turn (``call_soon``).
Nothing waits longer than that turn, a streamed body still leaves chunk by chunk (the app
awaits between chunks), and closing or aborting the connection flushes or drops what is
pending first. Flow control is untouched: pausing comes from the real transport's buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any


class JoinedWrites:
    """A transport whose writes within one loop turn leave as one ``write``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self._transport, name)


def protocol_class() -> type:
    """uvicorn's httptools protocol, writing through ``JoinedWrites``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class OneWriteProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(JoinedWrites(transport, self.loop))  # type: ignore[arg-type]

    return OneWriteProtocol
