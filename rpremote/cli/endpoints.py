"""``rpremote endpoints``: the endpoints of the current target, their workers and queues.

On the runpod target: the endpoints rpremote made in the account (``runpod_endpoints.py``).

On the local target this asks the running emulator and never starts one (no emulator means
no endpoints). Shared by the CLI and ``%runpod endpoints``. Each endpoint's offload store is
shown by its location, and the store this process is set to use by its ``describe()``: where
it is and where its credentials come from, never their values (the emulator masks secret
values in the specs it shows).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import config
from ..errors import ConfigError, RpremoteError

HEAD = ("ENDPOINT", "GPU", "WORKERS", "IDLE", "RUNNING", "STARTING", "QUEUED", "IN PROGRESS",
        "IDLE TIMEOUT", "STORE")
EMULATOR_STORE = "emulator"  # an endpoint whose workers use the emulator's own store


def store_line() -> str:
    """The offload store this process is set to use, in words (never a credential)."""
    from ..client.stores import describe_choice

    return f"offload store: {describe_choice()}"


def _store_of(ep: dict[str, Any]) -> str:
    url = ((ep.get("env") or {}).get("RPREMOTE_STORE") or "").strip()
    return url if url.lower() not in config.NO_STORE else EMULATOR_STORE


def endpoint_rows() -> list[dict[str, Any]]:
    """One dict per endpoint: its spec plus the live worker and job counts."""
    target = config.target_name()
    if target != "local":
        raise RpremoteError(f"endpoint_rows lists the local target's endpoints, not {target!r}'s "
                            "(runpod_endpoints.listing lists RunPod's)")
    from ..client.local import LocalEmulator
    from ..client.queue import QueueClient

    emulator = LocalEmulator.running()
    if emulator is None:
        return []
    specs = emulator.endpoints()
    queue = QueueClient(emulator.url, emulator.key, where=f"the local emulator (pid {emulator.pid})")
    try:
        return [{**spec, "store": _store_of(spec), "health": queue.health(spec["id"])}
                for spec in specs]
    finally:
        queue.close()


def _row(ep: dict[str, Any]) -> tuple[str, ...]:
    workers, jobs = ep["health"]["workers"], ep["health"]["jobs"]
    return (ep["id"], str(ep.get("gpu") or "CPU"),
            f"{ep.get('workersMin', 0)}-{ep.get('workersMax', '?')}",
            str(workers.get("idle", 0)), str(workers.get("running", 0)),
            str(workers.get("initializing", 0)), str(jobs.get("inQueue", 0)),
            str(jobs.get("inProgress", 0)), f"{ep.get('idleTimeout', '?')} s",
            ep.get("store") or _store_of(ep))


def print_endpoints(as_json: bool = False) -> int:
    target = config.target_name()
    if target == "runpod":
        from .runpod_endpoints import print_listing

        return print_listing(as_json)
    if target != "local":
        raise RpremoteError(f"`rpremote endpoints` lists the targets local and runpod, not "
                            f"{target!r}")
    rows = endpoint_rows()
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print(store_line())
    if not rows:
        print("no endpoints (the local emulator is not running, or has none yet)")
        return 0
    table = [HEAD] + [_row(ep) for ep in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rpremote endpoints",
                                description="The endpoints of the current target, with their "
                                            "workers and queues. On target runpod: only the "
                                            "endpoints rpremote made (the others are counted).")
    p.add_argument("--json", action="store_true", help="JSON: a list of specs and health (local), or "
                   "{endpoints, notOurs, problems} (runpod)")
    args = p.parse_args(argv)
    try:
        return print_endpoints(args.json)
    except RpremoteError as e:
        print(f"rpremote endpoints: {one_line(e)}", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """An error's message on one line (a server's text may hold newlines)."""
    return " ".join(str(error).split())
