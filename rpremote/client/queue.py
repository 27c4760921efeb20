"""The RunPod Serverless queue API (``/v2/{endpoint}/...``) over httpx, blocking or async.

One client for every target: the local emulator and RunPod serve the same API. Errors are
turned into rpremote errors that say what to do. ``QueueClient`` and ``AsyncQueueClient``
share every rule (``ROUTES``, ``_exchange``); only how a request is sent differs.

Transient failures are retried with backoff, without ever duplicating a job: a request that
never reached the server (connection refused, connect timeout) and one the server turned away
(429, 503) are retried whatever they are; a request that may have been received (connection
reset mid-way, 500/502/504) is retried only when repeating it is harmless (status, stream,
cancel, health; not run/runsync).

A client may be told how to see that its server's process is gone (``alive``: the local
emulator's pid, microseconds to ask). It asks before each attempt and after each failure, so
a request to an emulator that was killed fails at once with ``EmulatorStopped`` (saying
whether the request may have reached it) instead of going through the retries.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Callable

import httpx

from .. import platform as rp
from ..errors import ConfigError, EmulatorStopped, JobFailed, RpremoteError
from .drive import Steps, adrive, drive, sleep
from .loopback import LoopbackSender, is_loopback_http


RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
REFUSED_STATUSES = frozenset({429, 503})  # the server did not take the request
MAYBE_TAKEN_STATUSES = frozenset({500, 502, 504})


def _runsync(endpoint: str, body: dict[str, Any], wait_ms: int):
    wait_ms = max(rp.RUNSYNC_WAIT_MIN_MS, min(rp.RUNSYNC_WAIT_MAX_MS, wait_ms))
    return ("POST", f"/v2/{endpoint}/runsync",
            dict(idempotent=False, json=body, params={"wait": wait_ms}, timeout=wait_ms / 1000 + 30))


# operation -> (method, path, options); "idempotent": may be sent again when it broke off.
ROUTES = {
    "run": lambda endpoint, body: (
        "POST", f"/v2/{endpoint}/run", dict(idempotent=False, json=body)),
    "runsync": _runsync,
    "status": lambda endpoint, job_id: ("GET", f"/v2/{endpoint}/status/{job_id}", {}),
    "stream": lambda endpoint, job_id: ("GET", f"/v2/{endpoint}/stream/{job_id}", dict(timeout=60)),
    "cancel": lambda endpoint, job_id: ("POST", f"/v2/{endpoint}/cancel/{job_id}", {}),
    "health": lambda endpoint: ("GET", f"/v2/{endpoint}/health", {}),
}


class _QueueApi:
    """What both clients share: the retry rules and the reading of responses."""

    base_url: str
    where: str
    alive: Callable[[], bool] | None = None  # False once the server's process is gone

    def _check_alive(self, sent: bool | None) -> None:
        if self.alive is not None and not self.alive():
            raise EmulatorStopped(self.where, sent)

    def _settings(self, api_key: str) -> dict[str, Any]:
        return dict(base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"},
                    timeout=httpx.Timeout(30.0, connect=5.0))

    def _exchange(self, method: str, path: str, *, idempotent: bool = True,
                  timeout: float | None = None, **kw: Any) -> Steps:
        """Send (yield ``("send", method, path, options)``) with retries; the decoded body."""
        options = dict(kw, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        for delay in (*RETRY_DELAYS_S, None):
            self._check_alive(sent=False)
            try:
                r = yield ("send", method, path, options)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # never reached the server
                self._check_alive(sent=False)
                if delay is None:
                    raise RpremoteError(f"cannot reach {self.where} at {self.base_url}: {e}") from e
                yield sleep(delay)
                continue
            except httpx.TransportError as e:
                self._check_alive(sent=None)  # it may have been received before the server died
                if not idempotent or delay is None:
                    raise RpremoteError(
                        f"{method} {path} to {self.where} broke off ({type(e).__name__}: {e})"
                        + ("" if idempotent else "; not repeated, since the job may have been "
                           "queued already: check the endpoint's jobs before sending it again")
                    ) from e
                yield sleep(delay)
                continue
            retry = r.status_code in REFUSED_STATUSES or (
                idempotent and r.status_code in MAYBE_TAKEN_STATUSES)
            if retry and delay is not None:
                yield sleep(_retry_after(r, delay))
                continue
            return self._response(method, path, r)
        raise AssertionError("unreachable")

    def _response(self, method: str, path: str, r: httpx.Response) -> Any:
        if r.status_code == 401:
            raise ConfigError(f"{self.where} refused the API key (401); check the key rpremote "
                              "uses for this target")
        if r.status_code >= 400:
            try:
                message = r.json().get("error") or r.text
            except ValueError:
                message = r.text
            raise JobFailed(f"{method} {path} failed with HTTP {r.status_code}: {message}",
                            http_status=r.status_code)
        return r.json()


class QueueClient(_QueueApi):
    """Blocking client; ``call("status", endpoint, job_id)`` or the named methods."""

    def __init__(self, base_url: str, api_key: str, *, where: str = "the endpoint server",
                 transport: httpx.BaseTransport | None = None,
                 alive: Callable[[], bool] | None = None, lean: bool = False):
        """``lean``: send through ``loopback.LoopbackSender`` (the local emulator only)."""
        self.base_url = base_url.rstrip("/")
        self.where = where
        self.alive = alive
        self.http = httpx.Client(**self._settings(api_key), transport=transport)
        self._api_key = api_key
        self._async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lean = None
        if lean and transport is None and is_loopback_http(self.base_url):
            self._lean = LoopbackSender(self.base_url, {"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        self.http.close()

    def for_loop(self) -> "AsyncQueueClient":
        """The async twin of this client for the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = AsyncQueueClient(self.base_url, self._api_key,
                                                          where=self.where, alive=self.alive)
        return client

    def call(self, op: str, *args: Any) -> Any:
        method, path, options = ROUTES[op](*args)
        return drive(self._exchange(method, path, **options), self._send)

    def _send(self, action: tuple) -> Any:
        _, method, path, options = action
        if self._lean is not None:
            return self._lean.request(method, path, **options)
        return self.http.request(method, path, **options)

    def run(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("run", endpoint, body)

    def runsync(self, endpoint: str, body: dict[str, Any], wait_ms: int) -> dict[str, Any]:
        return self.call("runsync", endpoint, body, wait_ms)

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self.call("status", endpoint, job_id)

    def stream(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self.call("stream", endpoint, job_id)

    def cancel(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self.call("cancel", endpoint, job_id)

    def health(self, endpoint: str) -> dict[str, Any]:
        return self.call("health", endpoint)


class AsyncQueueClient(_QueueApi):
    """The same API on ``httpx.AsyncClient``: ``await client.call("status", endpoint, job_id)``.

    An ``httpx.AsyncClient`` belongs to the event loop it first ran on; make one per loop.
    """

    def __init__(self, base_url: str, api_key: str, *, where: str = "the endpoint server",
                 transport: httpx.AsyncBaseTransport | None = None,
                 alive: Callable[[], bool] | None = None):
        self.base_url = base_url.rstrip("/")
        self.where = where
        self.alive = alive
        self.http = httpx.AsyncClient(**self._settings(api_key), transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, op: str, *args: Any) -> Any:
        method, path, options = ROUTES[op](*args)
        return await adrive(self._exchange(method, path, **options), self._send)

    async def _send(self, action: tuple) -> httpx.Response:
        _, method, path, options = action
        return await self.http.request(method, path, **options)


def _retry_after(r: httpx.Response, default: float) -> float:
    try:
        return min(30.0, max(default, float(r.headers.get("retry-after", ""))))
    except ValueError:
        return default
