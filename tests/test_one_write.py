"""The emulator's answers leave in one write: ``local/one_write.py``."""

from __future__ import annotations

import asyncio

import httpx

from rpremote.local.one_write import JoinedWrites, protocol_class


class Recording:
    """A transport that records what reaches the socket, write by write."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data):
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_writes_in_one_loop_turn_leave_together_and_close_flushes_first():
    async def scenario():
        raw = Recording()
        joined = JoinedWrites(raw, asyncio.get_running_loop())
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"{}")
        assert raw.writes == [] and joined.get_write_buffer_size() == 21
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        joined.write(b"chunk")
        await asyncio.sleep(0)
        joined.write(b"last")
        joined.close()  # what is pending goes out before the connection closes
        assert raw.writes[1:] == [b"chunk", b"last"] and raw.closed
        assert joined.get_extra_info("peername") == ("127.0.0.1", 1)

        raw2 = Recording()
        joined2 = JoinedWrites(raw2, asyncio.get_running_loop())
        joined2.write(b"never sent")
        joined2.abort()
        await asyncio.sleep(0)
        assert raw2.writes == [] and raw2.aborted

    asyncio.run(scenario())


def test_a_server_with_the_protocol_answers_in_full():
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def small(request):
        return JSONResponse({"ok": True})

    async def streamed(request):
        async def chunks():
            for i in range(3):
                yield f"part{i};".encode()
                await asyncio.sleep(0.01)
        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/small", small), Route("/streamed", streamed)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            http=protocol_class(), lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # keep-alive: the same connection answers again
                assert client.get("/small").json() == {"ok": True}
            assert client.get("/streamed").text == "part0;part1;part2;"
    finally:
        server.should_exit = True
        thread.join(10)
