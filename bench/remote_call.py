"""Warm trivial-call latency, in one run: @remote on the local target vs its peers.

1. ``@remote`` (local target: auto-started emulator + a real runpod-SDK executor worker), warm,
   with the CPU each process spends per call (client, emulator, worker: where the time goes);
2. ``ProcessPoolExecutor(1).submit(f).result()``;
3. ipyparallel ``DirectView.apply_sync`` with one engine (``pip install ipyparallel``).

The emulator runs under a temporary RPREMOTE_HOME and is stopped (by its pid) at the end.
Usage: .venv/bin/python bench/remote_call.py [--n 300] [--json bench/results/remote_call.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def trivial(x=1):
    return x


def timed(call, n: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "n": n,
    }


def bench_remote(n: int) -> dict[str, float]:
    from rpremote import remote

    f = remote(workers=(1, 1), idle_timeout=60)(trivial)
    result = timed(lambda: f(1), n)
    result["cpu_ms_per_call"] = cpu_per_call(lambda: f(1), n)
    return result


def cpu_per_call(call, n: int) -> dict[str, float]:
    """Where a warm call's time goes: the CPU each process spends per call (this client, all
    its threads; the emulator; its workers), from /proc over ``n`` more calls."""
    from rpremote.client import targets

    emulator = targets.current().emulator.pid
    procs = {"client": [os.getpid()], "emulator": [emulator], "worker": _descendants(emulator)}
    before = {name: sum(map(_cpu_s, pids)) for name, pids in procs.items()}
    for _ in range(n):
        call()
    return {name: round((sum(map(_cpu_s, pids)) - before[name]) / n * 1000, 3)
            for name, pids in procs.items()}


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return [p for c in children for p in (c, *_descendants(c))]


def bench_process_pool(n: int) -> dict[str, float]:
    with ProcessPoolExecutor(1) as pool:
        return timed(lambda: pool.submit(trivial, 1).result(), n)


def bench_ipyparallel(n: int) -> dict[str, float] | str:
    try:
        import ipyparallel as ipp
    except ImportError:
        return "not installed (pip install ipyparallel)"
    cluster = ipp.Cluster(n=1, log_level=40)
    rc = cluster.start_and_connect_sync()
    try:
        view = rc[0]
        return timed(lambda: view.apply_sync(trivial, 1), n)
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="rpremote-bench-")
    os.environ["RPREMOTE_HOME"] = home
    results: dict[str, object] = {}
    try:
        results["rpremote @remote (local, warm)"] = bench_remote(args.n)
    finally:
        state = Path(home) / "emulator" / "server.json"
        if state.exists():
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
    results["ProcessPoolExecutor.submit().result()"] = bench_process_pool(args.n)
    results["ipyparallel DirectView.apply_sync"] = bench_ipyparallel(args.n)

    print(f"warm trivial call, n={args.n}, Python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"  {name:42s} p50 {r['p50_ms']:8.3f} ms   p99 {r['p99_ms']:8.3f} ms")
            if "cpu_ms_per_call" in r:
                print("  " + " " * 42 + " CPU per call: " + ", ".join(
                    f"{k} {v:.2f} ms" for k, v in r["cpu_ms_per_call"].items()))
        else:
            print(f"  {name:42s} {r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
