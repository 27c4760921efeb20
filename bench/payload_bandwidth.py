"""MB/s of a big array's round trip (argument out, a new array back), in one run.

1. rpremote ``@remote`` on the local target, offload store by directory (the default here);
2. the same with the offload store over HTTP on both sides (``RPREMOTE_BLOB_TRANSPORT=http``);
2b. the same with an S3 store (``RPREMOTE_STORE=s3://...``): moto's S3 server on loopback,
   started and stopped here by its PID (what a cloud user's bucket costs, minus the network),
   and a minimal in-memory S3 server (``handlers/mini_s3.py``: the floor, the S3 protocol and
   rpremote's side of it); each rpremote row says the CPU time its servers (the emulator; the
   S3 server) spent per fresh-array call;
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


def bench_rpremote(make, mib: float, http: bool, store: str | None = None,
                   server_pid: int | None = None) -> dict[str, object]:
    from rpremote import configure, remote
    from rpremote.client import targets

    targets.forget()
    configure(store=store or "none")
    if http:
        os.environ["RPREMOTE_BLOB_TRANSPORT"] = "http"
    else:
        os.environ.pop("RPREMOTE_BLOB_TRANSPORT", None)
    env = {"RPREMOTE_BLOB_TRANSPORT": "http"} if http else {}
    f = remote(workers=(1, 1), idle_timeout=120, env=env)(plus_one)
    f(make(-1)[:10])  # warm: the worker is up
    emulator = targets.current().emulator.pid
    before = cpu_s(emulator), cpu_s(server_pid) if server_pid else 0.0
    out: dict[str, object] = {"fresh arrays": rate(make, f, mib)}
    out["emulator CPU per call, ms"] = round(1000 * (cpu_s(emulator) - before[0]) / REPEAT)
    if server_pid:
        out["S3 server CPU per call, ms"] = round(1000 * (cpu_s(server_pid) - before[1]) / REPEAT)
    same = make(99)
    f(same)
    out["repeated argument"] = rate(lambda i: same, f, mib)
    store = targets.current().blobs.store
    out["store"] = repr(store)
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` (all its threads) has used so far; NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoopbackS3:
    """An S3 server on a free loopback port, started here and stopped by its PID: moto's
    (no request recording), or ``handlers/mini_s3.py`` (the floor: objects in memory, no
    checks)."""

    KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1"}

    def __init__(self, kind: str):
        self.kind = kind

    def __enter__(self) -> "LoopbackS3":
        import subprocess

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = ([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
               if self.kind == "moto" else
               [sys.executable, str(Path(__file__).parent / "handlers" / "mini_s3.py"), str(port)])
        self.log = tempfile.NamedTemporaryFile(prefix=f"rpremote-bench-{self.kind}-", suffix=".log")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                httpx.head(f"{self.url}/bench", timeout=2)
                break
            except httpx.TransportError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"the {self.kind} S3 server did not start (moto: pip "
                                       "install -c requirements/lock.txt -e '.[dev]')")
                time.sleep(0.1)
        os.environ.update(self.KEYS, AWS_ENDPOINT_URL_S3=self.url)
        httpx.put(f"{self.url}/bench").raise_for_status()  # CreateBucket (no keys checked)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def bench_s3(make, mib: float, kind: str) -> dict[str, object] | str:
    """The rpremote rows with ``RPREMOTE_STORE=s3://bench/pieces`` on a loopback S3 server;
    with the server's CPU time per call of the fresh-array rounds (the "fresh arrays" ones)."""
    from rpremote.client import stores

    stores.forget()  # the same URL on another server: made and checked again
    try:
        with LoopbackS3(kind) as server:
            return bench_rpremote(make, mib, http=False, store="s3://bench/pieces",
                                  server_pid=server.proc.pid)
    except (ImportError, RuntimeError) as e:
        return str(e)
    finally:
        from rpremote import configure

        configure(store="none")


HTTP_ROW = "rpremote @remote (offload store: HTTP)"
S3_MOTO = "rpremote @remote (offload store: S3, moto on loopback)"
S3_FLOOR = "rpremote @remote (offload store: S3, a minimal in-memory S3 server on loopback)"


def _ratio(results: dict[str, object]) -> None:
    """The S3 rows' median time over the HTTP store's (the goal: within 2x on loopback)."""
    for row, name in ((S3_MOTO, "moto"), (S3_FLOOR, "minimal server")):
        try:
            http = results[HTTP_ROW]["fresh arrays"]["median_ms"]  # type: ignore[index]
            s3 = results[row]["fresh arrays"]["median_ms"]  # type: ignore[index]
        except (KeyError, TypeError):
            continue
        results[f"S3 ({name}) / HTTP store, median time"] = round(s3 / http, 2)


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
        results[S3_MOTO] = bench_s3(make, mib, "moto")
        results[S3_FLOOR] = bench_s3(make, mib, "mini")
        _ratio(results)
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
