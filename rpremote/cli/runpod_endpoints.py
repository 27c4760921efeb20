"""The endpoints rpremote made in the RunPod account (target ``runpod``), for ``rpremote
endpoints`` and ``rpremote down``.

Only endpoints ``ours.is_ours`` accepts are listed or deleted; the others are counted and never
touched (not even read past the list). Each row joins three sources: the endpoint as the control
plane lists it, ``GET /v2/serverless/{id}/workers`` (workers by state) and the job API's
``/health`` (the queue), asked through the endpoint's ``requestUrls['health']`` when it has one,
else under the job API's base URL (``RPREMOTE_RUNPOD_QUEUE``). A row whose workers or queue
could not be read shows ``?`` there instead of failing the listing. No env value is shown: an
endpoint's env holds the signing secret and store credentials.
"""

from __future__ import annotations

from typing import Any

from .. import platform as rp
from ..errors import RpremoteError

WORKER_STATES = ("running", "idle", "initializing", "throttled", "unhealthy")
HEAD = ("ENDPOINT", "NAME", "GPU", "WORKERS", "RUNNING", "IDLE", "INIT", "THROTTLED",
        "UNHEALTHY", "QUEUED", "IN PROGRESS", "IDLE TIMEOUT", "IMAGE", "$/H/WORKER")


def split_ours(endpoints: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """rpremote's endpoints, and how many of the account's are not rpremote's."""
    from ..client.control.ours import is_ours

    ours = [ep for ep in endpoints if is_ours(ep)]
    return ours, len(endpoints) - len(ours)


def compute(ep: dict[str, Any]) -> str:
    """``ADA_24``, ``2 x ADA_24|AMPERE_24``, ``CPU cpu3c x2`` (flavour and vCPUs), or ``?``."""
    gpu = ep.get("gpu") or {}
    pools = [str(p) for p in gpu.get("pools") or []]
    if pools:
        count = int(gpu.get("count") or 1)
        return ("" if count == 1 else f"{count} x ") + "|".join(pools)
    cpu = ep.get("cpu") or []
    if cpu:
        return "CPU " + "|".join(f"{c.get('id', '?')} x{c.get('vcpuCount', '?')}" for c in cpu)
    return "?"


def usd_per_hour(ep: dict[str, Any]) -> float | None:
    """Flex price of one worker per hour: the dearest of its pools (RunPod may place it on any),
    times its GPU count. None for CPU endpoints and pools without a known price."""
    gpu = ep.get("gpu") or {}
    pools = gpu.get("pools") or []
    prices = [rp.GPU_POOLS[p].flex_usd_per_s if p in rp.GPU_POOLS else None for p in pools]
    if not prices or any(p is None for p in prices):
        return None
    return max(prices) * int(gpu.get("count") or 1) * 3600


def _image(ep: dict[str, Any]) -> str:
    if ep.get("image"):
        return str(ep["image"])
    return f"template {ep['templateId']}" if ep.get("templateId") else "?"


class _Health:
    """The job API's ``/health`` per endpoint, one ``QueueClient`` per base URL. A base that
    cannot be reached is not asked again for the next endpoints (its retries take seconds)."""

    def __init__(self, api_key: str):
        self._key = api_key
        self._clients: dict[str, Any] = {}
        self._broken: dict[str, str] = {}

    def base_of(self, ep: dict[str, Any]) -> str:
        from ..client.control.plane import queue_url_setting

        url = str((ep.get("requestUrls") or {}).get("health") or "")
        tail = f"/v2/{ep['id']}/health"
        if url.endswith(tail):
            return url[: -len(tail)]
        return queue_url_setting()[0]

    def of(self, ep: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        from ..client.queue import QueueClient

        base = self.base_of(ep)
        if base in self._broken:
            return None, self._broken[base]
        client = self._clients.get(base)
        if client is None:
            client = self._clients[base] = QueueClient(base, self._key,
                                                       where=f"RunPod's job API at {base}")
        try:
            return client.health(ep["id"]), None
        except RpremoteError as e:
            import httpx

            if isinstance(e.__cause__, (httpx.ConnectError, httpx.ConnectTimeout)):
                self._broken[base] = str(e)
            return None, str(e)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def listing(cp: Any, api_key: str) -> dict[str, Any]:
    """``{"endpoints": [row, ...], "notOurs": n, "problems": [...]}`` for the account that
    ``cp`` (a ``ControlPlane``) reaches. Errors of the list itself propagate."""
    ours, not_ours = split_ours(cp.endpoints.list())
    health = _Health(api_key)
    problems: list[str] = []
    rows = []
    try:
        for ep in sorted(ours, key=lambda e: (str(e.get("name")), str(e.get("id")))):
            try:
                summary = (cp.endpoints.workers(ep["id"]) or {}).get("summary") or {}
                workers = {s: int(summary.get(s, 0)) for s in WORKER_STATES}
            except RpremoteError as e:
                workers = None
                problems.append(f"{ep['id']}: workers not read: {e}")
            body, problem = health.of(ep)
            jobs = (body or {}).get("jobs") or {}
            queue = None if body is None else {"inQueue": int(jobs.get("inQueue", 0)),
                                               "inProgress": int(jobs.get("inProgress", 0))}
            if problem:
                problems.append(f"{ep['id']}: queue not read: {problem}")
            spec = ep.get("workers") or {}
            rows.append({
                "id": ep["id"], "name": ep.get("name"), "compute": compute(ep),
                "gpu": ep.get("gpu"), "cpu": ep.get("cpu"),
                "workersMin": spec.get("min"), "workersMax": spec.get("max"),
                "idleTimeout": spec.get("idleTimeout"), "workers": workers, "queue": queue,
                "image": _image(ep), "usdPerHourPerWorker": usd_per_hour(ep),
                "createdAt": ep.get("createdAt"),
            })
    finally:
        health.close()
    return {"endpoints": rows, "notOurs": not_ours, "problems": problems}


def table_row(row: dict[str, Any]) -> tuple[str, ...]:
    def n(value: Any) -> str:
        return "?" if value is None else str(value)

    workers = row["workers"] or {}
    queue = row["queue"] or {}
    price = row["usdPerHourPerWorker"]
    return (row["id"], n(row["name"]), row["compute"],
            f"{n(row['workersMin'])}-{n(row['workersMax'])}",
            *(n(workers.get(s)) for s in WORKER_STATES),
            n(queue.get("inQueue")), n(queue.get("inProgress")),
            "?" if row["idleTimeout"] is None else f"{row['idleTimeout']} s",
            row["image"], "-" if price is None else f"${price:.2f}")


def not_ours_line(count: int) -> str:
    if not count:
        return "no other endpoints in the account"
    return (f"{count} other endpoint{'s' if count != 1 else ''} in the account "
            f"{'were' if count != 1 else 'was'} not made by rpremote (not shown, never touched)")


def format_table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    table = [head] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]


def print_listing(as_json: bool = False) -> int:
    """``rpremote endpoints`` on target runpod."""
    import json

    from .. import config
    from ..client.control import ControlPlane

    with ControlPlane.from_settings() as cp:
        key, _ = config.runpod_api_key()
        result = listing(cp, key or "")
        where = cp.base_url
    if as_json:
        print(json.dumps(result, indent=1))
        return 0
    rows = result["endpoints"]
    if not rows:
        print(f"no endpoints made by rpremote in the RunPod account ({where})")
    else:
        print(f"{len(rows)} endpoint{'s' if len(rows) != 1 else ''} made by rpremote "
              f"({where}):")
        for line in format_table([table_row(r) for r in rows], HEAD):
            print(line)
    print(not_ours_line(result["notOurs"]))
    for problem in result["problems"]:
        print(f"note: {problem}")
    return 0
