"""One control-plane request: its retries and the reading of its answer, with no I/O.

``exchange`` is a generator (``client/drive.py``): it yields ``("send", method, path,
options)`` and ``("sleep", s)`` and gets the ``httpx.Response`` (or the transport's exception)
back, so the blocking ``ControlPlane`` and a future async twin share every rule.

Retries follow the queue client's rules (``client/queue.py``: ``RETRY_DELAYS_S``,
``REFUSED_STATUSES``, ``MAYBE_TAKEN_STATUSES``, ``Retry-After`` read by ``_retry_after``):

- never reached the server (connect error, connect timeout) or turned away before it was
  processed (429 honouring ``Retry-After``, 503): sent again, whatever the method;
- may have been received (reset or timeout after sending, 500/502/504): sent again only when
  repeating is harmless: GET, PATCH (sets the same fields), DELETE (a 404 on the retry of a
  DELETE that may have gone through means it is gone: success);
- a create (POST) that may have been received is never repeated: ``CreateOutcomeUnknown``,
  and the caller lists and matches (``Resource.create_or_find``), since RunPod's creates are
  not idempotent (runpod-rest-v2.md §1.8).

Errors are RFC 9457 problems (§1.4) turned into ``errors.ControlPlaneError``s. The API key is
in no message: text from the server is scrubbed of it (``scrub``), and 401/403 name where the
key came from, never the key.
"""

from __future__ import annotations

from typing import Any, Callable

import httpx

from ...errors import (ApiKeyError, ControlPlaneError, ControlPlaneUnavailable,
                       CreateOutcomeUnknown, InvalidRequest, RateLimited, ResourceConflict,
                       ResourceNotFound)
from ..drive import Steps, sleep
from ..queue import MAYBE_TAKEN_STATUSES, REFUSED_STATUSES, RETRY_DELAYS_S, _retry_after

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PATCH", "DELETE", "PUT"})


def exchange(method: str, path: str, *, where: str, key_how: str,
             scrub: Callable[[str], str], delays: tuple[float, ...] = RETRY_DELAYS_S,
             **options: Any) -> Steps:
    """Send one request with the retries above; its decoded body (None for a 204)."""
    idempotent = method in IDEMPOTENT_METHODS
    maybe_done = False  # an earlier attempt may have been carried out
    for delay in (*delays, None):
        try:
            r = yield ("send", method, path, options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # never reached the server
            if delay is None:
                raise ControlPlaneUnavailable(
                    f"cannot reach {where} ({type(e).__name__}: {scrub(str(e))}); "
                    "nothing was changed" + ("" if not maybe_done else " by the last attempt"),
                    method=method, path=path) from None
            yield sleep(delay)
            continue
        except httpx.TransportError as e:  # sent, then broke off: it may have been received
            text = f"{method} {path} to {where} broke off ({type(e).__name__}: {scrub(str(e))})"
            if not idempotent:
                raise CreateOutcomeUnknown(
                    text + "; not sent again, since it may have been carried out: list and "
                    "match before creating again (create_or_find does)",
                    method=method, path=path) from None
            if delay is None:
                raise ControlPlaneUnavailable(text, method=method, path=path) from None
            maybe_done = True
            yield sleep(delay)
            continue
        status = r.status_code
        if delay is not None and (status in REFUSED_STATUSES
                                  or (idempotent and status in MAYBE_TAKEN_STATUSES)):
            maybe_done = maybe_done or status in MAYBE_TAKEN_STATUSES
            yield sleep(_retry_after(r, delay))
            continue
        if status == 404 and method == "DELETE" and maybe_done:
            return None  # an earlier attempt deleted it
        if not idempotent and status in MAYBE_TAKEN_STATUSES:
            raise _error(r, method, path, where, key_how, scrub, cls=CreateOutcomeUnknown,
                         tail="; not sent again, since it may have been carried out: list and "
                              "match before creating again (create_or_find does)")
        if status >= 400:
            raise _error(r, method, path, where, key_how, scrub)
        if status == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise ControlPlaneError(f"{method} {path}: {where} answered HTTP {status} with a "
                                    "body that is not JSON", status=status, method=method,
                                    path=path) from None
    raise AssertionError("unreachable")


def problem_of(r: httpx.Response, scrub: Callable[[str], str]) -> tuple[str, str, tuple[str, ...]]:
    """``(title, detail, errors)`` of an RFC 9457 body (§1.4); a v1-style ``{"error": ...}``
    or a bare text body is read as the detail."""
    title, detail, errors = r.reason_phrase or "", "", ()
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        detail = str(body.get("detail") or body.get("error") or body.get("message") or "")
        raw = body.get("errors")
        if isinstance(raw, list):
            errors = tuple(scrub(str(e)) for e in raw)
    elif r.text:
        detail = r.text.strip()[:500]
    return scrub(title), scrub(detail), errors


_BY_STATUS: dict[int, type[ControlPlaneError]] = {
    400: InvalidRequest, 401: ApiKeyError, 403: ApiKeyError, 404: ResourceNotFound,
    409: ResourceConflict, 422: InvalidRequest, 429: RateLimited,
}


def _error(r: httpx.Response, method: str, path: str, where: str, key_how: str,
           scrub: Callable[[str], str], *, cls: type[ControlPlaneError] | None = None,
           tail: str = "") -> ControlPlaneError:
    status = r.status_code
    title, detail, errors = problem_of(r, scrub)
    cls = cls or _BY_STATUS.get(status) or (
        ControlPlaneUnavailable if status >= 500 else ControlPlaneError)
    said = f"HTTP {status} {title}" + (f": {detail}" if detail else "")
    if status == 401:
        text = f"{where} refused the RunPod API key ({said}); {key_how}"
    elif status == 403:
        text = (f"{where} says the RunPod API key may not {method} {path} ({said}); use a key "
                f"with access to it (All, or Restricted with this API allowed); {key_how}")
    elif status == 422 and errors:
        text = f"{method} {path} was refused ({said}): " + "; ".join(errors)
    elif status == 429:
        text = (f"{method} {path}: {where} kept rate-limiting through the retries ({said}); "
                "wait a minute and try again")
    elif status >= 500:
        text = f"{method} {path}: {where} failed ({said})"
    else:
        text = f"{method} {path} failed ({said})"
    request_id = r.headers.get("x-request-id")
    if request_id:
        text += f" [x-request-id {request_id}]"
    error = cls(text + tail, status=status, title=title, detail=detail, errors=errors,
                request_id=request_id, method=method, path=path)
    if isinstance(error, RateLimited):
        error.retry_after = _retry_after(r, 0.0) or None
    return error
