"""A Pod stopping itself: the server inside a RunPod Pod ends its own billing.

Exiting the server does not stop a Pod (RunPod restarts the container), and a client cannot be
trusted to come back (a closed notebook, a sleeping laptop), so the server in the Pod does it
(runpod-rest-v2.md §4.9): ``POST /v2/pods/{RUNPOD_POD_ID}/stop`` with the Pod's own
``RUNPOD_API_KEY`` (control plane at ``RPREMOTE_RUNPOD_API``, default RunPod's). Refused,
it says so in the Pod's log and tries ``runpodctl stop pod``, then terminating through the
API (the disk is lost, the billing ends). ``PodGuard`` decides when: ``idle_stop_s`` without
requests or jobs, or ``max_hours`` since the server started, busy or not (the jobs left are
failed with a note saying why, so their callers know).

The key is in no line written here. Not the client's code: the emulator never imports it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from typing import Callable

from .. import platform as rp

log = logging.getLogger("rpremote")
API_SETTING = "RPREMOTE_RUNPOD_API"


def in_a_pod() -> bool:
    return bool(os.environ.get("RUNPOD_POD_ID"))


def stop_own_pod(why: str) -> str:
    """Ask RunPod to stop this Pod; what was done, in words (for the log). In order: the
    v2 action ``stop`` with the Pod's key, ``runpodctl pod stop`` (every Pod has it, set up
    with that key), then terminating (v2 ``DELETE``, ``runpodctl pod delete``): the disk
    is lost, and the billing with it."""
    pod = os.environ.get("RUNPOD_POD_ID", "")
    if not pod:
        return f"{why}; not in a RunPod Pod (no RUNPOD_POD_ID): nothing to stop"
    log.warning("%s: stopping this Pod (%s)", why, pod)
    tried: list[str] = []
    for verb in ("stop", "terminate"):
        if _api(verb, pod, tried) or _runpodctl(verb, pod, tried):
            return f"{why}: asked RunPod to {verb} this Pod"
    message = (f"{why}, but this Pod could not stop itself ({'; '.join(tried)}): it keeps "
               "billing until you stop it (`rpremote pod down` or RunPod's console)")
    log.error(message)
    return message


def _api(verb: str, pod: str, tried: list[str]) -> bool:
    key = os.environ.get("RUNPOD_API_KEY", "")
    if not key:
        tried.append("no RUNPOD_API_KEY in the Pod's environment")
        return False
    base = (os.environ.get(API_SETTING) or rp.REST_V2_BASE_URL).rstrip("/")
    method, path, body = (("POST", f"/v2/pods/{pod}/action", {"action": "stop"}) if verb == "stop"
                          else ("DELETE", f"/v2/pods/{pod}", None))
    import httpx  # (only a Pod that stops itself needs it: the emulator starts without it)

    try:
        r = httpx.request(method, base + path, json=body, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as e:
        tried.append(f"{verb} through the API: {type(e).__name__}")
        return False
    if r.status_code < 300:
        return True
    tried.append(f"{verb} through the API: HTTP {r.status_code} {r.text[:200].replace(key, '***')}")
    return False


def _runpodctl(verb: str, pod: str, tried: list[str]) -> bool:
    exe = shutil.which("runpodctl")
    if exe is None:
        if verb == "stop":
            tried.append("runpodctl: not installed")
        return False
    sub = "stop" if verb == "stop" else "delete"
    for args in ([exe, "pod", sub, pod], [exe, "stop" if verb == "stop" else "remove", "pod", pod]):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"runpodctl: {type(e).__name__}")
            return False
        if done.returncode == 0:
            return True
    tried.append(f"runpodctl {verb}: exit code {done.returncode}")
    return False


class PodGuard:
    """When the server in a Pod stops its Pod: checked on the server's tick."""

    def __init__(self, idle_stop_s: float | None, max_hours: float | None,
                 idle_for: Callable[[], float], fail_jobs: Callable[[str], int],
                 stop: Callable[[str], str] = stop_own_pod):
        self.idle_stop_s = idle_stop_s
        self.max_s = max_hours * 3600 if max_hours else None
        self.max_hours = max_hours
        self.started = time.monotonic()
        self._idle_for = idle_for
        self._fail_jobs = fail_jobs
        self._stop = stop
        self.stopped_because: str | None = None
        self._next_try = 0.0

    def due(self) -> str | None:
        """Why the Pod must stop now, or None. Call it on the server's event loop: at the
        budget it fails the unfinished jobs through the engine. Once due, asked again each
        minute while the stop is refused (the guard never gives up on money)."""
        now = time.monotonic()
        if now < self._next_try:
            return None
        why = None
        if self.max_s is not None and now - self.started >= self.max_s:
            why = f"the Pod reached its budget of --max-hours {self.max_hours:g}"
            failed = self._fail_jobs(f"{why} and stopped itself while this job was queued or "
                                     "running; start it again with `rpremote pod up`")
            if failed:
                why += f" ({failed} job{'s' if failed != 1 else ''} failed with that note)"
        elif self.idle_stop_s is not None and self._idle_for() >= self.idle_stop_s:
            why = f"no requests and no jobs for {self.idle_stop_s:g} s (--idle-stop)"
        if why is not None:
            self._next_try = now + 60
        return why

    def stop(self, why: str) -> str:
        """Stop the Pod (blocking: run it off the event loop)."""
        self.stopped_because = self._stop(why)
        return self.stopped_because
