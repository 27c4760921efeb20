"""HTTP face of the emulator: RunPod's queue API, the worker protocol, and a small admin API.

Routes map one-to-one onto ``Engine`` methods; this module only parses requests, checks keys
and shapes responses. Paths, methods and bodies follow ``docs/runpod-contract.md`` §1 and
``docs/runpod-worker-protocol.md`` §1 and §6. The REST v2 control plane (``control/``) is
mounted first: its names under /v2 are never endpoint ids.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from .. import platform as rp
from .config import EndpointSpec
from .control import control_routes
from .api_error import ApiError
from .engine import Engine
from .images import ImageMap
from .pod_runner import PodRunner, PodSettings

JSON = "application/json"


def create_app(engine: Engine, api_key: str, on_shutdown: Callable[[], None] | None = None,
               images: ImageMap | None = None, pods: PodSettings | None = None) -> Starlette:
    pod_runner = PodRunner(engine.state_dir, pods)

    def authorized(request: Request, *keys: str) -> bool:
        given = request.headers.get("authorization", "")
        if given.lower().startswith("bearer "):
            given = given[7:]
        given = given.strip()
        return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)

    def client_route(handler: Callable[..., Awaitable[Response]]):
        async def endpoint(request: Request) -> Response:
            engine.last_client_request = time.monotonic()
            if not authorized(request, api_key):
                return _error(401, "401 Unauthorized: send 'Authorization: Bearer <key>' with the "
                                   "emulator's API key (see `rpremote serve` output for where it is)")
            return await _guard(handler, request)
        return endpoint

    def worker_route(handler: Callable[..., Awaitable[Response]]):
        async def endpoint(request: Request) -> Response:
            if not authorized(request, engine.worker_token, api_key):
                return _error(401, "401 Unauthorized: workers send RUNPOD_AI_API_KEY as Authorization")
            return await _guard(handler, request)
        return endpoint

    # -- client API ---------------------------------------------------------------------------

    async def run(request: Request) -> Response:
        body = await _read_json(request, rp.RUN_MAX_BYTES, "/run")
        job = engine.submit(request.path_params["ep"], body, sync=False)
        return JSONResponse({"id": job.id, "status": job.status})

    async def runsync(request: Request) -> Response:
        wait_ms = rp.RUNSYNC_WAIT_DEFAULT_MS
        if "wait" in request.query_params:
            try:
                wait_ms = int(request.query_params["wait"])
            except ValueError:
                raise ApiError(400, "?wait= is milliseconds, an integer (1000-300000)") from None
        wait_ms = max(rp.RUNSYNC_WAIT_MIN_MS, min(rp.RUNSYNC_WAIT_MAX_MS, wait_ms))
        body = await _read_json(request, rp.RUNSYNC_MAX_BYTES, "/runsync")
        ep = request.path_params["ep"]
        job = engine.submit(ep, body, sync=True)
        job = await engine.wait_terminal(ep, job.id, wait_ms / 1000)
        return JSONResponse(job.status_body())

    async def status(request: Request) -> Response:
        job = engine.job(request.path_params["ep"], request.path_params["job"])
        return JSONResponse(job.status_body())

    async def stream(request: Request) -> Response:
        text = await engine.stream(request.path_params["ep"], request.path_params["job"])
        return Response(text, media_type=JSON)

    async def cancel(request: Request) -> Response:
        job = engine.cancel(request.path_params["ep"], request.path_params["job"])
        return JSONResponse({"id": job.id, "status": job.status})

    async def retry(request: Request) -> Response:
        job = engine.retry(request.path_params["ep"], request.path_params["job"])
        return JSONResponse({"id": job.id, "status": job.status})

    async def purge(request: Request) -> Response:
        removed = engine.purge(request.path_params["ep"])
        return JSONResponse({"removed": removed, "status": "completed"})

    async def health(request: Request) -> Response:
        return JSONResponse(engine.health(request.path_params["ep"]))

    # -- worker API ---------------------------------------------------------------------------

    async def take(request: Request) -> Response:
        jobs = await engine.take(request.path_params["ep"], request.path_params["worker"], 1)
        return Response(jobs[0], media_type=JSON) if jobs else Response(status_code=204)

    async def take_batch(request: Request) -> Response:
        try:
            size = max(1, int(request.query_params.get("batch_size", "1")))
        except ValueError:
            raise ApiError(400, "batch_size must be an integer") from None
        jobs = await engine.take(request.path_params["ep"], request.path_params["worker"], size)
        if not jobs:
            return Response(status_code=204)
        return Response("[" + ",".join(jobs) + "]", media_type=JSON)

    async def job_stop(request: Request) -> Response:
        ids = await engine.stop_poll(request.path_params["ep"], request.path_params["worker"])
        return JSONResponse({"jobsToStop": ids}) if ids else Response(status_code=204)

    async def job_done(request: Request) -> Response:
        p = request.path_params
        engine.job_done(p["ep"], p["worker"], p["job"], await request.body())
        return JSONResponse({})

    async def job_stream(request: Request) -> Response:
        p = request.path_params
        engine.job_stream(p["ep"], p["worker"], p["job"], await request.body())
        return JSONResponse({})

    async def ping(request: Request) -> Response:
        p = request.path_params
        engine.ping(p["ep"], p["worker"], dict(request.query_params))
        return JSONResponse({})

    # -- offload store (not RunPod's: big payloads, see local/blobs.py) -------------------------

    def blob_route(handler: Callable[..., Awaitable[Response]]):
        async def endpoint(request: Request) -> Response:
            if not authorized(request, api_key, engine.worker_token):
                return _error(401, "401 Unauthorized: the offload store takes the emulator's API "
                                   "key or a worker's RUNPOD_AI_API_KEY")
            return await _guard(handler, request)
        return endpoint

    async def blob_put(request: Request) -> Response:
        return await engine.blobs.put(request, request.path_params["key"])

    async def blob_get(request: Request) -> Response:
        return engine.blobs.get(request.path_params["key"], head=request.method == "HEAD")

    async def blob_stats(request: Request) -> Response:
        return JSONResponse(engine.blobs.stats())

    # -- admin API (not RunPod's: local endpoint management) ----------------------------------

    async def info(request: Request) -> Response:
        return JSONResponse({
            "rpremote": __version__, "pid": os.getpid(), "state": str(engine.state_dir),
            "endpoints": sorted(engine.endpoints),
            "blobs": {"url": "/rpremote/v1/blobs", "dir": str(engine.blobs.root)},
        })

    async def list_endpoints(request: Request) -> Response:
        return JSONResponse([_shown(ep.spec) for ep in engine.endpoints.values()])

    async def put_endpoint(request: Request) -> Response:
        body = await _read_json(request, 1024 * 1024, "endpoint spec")
        if not isinstance(body, dict):
            raise ApiError(400, "endpoint spec must be a JSON object")
        if "ep" in request.path_params:
            body["id"] = request.path_params["ep"]
        try:
            spec = EndpointSpec.from_dict(body)
        except (TypeError, ValueError) as e:
            raise ApiError(400, f"bad endpoint spec: {e}") from None
        engine.put_endpoint(spec)
        return JSONResponse(_shown(spec))

    async def get_endpoint(request: Request) -> Response:
        ep = engine.endpoint(request.path_params["ep"])
        return JSONResponse({**_shown(ep.spec), "workers": engine.worker_list(ep.spec.id)})

    async def delete_endpoint(request: Request) -> Response:
        engine.delete_endpoint(request.path_params["ep"])
        return JSONResponse({"deleted": request.path_params["ep"]})

    v2 = "/v2/{ep}"
    routes = [
        *control_routes(engine, api_key, images or ImageMap(), pod_runner),
        Route(f"{v2}/run", client_route(run), methods=["POST"]),
        Route(f"{v2}/runsync", client_route(runsync), methods=["POST"]),
        Route(f"{v2}/status/{{job}}", client_route(status), methods=["GET", "POST"]),
        Route(f"{v2}/stream/{{job}}", client_route(stream), methods=["GET", "POST"]),
        Route(f"{v2}/cancel/{{job}}", client_route(cancel), methods=["POST"]),
        Route(f"{v2}/retry/{{job}}", client_route(retry), methods=["POST"]),
        Route(f"{v2}/purge-queue", client_route(purge), methods=["POST"]),
        Route(f"{v2}/health", client_route(health), methods=["GET"]),
        Route(f"{v2}/job-take/{{worker}}", worker_route(take), methods=["GET"]),
        Route(f"{v2}/job-take-batch/{{worker}}", worker_route(take_batch), methods=["GET"]),
        Route(f"{v2}/job-stop/{{worker}}", worker_route(job_stop), methods=["GET"]),
        Route(f"{v2}/job-done/{{worker}}/{{job}}", worker_route(job_done), methods=["POST"]),
        Route(f"{v2}/job-stream/{{worker}}/{{job}}", worker_route(job_stream), methods=["POST"]),
        Route(f"{v2}/ping/{{worker}}", worker_route(ping), methods=["GET"]),
        Route("/rpremote/v1/blobs", blob_route(blob_stats), methods=["GET"]),
        Route("/rpremote/v1/blobs/{key}", blob_route(blob_put), methods=["PUT"]),
        Route("/rpremote/v1/blobs/{key}", blob_route(blob_get), methods=["GET", "HEAD"]),
        Route("/rpremote/v1/info", client_route(info), methods=["GET"]),
        Route("/rpremote/v1/endpoints", client_route(list_endpoints), methods=["GET"]),
        Route("/rpremote/v1/endpoints", client_route(put_endpoint), methods=["POST"]),
        Route("/rpremote/v1/endpoints/{ep}", client_route(get_endpoint), methods=["GET"]),
        Route("/rpremote/v1/endpoints/{ep}", client_route(put_endpoint), methods=["PUT"]),
        Route("/rpremote/v1/endpoints/{ep}", client_route(delete_endpoint), methods=["DELETE"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await engine.start()
        await pod_runner.start_monitor()
        try:
            yield
        finally:
            await pod_runner.close()  # the Pods' processes (their Pods stay RUNNING)
            await engine.stop()
            if on_shutdown:
                on_shutdown()

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no route {request.method} {request.url.path}")

    async def bad_method(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: bad_method}
    )


async def _guard(handler: Callable[[Request], Awaitable[Response]], request: Request) -> Response:
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e.status, e.message)


_SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")


def _shown(spec: EndpointSpec) -> dict[str, Any]:
    """An endpoint spec as the admin API shows it: env values that look secret are masked."""
    data = spec.to_dict()
    data["env"] = {k: ("***" if any(w in k.upper() for w in _SECRET_WORDS) else v)
                   for k, v in data["env"].items()}
    return data


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message, "status": status}, status_code=status)


async def _read_json(request: Request, limit: int, what: str) -> Any:
    """Read at most ``limit`` bytes of JSON; larger bodies get the platform's 413."""
    too_big = ApiError(413, f"{what} request body is larger than the platform's "
                            f"{limit // (1024 * 1024)} MB limit; send large data by reference")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except ValueError as e:
        raise ApiError(400, f"the request body is not valid JSON ({e})") from None
