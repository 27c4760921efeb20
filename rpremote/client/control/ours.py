"""Which control-plane objects rpremote made: the only ones it reuses, lists and deletes.

An endpoint is rpremote's when its name has the shape ``Resources.endpoint_name`` gives
(``rpremote-<slug>-<8 hex>``) **and** its env carries ``MANAGED_ENV`` (the rpremote version
that made it). Both, so a user's own endpoint that happens to be named ``rpremote-...`` is
never touched, and one whose marker was edited away is left alone too.
"""

from __future__ import annotations

import re
from typing import Any

MANAGED_ENV = "RPREMOTE_MANAGED"
NAME_RE = re.compile(r"^rpremote-[a-z0-9-]+-[0-9a-f]{8}$")


def is_ours(obj: dict[str, Any]) -> bool:
    name = obj.get("name")
    env = obj.get("env") or {}
    return isinstance(name, str) and bool(NAME_RE.match(name)) and MANAGED_ENV in env


def oldest(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one every process picks among duplicates (a race's losers): the first created,
    then the smallest id, so all processes agree without talking to each other."""
    return min(objs, key=lambda o: (str(o.get("createdAt") or ""), str(o.get("id") or "")))
