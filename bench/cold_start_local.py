"""Cold starts on the local target, in one run beside the SDK's own dev server.

1. ``@remote`` from nothing: a fresh ``python -c`` process with a fresh ``RPREMOTE_HOME`` and no
   emulator running calls ``f(1)``; from process start to its result. The client starts the
   emulator, the emulator starts a worker, the worker takes the call. Broken down with the
   client's own timestamps and the job's times as the emulator reports them:
   ``import`` = interpreter + ``import rpremote``; ``emulator`` = until the emulator it started
   answers; ``worker`` = the job's queue time (delayTime: the emulator spawns the worker on
   the submit, so this is the worker's start until its first job-take); ``run`` = its
   executionTime; ``other`` = the rest (endpoint made, pickling, the requests and answers).
   The emulator is stopped by the pid in its ``server.json``.
2. The SDK's dev server, ``python bench/handlers/trivial.py --rp_serve_api``: from process start
   to its first successful ``/runsync`` answer (stopped by its pid).
3. A new worker on an existing endpoint (``workers=(0, 1)``, ``idle_timeout=1``): the worker
   idles out, then ``f(1)`` scales the endpoint up from zero: ``take`` = spawn to its first
   job-take (the job's queue time: the spawn happens on the submit), ``result`` = the whole
   call, beside a warm call of the same function.

Medians of ``--n`` repetitions, each kind interleaved with the others. The ratio of 1 to 2 is
the goal of issue 18 (<= 0.5); on a busy 2-core machine only ratios in one run mean much.
``--no-spare`` runs the emulators without spare workers (``RPREMOTE_WORKER_TEMPLATE=0``), to
see what they are worth.
Usage: .venv/bin/python bench/cold_start_local.py [--n 5] [--no-spare] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from emulator_latency import free_port, start_sdk_dev_server  # noqa: E402

ROOT = HERE.parent

# The client process of row 1. Timestamps are wall-clock (time.time()), comparable across
# processes on one machine; BENCH_T0 is taken by the parent just before it starts this one.
CLIENT = textwrap.dedent("""
    import time
    import rpremote
    t_import = time.time()
    from rpremote.api import RemoteFunction
    from rpremote.client import local as _local
    _connect = _local.LocalEmulator.connect.__func__
    stamps, jobs = {}, []
    def connect(cls, *a, **k):
        found = _connect(cls, *a, **k)
        stamps.setdefault("up", time.time())
        return found
    _local.LocalEmulator.connect = classmethod(connect)
    _submit = RemoteFunction._submit
    def submit(self, *a, **k):
        jobs.append(_submit(self, *a, **k))
        return jobs[-1]
    RemoteFunction._submit = submit

    @rpremote.remote
    def f(x):
        return x + 1

    assert f(1) == 2
    t_result = time.time()
    import json
    print(json.dumps({"import": t_import, "up": stamps.get("up"), "result": t_result,
                      "delay": jobs[-1].delay_time, "execution": jobs[-1].execution_time}))
""")


def stop_emulator(home: Path) -> None:
    state = home / "emulator" / "server.json"
    try:
        pid = json.loads(state.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    stop_pid(pid)


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


EMULATOR_ENV: dict[str, str] = {}  # what the emulators the clients start inherit


def client_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RPREMOTE_", "RUNPOD_"))}
    env.update(RPREMOTE_HOME=str(home), RPREMOTE_TARGET="local", **EMULATOR_ENV)
    return env


def rpremote_cold() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rpremote-cold-") as tmp:
        home = Path(tmp)
        try:
            t0 = time.time()
            out = subprocess.run([sys.executable, "-c", CLIENT], env=client_env(home), cwd=tmp,
                                 capture_output=True, text=True, timeout=120)
            if out.returncode:
                raise SystemExit(f"the client failed:\n{out.stdout}\n{out.stderr}")
            s = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop_emulator(home)
    row = {"total": s["result"] - t0, "import": s["import"] - t0, "emulator": s["up"] - s["import"],
           "worker": s["delay"], "run": s["execution"]}
    row["other"] = row["total"] - sum(row[k] or 0 for k in ("import", "emulator", "worker", "run"))
    return row


def sdk_dev_server() -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rp-serve-api-") as tmp:
        t0 = time.time()
        proc = start_sdk_dev_server(port, tmp)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"the SDK dev server exited with {proc.returncode}")
                    try:
                        r = c.post("/runsync", json={"input": {"x": 1}})
                        if r.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.01)
            return {"total": time.time() - t0}
        finally:
            stop_pid(proc.pid)
            proc.wait()


NEW_WORKER = textwrap.dedent("""
    import json, sys, time
    import rpremote
    from rpremote.api import RemoteFunction
    from rpremote.client.local import LocalEmulator

    jobs = []
    _submit = RemoteFunction._submit
    def submit(self, *a, **k):
        jobs.append(_submit(self, *a, **k))
        return jobs[-1]
    RemoteFunction._submit = submit

    @rpremote.remote(workers=(0, 1), idle_timeout=1)
    def g(x):
        return x + 1

    n = int(sys.argv[2])
    assert g(1) == 2  # the emulator and the endpoint exist from here on
    emu = LocalEmulator.connect()
    name = emu.endpoints()[0]["id"]

    def no_workers():
        return not [w for w in emu.endpoint(name)["workers"] if not w["draining"]]

    rows = []
    for _ in range(n):
        deadline = time.monotonic() + 30
        while not no_workers():
            assert time.monotonic() < deadline, "the worker did not idle out"
            time.sleep(0.1)
        time.sleep(0.3)  # its process gone too
        t0 = time.time()
        assert g(1) == 2
        cold = time.time() - t0
        take = jobs[-1].delay_time
        t0 = time.time()
        assert g(1) == 2
        rows.append({"take": take, "result": cold, "warm": time.time() - t0})
    print(json.dumps(rows))
""")


def new_worker(n: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="rpremote-scale-") as tmp:
        home = Path(tmp)
        try:
            out = subprocess.run([sys.executable, "-c", NEW_WORKER, tmp, str(n)],
                                 env=client_env(home), cwd=tmp, capture_output=True, text=True,
                                 timeout=60 + 15 * n)
            if out.returncode:
                raise SystemExit(f"the scale-up client failed:\n{out.stdout}\n{out.stderr}")
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop_emulator(home)


def median(rows: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value * 1000:8.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-spare", action="store_true", help="RPREMOTE_WORKER_TEMPLATE=0")
    args = ap.parse_args()
    if args.no_spare:
        EMULATOR_ENV["RPREMOTE_WORKER_TEMPLATE"] = "0"
    print(f"cold start, local target, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"median of {args.n}{', no spare workers' if args.no_spare else ''}", flush=True)
    ours, sdk = [], []
    for i in range(args.n):  # interleaved: both see the same machine load
        ours.append(rpremote_cold())
        sdk.append(sdk_dev_server())
        print(f"  run {i + 1}: rpremote {ours[-1]['total'] * 1000:.0f} ms, "
              f"SDK dev server {sdk[-1]['total'] * 1000:.0f} ms", flush=True)
    scale = new_worker(args.n)

    keys = ["total", "import", "emulator", "worker", "run", "other"]
    print(f"\n{'':34s}" + "".join(f"{k:>9s}" for k in keys) + "   (ms)")
    print(f"{'@remote f(1) from nothing':34s}" + "".join(f" {ms(median(ours, k))}" for k in keys))
    print(f"{'SDK --rp_serve_api first /runsync':34s} {ms(median(sdk, 'total'))}")
    ratio = median(ours, "total") / median(sdk, "total")
    print(f"ratio rpremote / SDK dev server: {ratio:.2f} (goal <= 0.5)")
    print(f"\nnew worker on an existing endpoint (scale from 0): spawn -> first take "
          f"{ms(median(scale, 'take')).strip()} ms (goal < 300), first result "
          f"{ms(median(scale, 'result')).strip()} ms, warm call {ms(median(scale, 'warm')).strip()} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rpremote": ours, "sdk": sdk, "scale_up": scale,
                                         "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
