"""RunPod's HTTP proxy in front of Pods, on the emulator's own base URL (rest-v2 §4.7).

On RunPod, ``https://{podId}-{port}.proxy.runpod.net/{path}`` reaches a Pod's ``/http`` port.
Here it is ``{emulator}/pod-proxy/{podId}-{port}/{path}``: any method, headers and body go to
the 127.0.0.1 port standing for that Pod port (``pod_runner.py``), and the answer streams
back as it comes (nothing is buffered whole, either way). As on RunPod it is public: no
emulator key; the Pod's own server checks whatever it checks. Its answers of its own:

- 502 (an HTML page, as Cloudflare's) when the port does not answer: the Pod is not running,
  its server is not up yet (expect it for a while after RUNNING, §4.7), or it broke the
  connection;
- 524 (HTML) when the Pod's server sends no response within the proxy timeout (100 s on
  RunPod; ``rpremote serve --pod-proxy-timeout``). A response whose body then stalls that
  long is cut off (the connection closes), as a proxy's read timeout does;
- 404 for a Pod that does not exist or a port it does not expose as ``/http`` (GAP: RunPod's
  answer for these is not documented).

The path prefix is stripped (the Pod's server sees ``/{path}``, as on RunPod); it also gets
``X-Forwarded-For``, ``-Proto``, ``-Host`` and ``-Prefix`` (``/pod-proxy/{podId}-{port}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .plane import POD, ControlPlane

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("rpremote.emulator")
PREFIX = "/pod-proxy"
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "trailers", "transfer-encoding", "upgrade", "host"})
# The emulator's server sets its own (as Cloudflare does on RunPod).
_OWN = frozenset({"server", "date"})
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _page(status: int, title: str, text: str) -> Response:
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><title>{status} {title}</title></head><body>"
        f"<h1>{status} {title}</h1><p>{text}</p><p>rpremote emulator: RunPod proxy</p>"
        "</body></html>", status_code=status)


class _Relay(Response):
    """The Pod's response, passed on as it arrives. Ends with the client (a disconnect stops
    the reading); a Pod that stalls past the read timeout or breaks off gets the client's
    connection closed without the response's end, never a truncated body shown complete."""

    def __init__(self, answer: httpx.Response, headers: list[tuple[bytes, bytes]], where: str):
        self.answer, self.where = answer, where
        self.status_code = answer.status_code
        self.raw_headers = headers
        self.background = None

    async def _relay(self, send: Send) -> bool:
        import httpx  # (loaded on first use: the emulator starts without it)

        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as e:
            log.info("pod proxy: %s: response cut off (%s)", self.where, type(e).__name__)
            return False  # the server closes the connection: the response never ends
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(send))

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            relay.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await relay
        except asyncio.CancelledError:
            if not watcher.done():  # we are cancelled ourselves, not by the client leaving
                raise
        finally:
            watcher.cancel()
            await self.answer.aclose()


def proxy_routes(cp: ControlPlane) -> list[Route]:
    runner = cp.pods.runner
    timeout = runner.settings.proxy_timeout_s
    clients: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        import httpx  # (loaded on first use: the emulator starts without it)

        if not clients:
            clients.append(httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=5.0), follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
                trust_env=False))
        return clients[0]

    async def close() -> None:
        while clients:
            await clients.pop().aclose()

    runner.on_close.append(close)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per proxied request

    async def endpoint(request: Request) -> Response:
        import httpx  # (loaded on first use: the emulator starts without it)

        cp.engine.last_client_request = time.monotonic()  # a Pod in use keeps the server up
        target = request.path_params["target"]
        pod_id, sep, port = target.rpartition("-")
        record = cp.store.resource(POD, pod_id) if sep and port.isdigit() else None
        if record is None or f"{port}/http" not in record["object"]["ports"]:
            return _page(404, "Not Found", f"no Pod exposes {target} as an HTTP port")
        host_port = runner.host_port(pod_id, int(port))
        bad_gateway = _page(502, "Bad Gateway", f"Pod {pod_id} does not answer on port {port} "
                                                "(not running, or its server is not up yet)")
        if host_port is None:
            return bad_gateway
        path = request.path_params.get("path", "")
        url = f"http://127.0.0.1:{host_port}/{path}"
        if request.url.query:
            url += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in _HOP]
        client_host = request.client.host if request.client else "127.0.0.1"
        headers += [(b"x-forwarded-for", client_host.encode()),
                    (b"x-forwarded-proto", request.url.scheme.encode()),
                    (b"x-forwarded-host", request.headers.get("host", "").encode()),
                    (b"x-forwarded-prefix", f"{PREFIX}/{target}".encode())]
        has_body = ("content-length" in request.headers
                    or "transfer-encoding" in request.headers)
        upstream = client().build_request(request.method, url, headers=headers,
                                          content=request.stream() if has_body else None)
        try:
            answer = await asyncio.wait_for(client().send(upstream, stream=True), timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return _page(524, "A timeout occurred", f"Pod {pod_id} port {port} sent no "
                                                    f"response within {timeout:g} s")
        except httpx.HTTPError:
            return bad_gateway

        headers = [(k.lower(), v) for k, v in answer.headers.raw
                   if k.decode().lower() not in _HOP | _OWN]
        return _Relay(answer, headers, f"{pod_id}-{port}")

    return [Route(f"{PREFIX}/{{target}}", endpoint, methods=_METHODS),
            Route(f"{PREFIX}/{{target}}/{{path:path}}", endpoint, methods=_METHODS)]
