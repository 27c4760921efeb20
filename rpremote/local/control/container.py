"""The container fields shared by endpoints and templates (runpod-rest-v2.md §1.9).

``image``, ``args`` / ``entrypoint`` / ``cmd``, ``disk``, ``ports``, ``env``, ``registry``.
CONFLICT (§9.1.11): [OAS29] calls ``args`` "arguments passed to the entrypoint"; the newest
surface ([DTS][PIN], which §0 ranks first) makes it the stored command: a shell string (the
CMD, split) or a JSON object string ``{"entrypoint": [...], "cmd": [...]}``, with
``entrypoint``/``cmd`` arrays encoded into it and returned split. We follow the newest.
The emulator records the command and shows it; what a worker runs is its image's mapping
(``images.py``): there is no container whose CMD it could replace.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from .problems import Problem, invalid
from .schema import Arr, Int, Str, StrMap

CONTAINER_PROPS = {
    "image": Str(min_len=1),
    "args": Str(),
    "entrypoint": Arr(Str()),
    "cmd": Arr(Str()),
    "disk": Int(minimum=1),
    "ports": Arr(Str(pattern=r"^[0-9]+/(http|tcp)$"), unique=True),
    "env": StrMap(),
    "registry": Str(min_len=1, nullable=True),
}
CONTAINER_FIELDS = tuple(CONTAINER_PROPS)


def split_args(args: str) -> tuple[list[str], list[str]]:
    """``(entrypoint, cmd)`` of a stored command; a 422 when it cannot be read."""
    text = args.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not (isinstance(data, dict) and set(data) <= {"entrypoint", "cmd"} and all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values())):
            raise invalid(["$.args: a JSON command must be an object "
                           '{"entrypoint": [strings], "cmd": [strings]}'])
        return list(data.get("entrypoint", [])), list(data.get("cmd", []))
    try:
        return [], shlex.split(text)
    except ValueError as e:
        raise invalid([f"$.args: cannot split it as a shell command line: {e}"]) from None


def join_command(entrypoint: list[str], cmd: list[str]) -> str:
    if not entrypoint:
        return shlex.join(cmd)
    return json.dumps({"entrypoint": entrypoint, "cmd": cmd}, separators=(",", ":"))


def apply_container(obj: dict[str, Any], body: dict[str, Any]) -> None:
    """Put the container fields of a (validated) ``body`` onto ``obj``; only those given change."""
    for name in ("image", "disk", "ports", "env", "registry"):
        if name in body:
            obj[name] = body[name]
    split = "entrypoint" in body or "cmd" in body
    if split:
        entrypoint, cmd = split_args(obj.get("args", ""))
        entrypoint = body.get("entrypoint", entrypoint)
        cmd = body.get("cmd", cmd)
        if "args" in body and split_args(body["args"]) != (entrypoint, cmd):
            raise Problem(400, "args and entrypoint/cmd describe different commands; send "
                               "either args or entrypoint/cmd")
        obj["args"] = join_command(entrypoint, cmd)
    elif "args" in body:
        obj["args"] = body["args"]
    obj["entrypoint"], obj["cmd"] = split_args(obj.get("args", ""))
