"""A TCP proxy on loopback that adds a fixed delay each way: a distant endpoint, here.

``LatencyProxy(target_port, rtt_ms=50)`` listens on a free 127.0.0.1 port and forwards every
connection to ``127.0.0.1:target_port``, holding each chunk ``rtt_ms / 2`` in both directions
(without slowing the stream's throughput: chunks are delayed, not serialized behind each other).
It counts the HTTP requests that go through (request lines seen client -> server), so a bench
can say how many requests each kind of call makes. Runs its own event loop in a thread.

    with LatencyProxy(8765, rtt_ms=50) as proxy:
        url = proxy.url  # http://127.0.0.1:<port>
        ...
        proxy.requests   # [(method, path), ...]
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) HTTP/1\.1\r\n")


class LatencyProxy:
    def __init__(self, target_port: int, rtt_ms: float = 50.0):
        self.target_port = target_port
        self.delay_s = rtt_ms / 2000.0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LatencyProxy":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Stop listening and end every relayed connection before the loop stops."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> list[tuple[str, str]]:
        with self._lock:
            seen, self.requests = self.requests, []
        return seen

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port))
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer, count=True),
                                 self._pipe(up_reader, writer, count=False),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            writer.close()  # the proxy is stopping (a handler must not end cancelled in 3.11)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    count: bool) -> None:
        """Copy ``reader`` to ``writer``, each chunk sent ``delay_s`` after it arrived."""
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if count:
                    with self._lock:
                        self.requests += [(m.group(1).decode(), m.group(2).decode())
                                          for m in _REQUEST_LINE.finditer(chunk)]
                queue.put_nowait((time.monotonic() + self.delay_s, chunk))
        finally:
            queue.put_nowait((0.0, None))
            await sender
