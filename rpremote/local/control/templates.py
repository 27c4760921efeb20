"""``/v2/templates``: reusable container settings (runpod-rest-v2.md §3.1, §3.2).

A serverless template seeds endpoints (``templateId``), a pod template pods; the copy is made
once (§3.2). An endpoint also gets a *bound* template of its own, made and deleted with it
(§2.2, [RPY-APPS]): that one is "in use" and cannot be deleted alone (400, §3.1).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import platform as rp
from .container import CONTAINER_PROPS, apply_container
from .paging import page
from .plane import TEMPLATE, ControlPlane, json_response
from .problems import Problem, not_found
from .schema import Arr, Bool, Int, Obj, Str, check

CUDA_VERSION = Str(pattern=r"^\d+\.\d+$")
CATEGORIES = ("CPU", "NVIDIA", "AMD")

_PROPS = {
    "name": Str(min_len=1),
    **CONTAINER_PROPS,
    "category": Str(enum=CATEGORIES),
    "serverless": Bool(),
    "public": Bool(),
    "startSsh": Bool(),
    "startJupyter": Bool(),
    # Only a persistent mount: a network mount in a template is a 422 (§3.2).
    "mounts": Obj({"persistent": Obj({"size": Int(minimum=10), "path": Str(min_len=1)},
                                     required=("size", "path"))}),
    "allowedCudaVersions": Arr(CUDA_VERSION, unique=True),
}
CREATE = Obj(_PROPS, required=("name", "image"))
UPDATE = Obj(_PROPS)



def _new(template_id: str, name: str, image: str | None) -> dict[str, Any]:
    """A template with §3.2's defaults (startSsh/startJupyter are true on templates)."""
    return {"id": template_id, "name": name, "image": image, "args": "", "entrypoint": [],
            "cmd": [], "disk": rp.REST_DISK_DEFAULT_GB, "mounts": {}, "ports": [], "env": {},
            "registry": None, "serverless": False, "public": False, "category": "NVIDIA",
            "startSsh": True, "startJupyter": True, "allowedCudaVersions": []}


def _record(cp: ControlPlane, template_id: str) -> dict[str, Any]:
    record = cp.store.resource(TEMPLATE, template_id)
    if record is None:
        raise not_found("template", template_id)
    return record


def template_object(cp: ControlPlane, template_id: str) -> dict[str, Any] | None:
    """A template as the API shows it, or None (for ``templateId`` on endpoints)."""
    record = cp.store.resource(TEMPLATE, template_id)
    return record["object"] if record else None


def _check_name_free(cp: ControlPlane, name: str, template_id: str | None = None) -> None:
    # GAP (§9.2: are v2 template names unique?): v1 says they must be; we keep that, 409.
    for _, record in cp.store.resources(TEMPLATE):
        if record["object"]["name"] == name and record["object"]["id"] != template_id:
            raise Problem(409, f"a template named {name!r} already exists "
                               f"({record['object']['id']}); template names are unique")


def _build(obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    for key in ("name", "category", "serverless", "public", "startSsh", "startJupyter",
                "mounts", "allowedCudaVersions"):
        if key in body:
            obj[key] = body[key]
    apply_container(obj, body)
    return obj


def create_bound(cp: ControlPlane, endpoint: dict[str, Any]) -> str:
    """The template an endpoint gets of its own (its name is ours: §9.2 gap)."""
    template_id = cp.new_id(10)
    obj = {**_new(template_id, f"{endpoint['name']}__{endpoint['id']}", endpoint["image"]),
           "serverless": True, "startSsh": False, "startJupyter": False}
    sync_bound(cp, template_id, endpoint, obj)
    return template_id


def sync_bound(cp: ControlPlane, template_id: str, endpoint: dict[str, Any],
               obj: dict[str, Any] | None = None) -> None:
    """Keep an endpoint's bound template's container fields the endpoint's."""
    record = cp.store.resource(TEMPLATE, template_id)
    obj = obj or (record["object"] if record else None)
    if obj is None:
        return
    for key in ("image", "args", "entrypoint", "cmd", "disk", "ports", "env", "registry"):
        obj[key] = endpoint[key]
    cp.store.put_resource(TEMPLATE, template_id, {"object": obj, "endpoint": endpoint["id"]})


def delete_bound(cp: ControlPlane, template_id: str) -> None:
    cp.store.delete_resource(TEMPLATE, template_id)


# -- routes ---------------------------------------------------------------------------------------

async def list_templates(cp: ControlPlane, request: Request, body: Any) -> Response:
    records, pagination = page(cp.store, TEMPLATE, "templates", request)
    return json_response({"templates": [r["object"] for r in records], "pagination": pagination})


async def create_template(cp: ControlPlane, request: Request, body: Any) -> Response:
    body = check(CREATE, body)
    _check_name_free(cp, body["name"])
    template_id = cp.new_id(10)
    obj = _build(_new(template_id, body["name"], body["image"]), body)
    cp.store.put_resource(TEMPLATE, template_id, {"object": obj, "endpoint": None})
    return json_response(obj, 201)


async def get_template(cp: ControlPlane, request: Request, body: Any) -> Response:
    return json_response(_record(cp, request.path_params["id"])["object"])


async def update_template(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    body = check(UPDATE, body)
    if "name" in body:
        _check_name_free(cp, body["name"], record["object"]["id"])
    record["object"] = _build(record["object"], body)
    cp.store.put_resource(TEMPLATE, record["object"]["id"], record)
    return json_response(record["object"])


async def delete_template(cp: ControlPlane, request: Request, body: Any) -> Response:
    record = _record(cp, request.path_params["id"])
    if record.get("endpoint"):
        raise Problem(400, f"template {record['object']['id']} is in use by a pod or serverless "
                           f"endpoint ({record['endpoint']}); delete the endpoint and its "
                           "template goes with it")
    cp.store.delete_resource(TEMPLATE, record["object"]["id"])
    return Response(status_code=204)
