"""Webhook delivery: POST the job's status object when it ends, retrying as RunPod does (§1.3)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .. import platform as rp

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("rpremote.emulator")


class Webhooks:
    def __init__(self, retry_delay_s: float, retries: int = rp.WEBHOOK_RETRIES):
        self.retry_delay_s = retry_delay_s
        self.retries = retries
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task] = set()

    def send(self, url: str, body: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        import httpx  # (loaded on first use: the emulator starts without it)

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        for attempt in range(1 + self.retries):
            if attempt:
                await asyncio.sleep(self.retry_delay_s)
            try:
                response = await self._client.post(url, json=body)
                if response.status_code < 300:
                    return
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as e:
                why = f"{type(e).__name__}: {e}"
            log.warning("webhook for job %s to %s failed (%s), attempt %d of %d",
                        body.get("id"), url, why, attempt + 1, 1 + self.retries)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
