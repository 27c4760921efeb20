"""Errors of the control plane as RFC 9457 problems (runpod-rest-v2.md §1.4, §1.5).

Every refusal is a ``Problem`` raised anywhere below a route and turned into an
``application/problem+json`` response in one place (``routes.py``): ``title`` is the status's
reason phrase, ``detail`` says what to do, ``errors`` lists validator messages (422 only).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """A request the platform refuses; ``status`` and ``detail`` as the API would answer."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"title": HTTPStatus(self.status).phrase, "status": self.status,
                                "detail": self.detail}
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(self) -> Response:
        return Response(json.dumps(self.body()), status_code=self.status,
                        media_type=PROBLEM_JSON, headers=self.headers)


def invalid(errors: list[str]) -> Problem:
    """Schema validation failed (§1.3: closed schemas, 422 naming each problem)."""
    return Problem(422, "Request validation failed.", errors)


def not_found(what: str, object_id: str) -> Problem:
    return Problem(404, f"{what} {object_id!r} not found")
