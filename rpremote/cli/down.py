"""``rpremote down [--yes] [ENDPOINT ...]``: delete the endpoints rpremote made.

Target runpod: the account's endpoints that ``ours.is_ours`` accepts (name shape and the
``RPREMOTE_MANAGED`` env marker), all of them, or those named (by id or name). Target local:
the running emulator's endpoints named the way rpremote names them (``rpremote-<slug>-<8 hex>``,
what ``client/local.py`` makes); endpoints given to ``rpremote serve --endpoint`` or made
through its control plane are left alone.

An endpoint that is not rpremote's is never deleted: naming one refuses the whole command
before anything is deleted. Each endpoint is read again just before its delete, so one whose
marker was removed while the prompt waited is skipped too. Deleting is idempotent: an endpoint
already gone (404) counts as done, and a name that matches nothing is reported and skipped.
Deleting an endpoint stops its workers and cancels its queued and running jobs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .. import config
from ..errors import RpremoteError
from .endpoints import one_line

GONE, DELETED, SKIPPED = "already gone", "deleted", "skipped"
HEAD = ("ENDPOINT", "NAME", "COMPUTE", "WORKERS", "IMAGE")


@dataclass
class Account:
    """Where endpoints are deleted, the same way for both targets."""

    where: str
    endpoints: list[dict[str, Any]]
    is_ours: Callable[[dict[str, Any]], bool]
    describe: Callable[[dict[str, Any]], tuple[str, ...]]
    # delete(ep) -> DELETED, GONE or SKIPPED (read again: no longer rpremote's)
    delete: Callable[[dict[str, Any]], str]


def choose(account: Account, names: list[str]) -> tuple[list[dict], list[str], list[str]]:
    """The endpoints to delete, the refusals (names of endpoints that are not rpremote's) and
    the names that match no endpoint."""
    ours = sorted((ep for ep in account.endpoints if account.is_ours(ep)),
                  key=lambda ep: (str(ep.get("name")), str(ep.get("id"))))
    if not names:
        return ours, [], []
    chosen: list[dict] = []
    refused: list[str] = []
    unknown: list[str] = []
    for name in names:
        matches = [ep for ep in account.endpoints if name in (ep.get("id"), ep.get("name"))]
        mine = [ep for ep in matches if account.is_ours(ep)]
        if not matches:
            unknown.append(name)
        elif not mine:
            ep = matches[0]
            refused.append(f"{name}: endpoint {ep.get('id')} ({ep.get('name')}) was not made "
                           "by rpremote; `rpremote down` never deletes it")
        chosen.extend(ep for ep in mine if all(ep["id"] != c["id"] for c in chosen))
    return chosen, refused, unknown


def down(account: Account, names: list[str], yes: bool) -> int:
    from .runpod_endpoints import format_table

    chosen, refused, unknown = choose(account, names)
    if refused:
        for line in refused:
            print(f"rpremote down: refused: {line}", file=sys.stderr)
        print("rpremote down: nothing was deleted", file=sys.stderr)
        return 1
    for name in unknown:
        print(f"no endpoint {name!r} in {account.where} (already deleted?); skipped")
    others = sum(1 for ep in account.endpoints if not account.is_ours(ep))
    other_line = (f"{others} endpoint{'s' if others != 1 else ''} not made by rpremote: "
                  "left alone" if others else "")
    if not chosen:
        print(f"nothing to delete: no endpoints made by rpremote"
              f"{' by those names' if names else ''} in {account.where}")
        if other_line:
            print(other_line)
        return 0
    n = len(chosen)
    plural = "s" if n != 1 else ""
    print(f"{n} endpoint{plural} made by rpremote in {account.where} to delete "
          "(their workers stop, their queued and running jobs are cancelled):")
    for line in format_table([account.describe(ep) for ep in chosen], HEAD):
        print("  " + line)
    if other_line:
        print(other_line)
    if not yes:
        if not sys.stdin.isatty():
            print(f"rpremote down: not deleting: no terminal to confirm on; pass --yes to "
                  f"delete {'this endpoint' if n == 1 else f'these {n} endpoints'}",
                  file=sys.stderr)
            return 1
        try:
            answer = input(f"Delete {'it' if n == 1 else f'these {n} endpoints'}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was deleted")
            return 1
    counts = {DELETED: 0, GONE: 0, SKIPPED: 0}
    failed = 0
    for ep in chosen:
        label = f"{ep['id']} ({ep.get('name') or ep['id']})"
        try:
            outcome = account.delete(ep)
        except RpremoteError as e:
            failed += 1
            print(f"failed: {label}: {one_line(e)}", file=sys.stderr)
            continue
        counts[outcome] += 1
        print({DELETED: f"deleted {label}", GONE: f"{label}: already gone",
               SKIPPED: f"skipped {label}: no longer marked as rpremote's"}[outcome])
    done = counts[DELETED] + counts[GONE]
    summary = f"deleted {counts[DELETED]} of {n} endpoint{plural}"
    extra = [f"{counts[GONE]} already gone"] if counts[GONE] else []
    extra += [f"{counts[SKIPPED]} skipped"] if counts[SKIPPED] else []
    extra += [f"{failed} failed"] if failed else []
    print(summary + (f" ({', '.join(extra)})" if extra else ""))
    return 0 if done + counts[SKIPPED] == n else 1


def runpod_account(cp: Any) -> Account:
    from ..client.control.ours import is_ours
    from ..errors import ResourceNotFound
    from .runpod_endpoints import compute

    def describe(ep: dict[str, Any]) -> tuple[str, ...]:
        w = ep.get("workers") or {}
        return (ep["id"], str(ep.get("name")), compute(ep),
                f"{w.get('min', '?')}-{w.get('max', '?')}", str(ep.get("image") or "-"))

    def delete(ep: dict[str, Any]) -> str:
        try:
            if not is_ours(cp.endpoints.get(ep["id"])):
                return SKIPPED
            cp.endpoints.delete(ep["id"])
        except ResourceNotFound:
            return GONE
        return DELETED

    return Account(f"the RunPod account ({cp.base_url})", cp.endpoints.list(), is_ours,
                   describe, delete)


def local_account() -> Account | None:
    import httpx

    from ..client.control.ours import NAME_RE
    from ..client.local import LocalEmulator

    emulator = LocalEmulator.running()
    if emulator is None:
        return None
    where = f"the local emulator (pid {emulator.pid})"

    def is_ours(ep: dict[str, Any]) -> bool:
        return bool(NAME_RE.match(str(ep.get("id"))))

    def describe(ep: dict[str, Any]) -> tuple[str, ...]:
        return (ep["id"], ep["id"], str(ep.get("gpu") or "CPU"),
                f"{ep.get('workersMin', '?')}-{ep.get('workersMax', '?')}", "-")

    def delete(ep: dict[str, Any]) -> str:
        try:
            r = httpx.delete(f"{emulator.url}/rpremote/v1/endpoints/{ep['id']}",
                             headers={"Authorization": f"Bearer {emulator.key}"}, timeout=60)
        except httpx.TransportError as e:
            raise RpremoteError(f"{where} stopped answering: {e}") from None
        if r.status_code == 404:
            return GONE
        if r.status_code >= 400:
            raise RpremoteError(f"{where} answered {r.status_code}: {r.text[:300]}")
        return DELETED

    return Account(where, emulator.endpoints(), is_ours, describe, delete)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="rpremote down",
        description="Delete the endpoints rpremote made (target runpod: in the RunPod account; "
                    "target local: in the running emulator): all of them, or those named. "
                    "Endpoints rpremote did not make are never deleted.")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (needed when stdin is not a terminal)")
    p.add_argument("endpoints", nargs="*", metavar="ENDPOINT", help="an endpoint's id or name")
    args = p.parse_args(argv)
    try:
        target = config.target_name()
        if target == "runpod":
            from ..client.control import ControlPlane

            with ControlPlane.from_settings() as cp:
                return down(runpod_account(cp), args.endpoints, args.yes)
        if target == "local":
            account = local_account()
            if account is None:
                print("the local emulator is not running: it has no endpoints to delete")
                return 0
            return down(account, args.endpoints, args.yes)
        raise RpremoteError(f"`rpremote down` applies to the targets runpod and local, "
                            f"not {target!r}")
    except RpremoteError as e:
        print(f"rpremote down: {one_line(e)}", file=sys.stderr)
        return 1
