"""/runsync round-trip latency of a trivial handler, in one run, three ways:

1. raw httpx: POST to a trivial Starlette app on uvicorn (the HTTP floor; no queue, no worker);
2. rpremote's emulator: real `runpod` SDK worker behind the full queue (take/done/long-polls),
   at the SDK's default concurrency 1 and with concurrency_modifier=3. The SDK counts a taken
   job twice (its queue and its progress set) and sleeps 1 s whenever it thinks it is full, so
   only concurrency >= 3 keeps a job-take open while a job runs; its run loop then still polls
   its internal queue every 0.1 s, which sets the floor of this row;
   and with a minimal protocol worker (an httpx loop: job-take long-poll, then job-done), which
   isolates the emulator's own cost from the SDK worker loop's;
3. the SDK's own dev server, `python trivial.py --rp_serve_api` (runs the handler in-process).

Usage: .venv/bin/python bench/emulator_latency.py [--n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
TRIVIAL = HERE / "handlers" / "trivial.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(client: httpx.Client, url: str, n: int, warmup: int = 5) -> list[float]:
    body = {"input": {"x": 1}}
    for _ in range(warmup):
        client.post(url, json=body).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(url, json=body)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return times


def summary(name: str, times: list[float]) -> dict:
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    row = {"name": name, "n": len(times), "p50_ms": round(p(0.5), 2), "p99_ms": round(p(0.99), 2),
           "mean_ms": round(statistics.mean(times), 2)}
    print(f"{name:48s} n={row['n']:4d}  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
          f"mean {row['mean_ms']:8.2f} ms", flush=True)
    return row


def raw_httpx(n: int) -> dict:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request):
        body = await request.json()
        return JSONResponse({"id": "x", "status": "COMPLETED", "output": {"echo": body["input"]}})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/runsync", echo, methods=["POST"])]),
                                           port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        row = summary("raw httpx -> trivial starlette app", measure(c, "/runsync", n))
    server.should_exit = True
    return row


def emulator(n: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", tmp,
             "--endpoint", "bench", "--worker-cmd", f"{sys.executable} {TRIVIAL}",
             "--workers-min", "1", "--workers-max", "1", "--env", f"CONCURRENCY={concurrency}"],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not (state / "server.json").exists():
                time.sleep(0.05)
            url = json.loads((state / "server.json").read_text())["url"]
            key = (state / "api_key").read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
                while True:
                    try:
                        if c.get("/v2/bench/health").json()["workers"]["ready"]:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                return summary(f"rpremote emulator + SDK worker (concurrency {concurrency})",
                               measure(c, "/v2/bench/runsync", n))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def _minimal_worker(url: str, key: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=f"{url}/v2/raw", headers={"Authorization": key}, timeout=30) as c:
        while not stop.is_set():
            r = c.get("/job-take/minimal?gpu=CPU&job_in_progress=0")
            if r.status_code == 200:
                job = r.json()
                c.post(f"/job-done/minimal/{job['id']}?gpu=CPU&isStream=false",
                       content=json.dumps({"output": {"echo": job["input"]}}))


def emulator_minimal_worker(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", tmp,
             "--take-hold", "1", "--endpoint", "raw"], stdout=subprocess.DEVNULL)
        stop = threading.Event()
        try:
            while not (state / "server.json").exists():
                time.sleep(0.05)
            url = json.loads((state / "server.json").read_text())["url"]
            key = (state / "api_key").read_text().strip()
            time.sleep(0.5)
            threading.Thread(target=_minimal_worker, args=(url, key, stop), daemon=True).start()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
                return summary("rpremote emulator + minimal protocol worker",
                               measure(c, "/v2/raw/runsync", n))
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def start_sdk_dev_server(port: int, home: str) -> subprocess.Popen:
    """``trivial.py --rp_serve_api`` on 127.0.0.1:``port`` (the caller stops it by its pid)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(RUNPOD_LOG_LEVEL="ERROR", HOME=home)
    return subprocess.Popen(
        [sys.executable, str(TRIVIAL), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
         "--rp_api_port", str(port), "--rp_log_level", "ERROR"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def sdk_serve_api(n: int) -> dict:
    port = free_port()
    proc = start_sdk_dev_server(port, tempfile.mkdtemp())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while True:
                try:
                    c.get("/docs")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            return summary("SDK --rp_serve_api (handler in the server)", measure(c, "/runsync", n))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-slow", type=int, default=10,
                    help="calls for the SDK-default concurrency 1 case (about 1 s each)")
    args = ap.parse_args()
    print(f"/runsync round trip, trivial handler, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    rows = [raw_httpx(args.n), emulator_minimal_worker(args.n), emulator(args.n, 3), emulator(args.n_slow, 1), sdk_serve_api(args.n)]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "emulator_latency.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
