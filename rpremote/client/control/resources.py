"""The control plane's resource families (runpod-rest-v2.md §2, §3, §5, §6), as data plus a
few verbs (hcloud's ``client.servers``, lightkube's resource-as-data).

Each family is a base path, the key its list is wrapped in, and whether it pages; the verbs
(``list``, ``get``, ``create``, ``update``, ``delete``, ``create_or_find``) are the same for
all. Objects are the API's own dicts (camelCase, as the doc names the fields): nothing here
renames or drops a field, so a field RunPod adds reaches the caller untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol
from urllib.parse import quote

from ...errors import CreateOutcomeUnknown

Obj = dict[str, Any]


class Requests(Protocol):
    """What a family needs of its client (``ControlPlane.request``): one call, retried."""

    def request(self, method: str, path: str, **options: Any) -> Any: ...


def _id(value: str | Obj) -> str:
    """An object or its id (``cp.endpoints.get(ep)`` or ``get("abc")``), safe in a path."""
    ident = value.get("id") if isinstance(value, dict) else value
    if not isinstance(ident, str) or not ident:
        raise ValueError(f"not a control-plane id or object with one: {value!r}")
    return quote(ident, safe="")


class Resource:
    """One family: ``path`` (``/v2/serverless``), ``wrapper`` (``endpoints``), ``paged``."""

    path: str
    wrapper: str
    paged: bool = False

    def __init__(self, plane: Requests):
        self._plane = plane

    def list(self, *, page_size: int | None = None, **params: Any) -> list[Obj]:
        """Every object: follows ``pagination.nextCursor`` while ``hasNextPage`` (§1.6), and
        takes a list with no ``pagination`` block (older deployments) as complete."""
        params = {k: v for k, v in params.items() if v is not None}
        if self.paged and page_size is not None:
            params["limit"] = page_size
        out: list[Obj] = []
        seen: set[str] = set()
        while True:
            body = self._plane.request("GET", self.path, params=dict(params)) or {}
            out.extend(body.get(self.wrapper) or [])
            paging = body.get("pagination") or {}
            cursor = paging.get("nextCursor")
            if not (self.paged and paging.get("hasNextPage") and cursor) or cursor in seen:
                return out
            seen.add(cursor)
            params["cursor"] = cursor

    def get(self, obj: str | Obj) -> Obj:
        return self._plane.request("GET", f"{self.path}/{_id(obj)}")

    def create(self, body: Obj) -> Obj:
        """POST once. A create that broke off after it was sent raises
        ``CreateOutcomeUnknown`` and is not repeated: see ``create_or_find``."""
        return self._plane.request("POST", self.path, json=body)

    def update(self, obj: str | Obj, changes: Obj) -> Obj:
        """PATCH: only the fields given change (send zeros explicitly, §2.5)."""
        return self._plane.request("PATCH", f"{self.path}/{_id(obj)}", json=changes)

    patch = update  # the HTTP verb's name

    def delete(self, obj: str | Obj) -> None:
        self._plane.request("DELETE", f"{self.path}/{_id(obj)}")

    def find(self, match: Callable[[Obj], bool]) -> list[Obj]:
        return [o for o in self.list() if match(o)]

    def create_or_find(self, body: Obj, *, match: Callable[[Obj], bool] | None = None) -> Obj:
        """The object ``match`` picks (default: same ``name`` as ``body``), made if there is
        none: list first, create once, and when the create broke off after it was sent, list
        again to find what it made (RunPod has no idempotency key, §1.8). Raises the
        ``CreateOutcomeUnknown`` only when the second list does not find it either."""
        if match is None:
            name = body.get("name")
            if not name:
                raise ValueError("create_or_find needs match= or a body with a name")
            match = lambda o: o.get("name") == name  # noqa: E731
        found = self.find(match)
        if found:
            return found[0]
        try:
            return self.create(body)
        except CreateOutcomeUnknown:
            found = self.find(match)
            if found:
                return found[0]
            raise


class Endpoints(Resource):
    """Serverless endpoints (§2). Always send ``timeout``: omitted, RunPod stores 0 (§2.2)."""

    path, wrapper, paged = "/v2/serverless", "endpoints", True

    def workers(self, obj: str | Obj) -> Obj:
        """``{endpointVersion, summary, workers}`` (§2.6)."""
        return self._plane.request("GET", f"{self.path}/{_id(obj)}/workers")


class Templates(Resource):
    """Templates (§3): a serverless one seeds endpoints (``templateId``), once."""

    path, wrapper, paged = "/v2/templates", "templates", True


class Volumes(Resource):
    """Network volumes (§5.1): ``{id, name, size, dataCenter, type}``; not paginated."""

    path, wrapper, paged = "/v2/network-volumes", "networkVolumes", False

    def data_center(self, obj: str | Obj) -> str | None:
        """The volume's data center id (``dataCenter``; v1 named it ``dataCenterId``)."""
        volume = obj if isinstance(obj, dict) and "dataCenter" in obj else self.get(obj)
        dc = volume.get("dataCenter") or volume.get("dataCenterId")
        return dc if isinstance(dc, str) and dc else None


class Catalog:
    """What can be had (§6): GPU types (``pool`` for endpoints), CPU flavours, data centers.
    Array query values are comma-joined (``product=["SERVERLESS"]``); not paginated."""

    def __init__(self, plane: Requests):
        self._plane = plane

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = {k: ",".join(v) if isinstance(v, (list, tuple)) else v
                 for k, v in params.items() if v is not None}
        return self._plane.request("GET", path, params=query)

    def gpus(self, **params: Any) -> list[Obj]:
        return self._get("/v2/catalog/gpus", params).get("gpus", [])

    def gpu(self, gpu_id: str, **params: Any) -> Obj:
        return self._get(f"/v2/catalog/gpus/{_id(gpu_id)}", params)

    def cpus(self, **params: Any) -> list[Obj]:
        return self._get("/v2/catalog/cpus", params).get("cpus", [])

    def datacenters(self, **params: Any) -> list[Obj]:
        return self._get("/v2/catalog/datacenters", params).get("dataCenters", [])

    def datacenter(self, dc_id: str, **params: Any) -> Obj:
        return self._get(f"/v2/catalog/datacenters/{_id(dc_id)}", params)
