"""``ControlPlane``: RunPod's REST v2 control plane (``https://api.runpod.io/v2/...``) as
``cp.endpoints``, ``cp.templates``, ``cp.volumes``, ``cp.catalog`` over one httpx client.

The base URL is ``RPREMOTE_RUNPOD_API`` (default ``platform.REST_V2_BASE_URL``), so a
rehearsal points it at ``rpremote serve``, whose control plane takes the same Bearer key as
its job API. The key: ``configure(api_key=...)`` > ``$RUNPOD_API_KEY`` >
``~/.runpod/config.toml`` (``config.runpod_api_key``). A missing key fails here, before any
request; a refused one (401/403) on the first request, before anything is created. The key
is in no message, repr or log line.

Retries and errors: ``exchange.py``. ``transport=`` is httpx's testing seam (lightkube's
``Client(transport=...)``): tests wrap the real transport to record or to break requests.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from ... import config
from ... import platform as rp
from ...errors import ApiKeyError
from ..drive import drive
from ..queue import RETRY_DELAYS_S
from .exchange import exchange
from .resources import Catalog, Endpoints, Obj, Templates, Volumes

BASE_URL_SETTING = "RPREMOTE_RUNPOD_API"


def base_url_setting() -> tuple[str, str]:
    """The control plane's base URL and where it comes from."""
    url = os.environ.get(BASE_URL_SETTING, "").strip()
    if url:
        return url.rstrip("/"), f"${BASE_URL_SETTING}"
    return rp.REST_V2_BASE_URL, "the default"


QUEUE_URL_SETTING = "RPREMOTE_RUNPOD_QUEUE"


def queue_url_setting() -> tuple[str, str]:
    """The job API's base URL (``/v2/{endpoint_id}/run`` under it) and where it comes from;
    an endpoint's own ``requestUrls`` win over it when the control plane returns them."""
    url = os.environ.get(QUEUE_URL_SETTING, "").strip()
    if url:
        return url.rstrip("/"), f"${QUEUE_URL_SETTING}"
    return rp.JOB_API_BASE_URL, "the default"


class ControlPlane:
    """RunPod's control plane. ``request`` sends one call with the retries of ``exchange``;
    the resource families build on it. Use as a context manager, or ``close()``."""

    def __init__(self, base_url: str, api_key: str, *, transport: httpx.BaseTransport | None = None,
                 key_source: str = "the api_key given", timeout: float = 30.0,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS_S):
        if not api_key or not api_key.strip():
            raise ApiKeyError("no RunPod API key: " + config.API_KEY_HOW)
        self.base_url = base_url.rstrip("/")
        self.retry_delays = tuple(retry_delays)  # the waits between attempts (Retry-After wins)
        self.key_source = key_source
        self._key = api_key.strip()
        self.where = f"RunPod's control plane at {self.base_url}"
        self._key_how = (f"the key came from {key_source}; " + config.API_KEY_HOW)
        self._http = httpx.Client(base_url=self.base_url, transport=transport,
                                  headers={"Authorization": f"Bearer {self._key}",
                                           "Accept": "application/json"},
                                  timeout=httpx.Timeout(timeout, connect=10.0))
        self.endpoints = Endpoints(self)
        self.templates = Templates(self)
        self.volumes = Volumes(self)
        self.catalog = Catalog(self)

    @classmethod
    def from_settings(cls, *, transport: httpx.BaseTransport | None = None) -> "ControlPlane":
        """The control plane the settings name: ``RPREMOTE_RUNPOD_API`` and the key from
        ``configure(api_key=...)``, ``$RUNPOD_API_KEY`` or ``~/.runpod/config.toml``;
        ``ApiKeyError`` saying how to set one when there is none."""
        key, source = config.runpod_api_key()
        if not key:
            raise ApiKeyError("no RunPod API key: " + config.API_KEY_HOW)
        url, _ = base_url_setting()
        return cls(url, key, transport=transport, key_source=source)

    def __repr__(self) -> str:
        return f"ControlPlane({self.base_url!r}, key from {self.key_source})"

    def __enter__(self) -> "ControlPlane":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def scrub(self, text: str) -> str:
        """``text`` without the key in it (a server could echo it back)."""
        return text.replace(self._key, "***") if self._key in text else text

    def request(self, method: str, path: str, **options: Any) -> Any:
        """One call with retries; the decoded body (None for 204) or a ``ControlPlaneError``."""
        steps = exchange(method, path, where=self.where, key_how=self._key_how,
                         scrub=self.scrub, delays=self.retry_delays, **options)
        return drive(steps, self._send)

    def stream(self, method: str, path: str, **options: Any):
        """A streamed response (``with cp.stream("GET", ".../logs") as r``), no retries: for
        the Server-Sent Events of log streams (§4.8)."""
        return self._http.stream(method, path, **options)

    def _send(self, action: tuple) -> httpx.Response:
        _, method, path, options = action
        return self._http.request(method, path, **options)

    def create_or_find(self, kind: str, body: Obj, *, match=None) -> Obj:
        """``cp.<kind>.create_or_find(body, match=...)`` for ``kind`` in endpoints, templates,
        volumes: list and match first, create once, list again if the create broke off."""
        family = {"endpoints": self.endpoints, "templates": self.templates,
                  "volumes": self.volumes}.get(kind)
        if family is None:
            raise ValueError(f"create_or_find: kind is endpoints, templates or volumes, "
                             f"not {kind!r}")
        return family.create_or_find(body, match=match)
