"""What every control-plane route works with: the engine, its store, the image map; and the
small conventions all objects share (ids, timestamps, JSON responses)."""

from __future__ import annotations

import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..engine import Engine
from ..images import ImageMap

_ID_ALPHABET = string.ascii_lowercase + string.digits

# Kinds of stored objects (Store.put_resource).
ENDPOINT, TEMPLATE, VOLUME, POD = "endpoint", "template", "volume", "pod"


@dataclass
class ControlPlane:
    engine: Engine
    images: ImageMap
    pods: Any = None  # pods.PodService: the Pods' processes and their pod-scoped keys

    @property
    def store(self):
        return self.engine.store

    def new_id(self, length: int) -> str:
        """An id in RunPod's shape (rest-v2 §1.8: opaque lowercase alphanumerics; 14 for
        endpoints, 10 for templates and volumes), unused by any object or emulator endpoint."""
        while True:
            new = "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
            if new not in self.engine.endpoints and not any(
                    self.store.resource(kind, new) for kind in (ENDPOINT, TEMPLATE, VOLUME, POD)):
                return new


def rfc3339(t: float | None = None) -> str:
    """``2026-06-01T12:00:00Z`` (rest-v2 §1.3: RFC 3339, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status,
                    media_type="application/json")


def root_url(request: Request) -> str:
    """The emulator's base URL as this client reached it (``requestUrls`` point there)."""
    return str(request.base_url).rstrip("/")
