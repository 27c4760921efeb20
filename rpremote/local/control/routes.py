"""The control plane's routes, and the gate every request passes first.

Order of the gate (runpod-rest-v2.md §1.2-§1.7): a body over 102400 bytes is a 413 before
anything else; then the bearer key (401, without rate-limit headers); then the rate limit (429);
then the method (405 with ``Allow``); then the JSON body (400 if it is not JSON: GAP, the
status is not documented). Every refusal is ``application/problem+json``; every answer carries
an ``x-request-id`` (OBSERVED, §1.8).

These routes come before the job API's ``/v2/{endpoint_id}/...`` in the app: the control
plane's names (``platform.REST_V2_NAMES``) are never endpoint ids, and its generated ids are
14 characters, so the two never meet; every other path under a control-plane name is the
control plane's 404, never the job API's.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ... import platform as rp
from ..engine import Engine
from ..images import ImageMap
from ..pod_runner import PodRunner
from . import catalog, logs, pods, serverless, templates, volumes
from .pod_proxy import proxy_routes
from .plane import ControlPlane
from .problems import Problem
from .ratelimit import RateLimiter

log = logging.getLogger("rpremote.emulator")
Handler = Callable[[ControlPlane, Request, Any], Awaitable[Response]]
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_WITH_BODY = ("POST", "PUT", "PATCH")


async def _read_body(request: Request) -> bytes:
    too_big = Problem(413, f"the request body is larger than {rp.REST_BODY_MAX_BYTES} bytes")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > rp.REST_BODY_MAX_BYTES:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > rp.REST_BODY_MAX_BYTES:
            raise too_big
    return bytes(body)


def _check_key(request: Request, api_key: str, cp: ControlPlane) -> str | None:
    """None for the account's key; the Pod's id for a pod-scoped key (a Pod's own
    ``RUNPOD_API_KEY``, rest-v2 §4.9); else the 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "missing bearer token")
    if hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return None
    pod = cp.pods.owner_of(token.strip()) if cp.pods else None
    if pod is None:
        raise Problem(401, "invalid bearer token")
    return pod


def control_routes(engine: Engine, api_key: str, images: ImageMap,
                   pod_runner: PodRunner | None = None) -> list[Route]:
    cp = ControlPlane(engine, images)
    cp.pods = pods.PodService(pod_runner or PodRunner(engine.state_dir))
    serverless.reconcile(cp)
    pods.reconcile(cp)
    limiter = RateLimiter()

    def resource(path: str, pod_scoped: bool = False, **handlers: Handler) -> Route:
        """``pod_scoped``: a Pod's own key may call it (the handler checks it is its Pod)."""
        allow = ", ".join(handlers)

        async def endpoint(request: Request) -> Response:
            engine.last_client_request = time.monotonic()
            limits: dict[str, str] = {}
            try:
                raw = await _read_body(request) if request.method in _WITH_BODY else b""
                request.state.pod_scope = _check_key(request, api_key, cp)
                limits = limiter.take()
                if request.state.pod_scope is not None and not pod_scoped:
                    raise Problem(403, "access denied: a pod-scoped API key (RUNPOD_API_KEY "
                                       "inside a Pod) acts on its own Pod only")
                handler = handlers.get("GET" if request.method == "HEAD" else request.method)
                if handler is None:
                    raise Problem(405, f"{request.method} is not allowed on {request.url.path}; "
                                       f"allowed: {allow}", headers={"Allow": allow})
                body = None
                if request.method in _WITH_BODY:
                    try:
                        body = json.loads(raw)
                    except ValueError as e:
                        raise Problem(400, f"the request body is not valid JSON ({e})") from None
                response = await handler(cp, request, body)
            except Problem as problem:
                if problem.status == 429:
                    limits = {}  # the problem carries its own
                response = problem.response()
            except Exception:  # a bug here: still a problem, and the emulator goes on
                log.exception("control plane: %s %s failed", request.method, request.url.path)
                response = Problem(500, "the emulator failed on this request; its log says "
                                        "why").response()
            response.headers.update(limits)
            response.headers["x-request-id"] = str(uuid.uuid4())
            return response

        return Route(path, endpoint, methods=_METHODS)

    def nowhere(path: str) -> Route:
        async def endpoint(request: Request) -> Response:
            response = Problem(404, f"no route {request.method} {request.url.path} on this "
                                    "emulator's control plane").response()
            response.headers["x-request-id"] = str(uuid.uuid4())
            return response
        return Route(path, endpoint, methods=_METHODS)

    s, t, v, c, p = serverless, templates, volumes, catalog, pods
    return [
        resource("/v2/pods", GET=p.list_pods, POST=p.create_pod),
        resource("/v2/pods/{id}", pod_scoped=True, GET=p.get_pod, PATCH=p.update_pod,
                 DELETE=p.delete_pod),
        resource("/v2/pods/{id}/action", pod_scoped=True, POST=p.pod_action),
        resource("/v2/pods/{id}/logs", pod_scoped=True, GET=p.pod_logs),
        resource("/v2/serverless", GET=s.list_endpoints, POST=s.create_endpoint),
        resource("/v2/serverless/{id}", GET=s.get_endpoint, PATCH=s.update_endpoint,
                 DELETE=s.delete_endpoint),
        resource("/v2/serverless/{id}/workers", GET=s.list_workers),
        resource("/v2/serverless/{id}/workers/{worker}/logs", GET=logs.worker_logs),
        resource("/v2/templates", GET=t.list_templates, POST=t.create_template),
        resource("/v2/templates/{id}", GET=t.get_template, PATCH=t.update_template,
                 DELETE=t.delete_template),
        resource("/v2/network-volumes", GET=v.list_volumes, POST=v.create_volume),
        resource("/v2/network-volumes/{id}", GET=v.get_volume, PATCH=v.update_volume,
                 DELETE=v.delete_volume),
        resource("/v2/catalog/gpus", GET=c.list_gpus),
        resource("/v2/catalog/gpus/{id}", GET=c.get_gpu),
        resource("/v2/catalog/cpus", GET=c.list_cpus),
        resource("/v2/catalog/cpus/{id}", GET=c.get_cpu),
        resource("/v2/catalog/datacenters", GET=c.list_data_centers),
        resource("/v2/catalog/datacenters/{id}", GET=c.get_data_center),
        # Everything else under a control-plane name (registries, releases, ...: not
        # emulated) and any one-segment /v2 path is the control plane's 404 (problem+json).
        *(nowhere(f"/v2/{name}/{{rest:path}}") for name in sorted(rp.REST_V2_NAMES)),
        nowhere("/v2/{name}"),
        *proxy_routes(cp),  # public, as RunPod's proxy (no key)
    ]
