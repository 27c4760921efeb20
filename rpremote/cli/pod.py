"""``rpremote pod up|status|down``: rpremote's warm GPU Pod (target ``pod``).

Shared by the CLI and ``%runpod pod ...``. The Pod is found through the API from any process
(``client/pod.py``); nothing here keeps local state.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import RpremoteError


def _status_lines(pod: dict[str, Any]) -> list[str]:
    from ..client import pod as pods

    price = pods.price_per_hour(pod)
    runtime = pod.get("runtime") or {}
    uptime = runtime.get("uptime")
    lines = [f"Pod {pod['id']} ({pod.get('name')}): {pod.get('status')}",
             f"  GPU: {pods._gpu_text(pod)} ({pod.get('cloud', '?')})",
             f"  URL: {pods.proxy_url(pod['id'])}"]
    if uptime is not None:
        lines.append(f"  uptime: {uptime / 60:.1f} min")
    if price:
        cost = f", ${price * uptime / 3600:.2f} so far this run" if uptime else ""
        lines.append(f"  price: ${price:.2f}/h while running{cost}")
    else:
        lines.append("  price: nothing while stopped (its disk is billed at the storage rate)"
                     if pod.get("status") == "EXITED" else "  price: unknown")
    return lines


def _jobs_line(pod: dict[str, Any]) -> str | None:
    """Jobs queued and running on the Pod's server (only when it runs)."""
    if pod.get("status") != "RUNNING":
        return None
    from ..client import pod as pods
    from ..client.local import LocalEmulator
    from ..client.queue import QueueClient

    key = (pod.get("env") or {}).get(pods.SERVER_KEY_ENV, "")
    url = pods.proxy_url(pod["id"])
    try:
        specs = LocalEmulator(url, key, pid=0, started_here=False).endpoints()
        queue = QueueClient(url, key, where=f"Pod {pod['id']}")
        try:
            health = [queue.health(s["id"]) for s in specs]
        finally:
            queue.close()
    except Exception as e:  # noqa: BLE001 -- a status line, not a failure
        return f"  jobs: its server does not answer yet ({type(e).__name__})"
    queued = sum(h["jobs"].get("inQueue", 0) for h in health)
    running = sum(h["jobs"].get("inProgress", 0) for h in health)
    done = sum(h["jobs"].get("completed", 0) for h in health)
    return f"  jobs: {running} running, {queued} queued, {done} completed (kept a while)"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rpremote pod", description="rpremote's warm GPU Pod "
                                "(target pod): it stops itself when idle.")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start (or find, or restart) the Pod; wait until it answers")
    u.add_argument("--gpu", default=None, help="GPU type or pool (comma-separated: tried in "
                   "order); default: the catalog's most available")
    u.add_argument("--count", type=int, default=1, help="GPUs (default 1)")
    u.add_argument("--volume", default=None, metavar="VOLUME_ID",
                   help="a network volume to mount at /runpod-volume (its data center's)")
    u.add_argument("--idle-stop", default="30m", metavar="DURATION",
                   help="the Pod stops itself after this long without requests or jobs "
                        "(90s, 30m, 2h; default 30m)")
    u.add_argument("--max-hours", type=float, default=None, metavar="H",
                   help="the Pod stops itself after H hours, busy or not (default: no limit)")
    u.add_argument("--cloud", choices=("SECURE", "COMMUNITY"), default="SECURE")
    u.add_argument("--image", default=None, help="the image (default: as for target runpod)")
    sub.add_parser("status", help="the Pod: state, GPU, price, cost so far, jobs, URL")
    d = sub.add_parser("down", help="terminate the Pod (its disk goes with it)")
    d.add_argument("--stop", action="store_true", help="stop it instead, keeping its disk")
    d.add_argument("--yes", "-y", action="store_true", help="do not ask")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except RpremoteError as e:
        print(f"rpremote pod {args.command}: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from ..client import pod as pods
    from ..client.control import ControlPlane

    with ControlPlane.from_settings() as plane:
        if args.command == "up":
            if args.count < 1:
                raise RpremoteError("--count is a number of GPUs, 1 or more")
            pod = pods.up(gpu=args.gpu, count=args.count, volume=args.volume,
                          idle_stop=args.idle_stop, max_hours=args.max_hours,
                          cloud=args.cloud, image=args.image, plane=plane)
            print("\n".join(_status_lines(pod)))
            print("  use it: RPREMOTE_TARGET=pod, or rpremote.configure(target='pod')")
            return 0
        pod = pods.find(plane)
        if pod is None:
            print("no rpremote Pod under this key (start one: rpremote pod up)")
            return 0
        if args.command == "status":
            print("\n".join(_status_lines(pod)))
            jobs = _jobs_line(pod)
            if jobs:
                print(jobs)
            return 0
        verb = "stop" if args.stop else "terminate"
        if not args.yes:
            if not sys.stdin.isatty():
                raise RpremoteError(f"not a terminal: pass --yes to {verb} Pod {pod['id']}")
            answer = input(f"{verb} Pod {pod['id']} ({pods._gpu_text(pod)})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing done")
                return 1
        if args.stop:
            if "stop" not in (pod.get("actions") or ["stop"]):
                print(f"Pod {pod['id']} is {pod.get('status')}: nothing to stop")
                return 0
            plane.request("POST", f"/v2/pods/{pod['id']}/action", json={"action": "stop"})
            print(f"stopped Pod {pod['id']} (its disk is kept; `rpremote pod up` starts it)")
        else:
            plane.request("DELETE", f"/v2/pods/{pod['id']}")
            print(f"terminated Pod {pod['id']}")
        return 0
