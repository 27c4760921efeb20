"""Throughput of a map over many tiny items, in one run: rpremote vs its peers.

1. ``f.map`` on the local target (2 workers): automatic batching, and the same chunk sizes
   as its peers (n/8: four jobs per worker; n/2: one job per worker);
2. ipyparallel load-balanced ``map`` with 2 engines, unchunked and with ``chunksize`` 100,
   n/8 and n/2;
3. ``ProcessPoolExecutor(2).map``, default chunksize 1 and chunked.

Usage: .venv/bin/python bench/map_throughput.py [--n 10000] [--repeat 5] [--json FILE]
(``pip install -e ".[bench]"`` for ipyparallel.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def tiny(x):
    return x + 1


REPEAT = 5


def rate(n: int, run) -> dict[str, float]:
    """Items/s over ``REPEAT`` runs: the median and the best (noise on a shared machine)."""
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
        assert list(out) == [x + 1 for x in range(n)], "wrong results"
    times.sort()
    median = times[len(times) // 2]
    return {"median_items_per_s": round(n / median), "best_items_per_s": round(n / times[0]),
            "median_s": round(median, 3)}


def bench_rpremote(n: int) -> dict[str, float]:
    from rpremote import remote

    f = remote(workers=(2, 2), idle_timeout=60)(tiny)
    list(f.map(range(200)))  # warm: workers started
    return {
        "automatic batches": rate(n, lambda: list(f.map(range(n)))),
        **{f"batch_size={label}": rate(n, lambda size=size: list(f.map(range(n), batch_size=size)))
           for label, size in chunkings(n)},
    }


def chunkings(n: int) -> list[tuple[str, int]]:
    """The chunk sizes every peer is measured with: a few chunks per worker, one per worker."""
    return [("n/8", max(1, n // 8)), ("n/2", max(1, n // 2))]


def bench_ipyparallel(n: int) -> dict[str, object]:
    try:
        import ipyparallel as ipp
    except ImportError:
        return {"skipped": "pip install ipyparallel"}
    cluster = ipp.Cluster(n=2, log_level=40)
    rc = cluster.start_and_connect_sync()
    try:
        view = rc.load_balanced_view()
        view.map_sync(tiny, range(100))
        unchunked_n = min(n, 1000)  # ~300/s: the full n would take a minute per run
        return {
            f"unchunked (n={unchunked_n})": rate(unchunked_n, lambda: view.map_sync(tiny, range(unchunked_n))),
            "chunksize=100": rate(n, lambda: view.map(tiny, range(n), chunksize=100).get()),
            **{f"chunksize={label}": rate(n, lambda size=size: view.map(tiny, range(n), chunksize=size).get())
               for label, size in chunkings(n)},
        }
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def bench_process_pool(n: int) -> dict[str, object]:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(tiny, range(100)))
        return {
            "chunksize=1": rate(n, lambda: pool.map(tiny, range(n))),
            **{f"chunksize={label}": rate(n, lambda size=size: pool.map(tiny, range(n), chunksize=size))
               for label, size in chunkings(n)},
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=REPEAT)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    globals()["REPEAT"] = args.repeat

    home = tempfile.mkdtemp(prefix="rpremote-bench-")
    os.environ["RPREMOTE_HOME"] = home
    results: dict[str, object] = {}
    try:
        results["rpremote f.map (2 workers)"] = bench_rpremote(args.n)
    finally:
        state = Path(home) / "emulator" / "server.json"
        if state.exists():
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
    results["ipyparallel load-balanced map (2 engines)"] = bench_ipyparallel(args.n)
    results["ProcessPoolExecutor(2).map"] = bench_process_pool(args.n)

    print(f"map of {args.n} tiny items, Python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
