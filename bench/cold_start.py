"""Cold starts on the runpod target, rehearsed against ``rpremote serve``: where the time goes.

Each row is a fresh client process (``RPREMOTE_TARGET=runpod`` pointed at one emulator, its
offload store an S3 server on loopback) timing one call to ``@remote(gpu="ADA_24")``:

1. no endpoint, the default official image: the endpoint is created, rpremote's own wheel is
   uploaded to the store, a worker starts in a clean environment and its bootstrap installs
   rpremote and its pinned dependencies on the container disk, then the call runs;
2. the same with a network volume attached (``RPREMOTE_VOLUME``): the install goes onto it;
3. a new worker on that existing endpoint once the first idled out: the volume's install is
   reused (nothing to install);
4. no endpoint, rpremote's ready image (``rpremote/worker``; docker/Dockerfile): no bootstrap;
5. a warm call: the same process, the worker still up.

Columns: ``endpoint`` = find/create (+ wheel upload) through the control plane; ``queue`` =
the job's delayTime (waiting for a worker: start, bootstrap, executor up); ``install`` = what
the bootstrap reported; ``run`` = executionTime; ``first result`` = process start to value.
pip takes the packages from this machine's pip cache (it stands for the registry's bandwidth:
a real RunPod worker downloads them, and pulls the image, so add those there).

Usage: .venv/bin/python bench/cold_start.py [--s3 mini|moto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from payload_bandwidth import LoopbackS3  # noqa: E402

KEY = "rpk-bench-cold-start"
CALL = """
    import json, sys, time
    t0 = time.monotonic()
    import rpremote
    from rpremote.client import targets

    @rpremote.remote(gpu="ADA_24", workers=(0, 1), idle_timeout=IDLE, image=IMAGE)
    def hello():
        return 1

    t1 = time.monotonic()
    target = targets.current()
    endpoint = target.endpoint_for(hello.resources, image=hello.image)
    t2 = time.monotonic()
    job = hello.spawn()
    assert job.result(timeout=600) == 1
    t3 = time.monotonic()
    phases = {"worker": job.worker, "endpoint": t2 - t1, "queue": job.delay_time,
              "run": job.execution_time, "first result": t3 - t0}
    if WARM:
        t4 = time.monotonic()
        assert hello() == 1
        phases["warm call"] = time.monotonic() - t4
    print("PHASES " + json.dumps({"endpoint_id": endpoint, **phases}))
"""


class Rehearsal:
    """One ``rpremote serve`` with its own state, stopped by its PID."""

    def __enter__(self) -> "Rehearsal":
        self.state = Path(tempfile.mkdtemp(prefix="rpremote-bench-cold-"))
        self.log = open(self.state / "serve.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state",
             str(self.state), "--api-key", KEY], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (self.state / "server.json").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((self.state / "serve.log").read_text())
            time.sleep(0.05)
        self.url = json.loads((self.state / "server.json").read_text())["url"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=60, **kw)
        r.raise_for_status()
        return r

    def env(self, home: Path, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RPREMOTE_IMAGE",)}
        return {**env, "RPREMOTE_TARGET": "runpod", "RUNPOD_API_KEY": KEY,
                "RPREMOTE_RUNPOD_API": self.url, "RPREMOTE_RUNPOD_QUEUE": self.url,
                "RPREMOTE_HOME": str(home), **extra}


def call(rehearsal: Rehearsal, home: Path, *, image: str | None = None, idle: int = 5,
         warm: bool = False, extra: dict[str, str] | None = None) -> dict:
    code = (textwrap.dedent(CALL).replace("IDLE", str(idle)).replace("IMAGE", repr(image))
            .replace("WARM", str(warm)))
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=rehearsal.env(home, extra or {}), timeout=900)
    if r.returncode:
        raise RuntimeError(r.stdout + r.stderr)
    phases = json.loads(next(line for line in r.stdout.splitlines()
                             if line.startswith("PHASES "))[7:])
    log = rehearsal.state / "logs" / phases["endpoint_id"] / f"{phases['worker']}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    installed = re.search(r"rpremote bootstrap: installed in ([\d.]+) s", text)
    phases["install"] = float(installed.group(1)) if installed else (
        0.0 if "nothing to install" in text else None)
    phases["process"] = time.monotonic() - started
    return phases


def wait_no_workers(rehearsal: Rehearsal, endpoint_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not rehearsal.api("GET", f"/v2/serverless/{endpoint_id}/workers").json()["workers"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"endpoint {endpoint_id}'s worker did not idle out")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--s3", choices=("mini", "moto"), default="mini")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    from rpremote import platform as rp

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    rows: list[tuple[str, dict]] = []
    with LoopbackS3(args.s3) as s3, Rehearsal() as rehearsal:
        store = {"RPREMOTE_STORE": "s3://bench/cold"}
        home = rehearsal.state / "client"
        rows.append(("1 new endpoint, official image", call(rehearsal, home, extra=store)))
        volume = rehearsal.api("POST", "/v2/network-volumes", json={
            "name": "bench-cache", "size": 10, "dataCenter": "EU-RO-1"}).json()
        with_volume = {**store, "RPREMOTE_VOLUME": volume["id"]}
        first = call(rehearsal, home, idle=1, extra=with_volume)
        rows.append(("2 new endpoint, official image, volume", first))
        wait_no_workers(rehearsal, first["endpoint_id"])
        rows.append(("3 new worker, volume cache warm", call(rehearsal, home, idle=1,
                                                             extra=with_volume)))
        rows.append(("4 new endpoint, ready image", call(rehearsal, home, idle=30, warm=True,
                                                         image=rp.worker_image(python),
                                                         extra=store)))
        rows.append(("5 warm call (ready image)", {"first result": rows[-1][1]["warm call"]}))
        print(f"cold starts on the rehearsal (S3: {s3.kind}; Python {python})")
    cols = ("endpoint", "queue", "install", "run", "first result")
    print(f"{'':42}" + "".join(f"{c:>14}" for c in cols))
    for name, phases in rows:
        cells = "".join(f"{phases[c]:>13.2f}s" if isinstance(phases.get(c), (int, float))
                        else f"{'-':>14}" for c in cols)
        print(f"{name:42}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
