"""``/v2/network-volumes``: persistent storage in one data center (runpod-rest-v2.md §5.1).

Create ``{name, size (GB, 10-4096), dataCenter, type?}``; the data center must have network
volumes (else 400 listing those that do, OBSERVED); ``type`` defaults to its first tier and
never changes; PATCH ``{name?, size?}`` (at least one); a volume only grows (400).
Not paginated. A volume's files are a private directory, ``<state>/volumes/<id>/``: every
worker of an endpoint that mounts the volume gets it as ``RPREMOTE_VOLUME_MOUNT`` (the stand-in
for ``/runpod-volume``); deleting the volume removes it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import platform as rp
from .plane import ENDPOINT, POD, VOLUME, ControlPlane, json_response
from .problems import Problem, not_found
from .schema import Int, Obj, Str, check

VOLUME_TYPES = ("STANDARD", "HIGH_PERFORMANCE")
SIZE = Int(minimum=rp.VOLUME_SIZE_MIN_GB, maximum=rp.VOLUME_SIZE_MAX_GB)
CREATE = Obj({"name": Str(min_len=1), "size": SIZE, "dataCenter": Str(min_len=1),
              "type": Str(enum=VOLUME_TYPES)}, required=("name", "size", "dataCenter"))
UPDATE = Obj({"name": Str(min_len=1), "size": SIZE}, min_props=1)


def volume_dir(state_dir: str | Path, volume_id: str) -> Path:
    """The directory standing for a volume's files (``/runpod-volume`` in a worker): made
    when a worker mounts it, removed with the volume."""
    return Path(state_dir) / "volumes" / volume_id


def volume_object(cp: ControlPlane, volume_id: str) -> dict[str, Any] | None:
    record = cp.store.resource(VOLUME, volume_id)
    return record["object"] if record else None


def _record(cp: ControlPlane, volume_id: str) -> dict[str, Any]:
    record = cp.store.resource(VOLUME, volume_id)
    if record is None:
        raise not_found("network volume", volume_id)
    return record


def _data_center(name: str, volume_type: str | None) -> tuple[str, str]:
    """``(data center, type)`` for a new volume; the 400 of a data center without them."""
    with_volumes = [dc for dc in rp.DATA_CENTERS.values() if dc.volume_types]
    dc = rp.DATA_CENTERS.get(name)
    if dc is None or not dc.volume_types:
        raise Problem(400, f"data center {name!r} does not support network volumes; use one "
                           f"of: {', '.join(d.id for d in with_volumes)}")
    if volume_type is not None and volume_type not in dc.volume_types:
        having = [d.id for d in with_volumes if volume_type in d.volume_types]
        raise Problem(400, f"data center {name} has no {volume_type} network volumes (it has "
                           f"{', '.join(dc.volume_types)}); data centers with {volume_type}: "
                           f"{', '.join(having) or 'none known to this emulator'}")
    return dc.id, volume_type or dc.volume_types[0]


async def list_volumes(cp: ControlPlane, request: Request, body: Any) -> Response:
    records = [r for _, r in cp.store.resources(VOLUME)]
    return json_response({"networkVolumes": [r["object"] for r in records]})


async def create_volume(cp: ControlPlane, request: Request, body: Any) -> Response:
    body = check(CREATE, body)
    dc, volume_type = _data_center(body["dataCenter"], body.get("type"))
    volume_id = cp.new_id(10)
    obj = {"id": volume_id, "name": body["name"], "size": body["size"], "dataCenter": dc,
           "type": volume_type}
    cp.store.put_resource(VOLUME, volume_id, {"object": obj})
    return json_response(obj, 201)


async def get_volume(cp: ControlPlane, request: Request, body: Any) -> Response:
    return json_response(_record(cp, request.path_params["id"])["object"])


async def update_volume(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    body = check(UPDATE, body)
    obj = record["object"]
    if "size" in body and body["size"] < obj["size"]:
        raise Problem(400, f"size decrease: network volume {obj['id']} is {obj['size']} GB and "
                           f"can only grow (asked for {body['size']} GB)")
    obj.update(body)
    cp.store.put_resource(VOLUME, obj["id"], record)
    return json_response(obj)


async def delete_volume(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    volume_id = record["object"]["id"]
    # GAP (§9.2): deleting a volume an endpoint mounts is not documented; we refuse it as a
    # template or registry in use is refused (400), rather than leave the endpoint dangling.
    users = [r["object"]["id"] for _, r in cp.store.resources(ENDPOINT)
             if volume_id in r["object"]["networkVolumes"]]
    if users:
        raise Problem(400, f"network volume {volume_id} is in use by serverless endpoint(s) "
                           f"{', '.join(users)}; detach it first (PATCH networkVolumes)")
    pods = [r["object"]["id"] for _, r in cp.store.resources(POD)
            if any(m["volumeId"] == volume_id
                   for m in r["object"]["mounts"].get("network") or [])]
    if pods:  # a Pod's network mount cannot be detached (§4.5): only terminate frees it
        raise Problem(400, f"network volume {volume_id} is mounted by Pod(s) {', '.join(pods)}; "
                           "terminate them first")
    cp.store.delete_resource(VOLUME, volume_id)
    await asyncio.to_thread(shutil.rmtree, volume_dir(cp.engine.state_dir, volume_id), True)
    return Response(status_code=204)
