"""The RunPod Serverless queue API (``/v2/{endpoint}/...``), synchronously over httpx.

One client for every target: the local emulator and RunPod serve the same API. Errors are
turned into rpremote errors that say what to do; transient-failure retries are the caller's
business (see the call-surface issue).
"""

from __future__ import annotations

from typing import Any

import httpx

from .. import platform as rp
from ..errors import ConfigError, JobFailed, RpremoteError


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
        return self._call("POST", f"/v2/{endpoint}/run", json=body)

    def runsync(self, endpoint: str, body: dict[str, Any], wait_ms: int) -> dict[str, Any]:
        wait_ms = max(rp.RUNSYNC_WAIT_MIN_MS, min(rp.RUNSYNC_WAIT_MAX_MS, wait_ms))
        return self._call("POST", f"/v2/{endpoint}/runsync", json=body,
                          params={"wait": wait_ms}, timeout=wait_ms / 1000 + 30)

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/status/{job_id}")

    def stream(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/stream/{job_id}", timeout=60)

    def cancel(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v2/{endpoint}/cancel/{job_id}")

    def health(self, endpoint: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/{endpoint}/health")

    def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kw)
        except httpx.TransportError as e:
            raise RpremoteError(f"cannot reach {self.where} at {self.base_url}: {e}") from e
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
