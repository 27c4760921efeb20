"""The sidebar's REST API: authenticated Jupyter API handlers under ``<base_url>/rpremote/api``.

Every route answers JSON; failures are ``{"error": "<words>"}`` with their HTTP status (404 for
an unknown job, endpoint or Pod). The work (SQLite, HTTP to the emulator or RunPod) runs in a
thread (``data.py``), never on Jupyter's event loop. Routes (times are epoch seconds):

- ``GET  jobs?status=&source=&limit=``      ``{"jobs": [...], "now", "sources": [...]}``; each
  job also has ``source_path``: its notebook's path under the server's root, or null
- ``GET  jobs/{id}``                         a job, with ``traceback`` and ``logs_size``
- ``GET  jobs/{id}/logs?offset=N``           ``{"text", "offset", "done"}`` (+ ``note``)
- ``POST jobs/{id}/cancel``                  ``{"id", "status"}``
- ``GET  endpoints``                         ``{"local": {...}, "runpod": {...}}``
- ``DELETE endpoints/{id}?target=local|runpod``  ``{"deleted": id}``
- ``GET  pods``                              ``{"pods": [...], "error"}``
- ``POST pods/{id}/stop`` | ``pods/{id}/terminate``  ``{"id", "status"}``
- ``GET  cost``                              ``{"today_usd", "month_usd", "burn_usd_per_h"}``
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import data

PREFIX = "rpremote/api"


class _Base(APIHandler):
    """Runs a ``data`` function in a thread and answers its JSON, or ``{"error": ...}``."""

    async def answer(self, fn: Callable[..., Any], *args: Any, status: int = 200) -> None:
        try:
            body = await asyncio.to_thread(fn, *args)
        except data.Problem as p:
            self.fail(p.status, p.message)
            return
        except Exception as e:  # a bug, or something unforeseen: said in words, logged
            self.log.exception("rpremote: %s failed", self.request.path)
            self.fail(500, f"{type(e).__name__}: {' '.join(str(e).split())}")
            return
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's errors (403 without a token, 405, ...) as ``{"error": ...}`` too."""
        reason = self._reason or "error"
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            reason = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": reason}))

    @property
    def root_dir(self) -> str | None:
        return self.settings.get("server_root_dir")

    def int_argument(self, name: str, default: int) -> int:
        raw = self.get_argument(name, None)
        if raw in (None, ""):
            return default
        try:
            return int(raw)
        except ValueError:
            raise data.Problem(400, f"{name} must be a whole number (got {raw!r})") from None


class JobsHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            limit = self.int_argument("limit", 100)
        except data.Problem as p:
            return self.fail(p.status, p.message)
        await self.answer(data.jobs, self.get_argument("status", None),
                          self.get_argument("source", None), limit, self.root_dir)


class JobHandler(_Base):
    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        await self.answer(data.job, job_id, self.root_dir)


class JobLogsHandler(_Base):
    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        try:
            offset = self.int_argument("offset", 0)
        except data.Problem as p:
            return self.fail(p.status, p.message)
        await self.answer(data.logs, job_id, offset)


class JobCancelHandler(_Base):
    @tornado.web.authenticated
    async def post(self, job_id: str) -> None:
        await self.answer(data.cancel, job_id)


class EndpointsHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(data.endpoints)


class EndpointHandler(_Base):
    @tornado.web.authenticated
    async def delete(self, endpoint_id: str) -> None:
        await self.answer(data.delete_endpoint, endpoint_id,
                          self.get_argument("target", "local"))


class PodsHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(data.pods)


class PodActionHandler(_Base):
    @tornado.web.authenticated
    async def post(self, pod_id: str, action: str) -> None:
        await self.answer(data.pod_action, pod_id, action)


class CostHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(data.cost)


class NotFoundHandler(_Base):
    """Any other path under the prefix: a JSON 404, not Jupyter's HTML page."""

    @tornado.web.authenticated
    def get(self, *_: Any) -> None:
        self.fail(404, f"no such rpremote API route: {self.request.path}")

    post = delete = get


def setup_handlers(web_app: Any) -> None:
    base = url_path_join(web_app.settings.get("base_url", "/"), PREFIX)
    ident = r"([^/]+)"
    web_app.add_handlers(".*$", [
        (url_path_join(base, "jobs"), JobsHandler),
        (url_path_join(base, "jobs", ident), JobHandler),
        (url_path_join(base, "jobs", ident, "logs"), JobLogsHandler),
        (url_path_join(base, "jobs", ident, "cancel"), JobCancelHandler),
        (url_path_join(base, "endpoints"), EndpointsHandler),
        (url_path_join(base, "endpoints", ident), EndpointHandler),
        (url_path_join(base, "pods"), PodsHandler),
        (url_path_join(base, "pods", ident, r"(stop|terminate)"), PodActionHandler),
        (url_path_join(base, "cost"), CostHandler),
        (url_path_join(base, r"(.*)"), NotFoundHandler),
    ])
