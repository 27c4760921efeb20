"""The RunPod Serverless queue API (``/v2/{endpoint}/...``), synchronously over httpx.

One client for every target: the local emulator and RunPod serve the same API. Errors are
turned into rpremote errors that say what to do.

Transient failures are retried with backoff, without ever duplicating a job: a request that
never reached the server (connection refused, connect timeout) and one the server turned away
(429, 503) are retried whatever they are; a request that may have been received (connection
reset mid-way, 500/502/504) is retried only when repeating it is harmless (status, stream,
cancel, health; not run/runsync).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from .. import platform as rp
from ..errors import ConfigError, JobFailed, RpremoteError


RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
REFUSED_STATUSES = frozenset({429, 503})  # the server did not take the request
MAYBE_TAKEN_STATUSES = frozenset({500, 502, 504})


class QueueClient:
    def __init__(self, base_url: str, api_key: str, *, where: str = "the endpoint server",
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.where = where
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def run(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/v2/{endpoint}/run", idempotent=False, json=body)

    def runsync(self, endpoint: str, body: dict[str, Any], wait_ms: int) -> dict[str, Any]:
        wait_ms = max(rp.RUNSYNC_WAIT_MIN_MS, min(rp.RUNSYNC_WAIT_MAX_MS, wait_ms))
        return self._call("POST", f"/v2/{endpoint}/runsync", idempotent=False, json=body,
                          params={"wait": wait_ms}, timeout=wait_ms / 1000 + 30)

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/status/{job_id}")

    def stream(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/stream/{job_id}", timeout=60)

    def cancel(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v2/{endpoint}/cancel/{job_id}")

    def health(self, endpoint: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/health")

    def _call(self, method: str, path: str, timeout: float | None = None, *,
              idempotent: bool = True, **kw: Any) -> Any:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                r = self.http.request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # never reached the server
                if delay is None:
                    raise RpremoteError(f"cannot reach {self.where} at {self.base_url}: {e}") from e
                time.sleep(delay)
                continue
            except httpx.TransportError as e:
                if not idempotent or delay is None:
                    raise RpremoteError(
                        f"{method} {path} to {self.where} broke off ({type(e).__name__}: {e})"
                        + ("" if idempotent else "; not repeated, since the job may have been "
                           "queued already: check the endpoint's jobs before sending it again")
                    ) from e
                time.sleep(delay)
                continue
            retry = r.status_code in REFUSED_STATUSES or (
                idempotent and r.status_code in MAYBE_TAKEN_STATUSES)
            if retry and delay is not None:
                time.sleep(_retry_after(r, delay))
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
            raise JobFailed(f"{method} {path} failed with HTTP {r.status_code}: {message}")
        return r.json()


def _retry_after(r: httpx.Response, default: float) -> float:
    try:
        return min(30.0, max(default, float(r.headers.get("retry-after", ""))))
    except ValueError:
        return default
