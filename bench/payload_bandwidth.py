"""MB/s of a big array's round trip (argument out, a new array back), in one run.

1. rpremote ``@remote`` on the local target, offload store by directory (the default here);
2. the same with the offload store over HTTP on both sides (``RPREMOTE_BLOB_TRANSPORT=http``);
3. the runpod SDK's own path: the array base64'd into the JSON input of ``/runsync`` and back
   (a plain handler behind the same emulator; what a hand-written RunPod worker does);
4. ipyparallel ``DirectView.apply_sync`` with one engine (zmq, zero-copy buffers);
5. ``ProcessPoolExecutor(1).submit().result()`` (pickle through a pipe);
6. raw loopback TCP: the bytes sent to an echo server process and read back (the floor).

Every contender computes ``a + 1`` on a fresh array each round, so no cache or content
address can skip a transfer (rpremote would skip a repeated one; that is measured apart as
"repeated argument").  MB/s = array MiB / seconds for the whole call.

Usage: .venv/bin/python bench/payload_bandwidth.py [--mib 64] [--repeat 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPEAT = 5


def plus_one(a):
    return a + 1


def rate(make, call, mib: float) -> dict[str, float]:
    """MiB/s over ``REPEAT`` calls on fresh arrays: median and best."""
    times = []
    for i in range(REPEAT):
        a = make(i)
        t = time.perf_counter()
        b = call(a)
        times.append(time.perf_counter() - t)
        assert b.shape == a.shape and b[1] == a[1] + 1, "wrong result"
    times.sort()
    median = times[len(times) // 2]
    return {"median_MB_per_s": round(mib / median), "best_MB_per_s": round(mib / times[0]),
            "median_ms": round(median * 1000, 1)}


def maker(n: int):
    base = np.random.default_rng(0).random(n)
    return lambda i: base + (i + 1) * 1000.0  # new content (and digest) every round


def bench_rpremote(make, mib: float, http: bool) -> dict[str, object]:
    from rpremote import remote
    from rpremote.client import targets

    targets.forget()
    if http:
        os.environ["RPREMOTE_BLOB_TRANSPORT"] = "http"
    else:
        os.environ.pop("RPREMOTE_BLOB_TRANSPORT", None)
    env = {"RPREMOTE_BLOB_TRANSPORT": "http"} if http else {}
    f = remote(workers=(1, 1), idle_timeout=120, env=env)(plus_one)
    f(make(-1)[:10])  # warm: the worker is up
    out: dict[str, object] = {"fresh arrays": rate(make, f, mib)}
    same = make(99)
    f(same)
    out["repeated argument"] = rate(lambda i: same, f, mib)
    store = targets.current().blobs.store
    out["store"] = repr(store)
    return out


def bench_sdk_base64(make, mib: float) -> dict[str, object]:
    import httpx
    from rpremote.client import targets

    emulator = targets.current().emulator
    handler = Path(__file__).parent / "handlers" / "b64_array.py"
    spec = {"id": "bench-b64", "workerCmd": f"{sys.executable} {handler}", "workersMin": 1,
            "workersMax": 1, "idleTimeout": 120}
    headers = {"Authorization": f"Bearer {emulator.key}"}
    httpx.put(f"{emulator.url}/rpremote/v1/endpoints/bench-b64", json=spec, headers=headers).raise_for_status()
    client = httpx.Client(timeout=600, headers=headers)

    def call(a):
        body = {"input": {"array": base64.b64encode(a.tobytes()).decode("ascii")}}
        r = client.post(f"{emulator.url}/v2/bench-b64/runsync?wait=300000", json=body)
        st = r.json()
        while st.get("status") not in ("COMPLETED", "FAILED"):
            st = client.get(f"{emulator.url}/v2/bench-b64/status/{st['id']}").json()
            time.sleep(0.05)
        return np.frombuffer(base64.b64decode(st["output"]["array"]), dtype=np.float64)

    call(make(-1)[:10])
    # The platform refuses /runsync bodies over 20 MB; the emulator too. Measure within it.
    small_n = (12 * 1024 * 1024) // 8
    small = lambda i: make(i)[:small_n]
    return {"12 MiB (20 MB /runsync limit)": rate(small, call, 12.0)}


def bench_ipyparallel(make, mib: float) -> dict[str, object] | str:
    try:
        import ipyparallel as ipp
    except ImportError:
        return "not installed (pip install ipyparallel)"
    cluster = ipp.Cluster(n=1, log_level=40)
    rc = cluster.start_and_connect_sync()
    try:
        view = rc[:]
        view.apply_sync(plus_one, make(-1)[:10])
        return rate(make, lambda a: view.apply_sync(plus_one, a)[0], mib)
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def bench_process_pool(make, mib: float) -> dict[str, float]:
    with ProcessPoolExecutor(1) as pool:
        pool.submit(plus_one, make(-1)[:10]).result()
        return rate(make, lambda a: pool.submit(plus_one, a).result(), mib)


def _echo_server(port_out) -> None:
    """Echo length-prefixed messages back; its own process, so no GIL is shared with the caller."""
    server = socket.create_server(("127.0.0.1", 0))
    port_out.put(server.getsockname()[1])
    conn, _ = server.accept()
    with conn:
        while True:
            head = conn.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            n = int.from_bytes(head, "big")
            buf = bytearray(n)
            view = memoryview(buf)
            got = 0
            while got < n:
                got += conn.recv_into(view[got:])
            conn.sendall(buf)


def bench_loopback(make, mib: float) -> dict[str, float]:
    """Bytes to an echo server process over 127.0.0.1 and back: no pickling, same ``+ 1``."""
    import multiprocessing

    ports = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_echo_server, args=(ports,), daemon=True)
    proc.start()
    sock = socket.create_connection(("127.0.0.1", ports.get(timeout=30)))

    def call(a):
        data = memoryview(a).cast("B")
        sock.sendall(len(data).to_bytes(8, "big"))
        sock.sendall(data)
        buf = bytearray(data.nbytes)
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            got += sock.recv_into(view[got:])
        return np.frombuffer(buf, dtype=np.float64) + 1  # the same "+1" as the others

    try:
        return rate(make, call, mib)
    finally:
        sock.close()
        proc.join(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=REPEAT)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    globals()["REPEAT"] = args.repeat
    make = maker(args.mib * 1024 * 1024 // 8)
    mib = float(args.mib)

    home = tempfile.mkdtemp(prefix="rpremote-bench-")
    os.environ["RPREMOTE_HOME"] = home
    results: dict[str, object] = {}
    try:
        results["rpremote @remote (offload store: directory)"] = bench_rpremote(make, mib, http=False)
        results["rpremote @remote (offload store: HTTP)"] = bench_rpremote(make, mib, http=True)
        results["runpod SDK, base64 in JSON (/runsync)"] = bench_sdk_base64(make, mib)
    finally:
        state = Path(home) / "emulator" / "server.json"
        if state.exists():
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
    results["ipyparallel DirectView.apply_sync (1 engine)"] = bench_ipyparallel(make, mib)
    results["ProcessPoolExecutor(1).submit"] = bench_process_pool(make, mib)
    results["raw loopback TCP echo"] = bench_loopback(make, mib)

    print(f"{args.mib} MiB float64 array round trip (a + 1), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus, {REPEAT} rounds")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
