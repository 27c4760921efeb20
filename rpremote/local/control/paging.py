"""Cursor pagination of list routes (runpod-rest-v2.md §1.6, the newest [DTS] form).

``?limit=1..1000`` (default 1000) and ``?cursor=`` (opaque: pass ``pagination.nextCursor``
verbatim; a malformed one, or one from another list, is a 422). Newest first. The response
gains ``"pagination": {"nextCursor": str | null, "hasNextPage": bool}``.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request

from ... import platform as rp
from ..store import Store
from .problems import invalid


def _cursor(operation: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{operation}:{seq}".encode()).decode().rstrip("=")


def _after(operation: str, cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        op, seq = text.rsplit(":", 1)
        if op != operation:
            raise ValueError
        return int(seq)
    except ValueError:
        raise invalid([f"query.cursor: '{cursor}' is not a cursor of this list; pass "
                       "pagination.nextCursor of the previous page verbatim"]) from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return rp.REST_PAGE_LIMIT_MAX
    try:
        limit = int(raw)
    except ValueError:
        raise invalid([f"query.limit: got '{raw}', want integer"]) from None
    if not 1 <= limit <= rp.REST_PAGE_LIMIT_MAX:
        raise invalid([f"query.limit: must be 1-{rp.REST_PAGE_LIMIT_MAX}, got {limit}"])
    return limit


def page(store: Store, kind: str, operation: str,
         request: Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of stored objects of ``kind``, and its ``pagination`` block."""
    limit = _limit(request)
    cursor = request.query_params.get("cursor")
    before = _after(operation, cursor) if cursor else None
    rows = store.resources(kind, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return [body for _, body in rows], {
        "nextCursor": _cursor(operation, rows[-1][0]) if more else None,
        "hasNextPage": more,
    }
