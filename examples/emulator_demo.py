"""Demo: start the local RunPod endpoint emulator and run a sample worker job through it.

It speaks RunPod's Serverless queue API, so every request below is the one you would send to
https://api.runpod.ai/v2/<endpoint>. Run it with `./scripts/demo`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def start_emulator(state: Path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", str(state),
        "--endpoint", "hello", "--worker-cmd", f"python {HERE / 'handlers' / 'hello_worker.py'}",
        "--workers-min", "1", "--workers-max", "2",
    ]
    proc = subprocess.Popen(cmd)
    while not (state / "server.json").exists():
        if proc.poll() is not None:
            raise SystemExit("the emulator did not start")
        time.sleep(0.05)
    return proc


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rpremote-demo-") as tmp:
        state = Path(tmp)
        proc = start_emulator(state)
        try:
            info = json.loads((state / "server.json").read_text())
            key = (state / "api_key").read_text().strip()
            api = httpx.Client(base_url=f"{info['url']}/v2/hello", timeout=120,
                               headers={"Authorization": f"Bearer {key}"})
            print("\n== waiting for the worker (a real runpod SDK process) ==")
            while api.get("/health").json()["workers"]["ready"] == 0:
                time.sleep(0.2)
            print(api.get("/health").json())

            print("\n== POST /run, then GET /stream as items are produced ==")
            job = api.post("/run", json={"input": {"name": "RunPod"}}).json()
            print(job)
            t0 = time.time()
            while True:
                body = api.get(f"/stream/{job['id']}").json()
                for item in body["stream"]:
                    print(f"  +{time.time() - t0:4.1f}s  {item['output']}")
                if body["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT") and not body["stream"]:
                    break
            status = api.get(f"/status/{job['id']}").json()
            print(f"status {status['status']}: delay {status['delayTime']} ms, "
                  f"execution {status['executionTime']} ms, worker {status['workerId']}")

            print("\n== POST /runsync with a failing input ==")
            failed = api.post("/runsync", json={"input": {"name": "nobody", "fail": True}}).json()
            print(f"status {failed['status']}: {failed['error']}")

            print("\n== GET /health ==")
            print(api.get("/health").json())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        print("\nemulator stopped.")


if __name__ == "__main__":
    main()
