"""Calls to a distant endpoint: a warm call, a printed line, a map, through a link with delay.

The topology of RunPod, on loopback: one ``rpremote serve`` plays RunPod (control plane, job
API, workers next to it), and the client reaches it only through ``latency_proxy.py`` (50 ms
round trip by default), as target ``runpod`` with rpremote's ready image. Per kind of call:
time, and the HTTP requests the client sent through the link (so: round trips).

- warm trivial call: p50 of ``--n`` calls, and requests per call;
- a remote ``print``: from the worker printing the line to the client's reporter having it;
- ``map`` over ``--items`` tiny items: items/s and requests;
- ``map`` over ``--naps`` items of 2 ms each on 2 workers: items/s, against the 1000/s the
  workers can do at most (how much of their time the link leaves them).

Usage: .venv/bin/python bench/remote_link.py [--rtt-ms 50] [--n 20] [--items 2000]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cold_start import Rehearsal  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402

CLIENT = """
    import json, statistics, sys, time
    import rpremote
    from rpremote import config

    arrived = {}

    class Clock:
        def status(self, job, status, worker): pass
        def finished(self, job, status): pass
        def log(self, job, stream, text):
            for line in text.splitlines():
                if line.startswith("SENT "):
                    arrived[line] = time.time()

    config.configure(reporter=Clock(), quiet=True)

    @rpremote.remote(workers=(0, 2), idle_timeout=600)
    def trivial(x=1):
        return x

    @rpremote.remote(workers=(0, 2), idle_timeout=600)
    def say():
        import time
        line = f"SENT {time.time():.6f}"
        print(line, flush=True)
        time.sleep(1.0)
        return line

    @rpremote.remote(workers=(2, 2), idle_timeout=600)  # both up before the map starts
    def nap(x):
        import time
        time.sleep(0.002)
        return x

    def step(name):
        print("STEP " + name, flush=True)
        assert sys.stdin.readline().strip() == "GO"

    trivial(); say(); list(trivial.map(range(10))); list(nap.map(range(10)))  # workers warm
    step("call")
    samples = []
    for _ in range(N):
        t = time.perf_counter(); trivial(); samples.append((time.perf_counter() - t) * 1000)
    print("RESULT call " + json.dumps({"p50_ms": round(statistics.median(samples), 1)}))
    step("print")
    delays = []
    for _ in range(5):
        line = say()
        delays.append((arrived[line] - float(line.split()[1])) * 1000)
    print("RESULT print " + json.dumps({"p50_ms": round(statistics.median(delays), 1)}))
    step("map")
    t = time.perf_counter(); out = list(trivial.map(range(ITEMS)))
    assert out == list(range(ITEMS))
    print("RESULT map " + json.dumps({"items_per_s": round(ITEMS / (time.perf_counter() - t))}))
    step("map_2ms")
    t = time.perf_counter(); out = list(nap.map(range(NAPS)))
    rate = NAPS / (time.perf_counter() - t)
    # 2 workers, 2 ms an item: the workers can do at most 1000 items/s
    print("RESULT map_2ms " + json.dumps({"items_per_s": round(rate),
                                           "of_workers_max": f"{rate / 1000:.0%}"}))
    step("end")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rtt-ms", type=float, default=50.0)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--naps", type=int, default=1000, help="items of the map of 2 ms items")
    args = p.parse_args()
    from rpremote import platform as rp

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    code = (textwrap.dedent(CLIENT).replace("range(N)", f"range({args.n})")
            .replace("ITEMS", str(args.items)).replace("NAPS", str(args.naps)))
    results: dict[str, dict] = {}
    counts: dict[str, collections.Counter] = {}
    with Rehearsal() as rehearsal:
        port = int(rehearsal.url.rsplit(":", 1)[1])
        with LatencyProxy(port, rtt_ms=args.rtt_ms) as proxy:
            env = {**rehearsal.env(Path(tempfile.mkdtemp(prefix="rpremote-link-")), {}),
                   "RPREMOTE_RUNPOD_API": proxy.url, "RPREMOTE_RUNPOD_QUEUE": proxy.url,
                   "RPREMOTE_IMAGE": rp.worker_image(python)}
            client = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            phase = None
            for line in client.stdout:
                if line.startswith("RESULT "):
                    _, name, values = line.split(" ", 2)
                    results[name] = json.loads(values)
                elif line.startswith("STEP "):
                    if phase:
                        counts[phase] = collections.Counter(
                            f"{m} {_shape(path)}" for m, path in proxy.reset())
                    proxy.reset()
                    phase = line.split()[1]
                    client.stdin.write("GO\n")
                    client.stdin.flush()
            client.wait(600)
    print(f"through a link of {args.rtt_ms:g} ms round trip (target runpod, ready image)")
    per = {"call": args.n, "print": 5, "map": 1, "map_2ms": 1}
    for name, values in results.items():
        sent = counts.get(name, collections.Counter())
        total = sum(sent.values())
        kinds = ", ".join(f"{k} x{v}" for k, v in sent.most_common())
        print(f"  {name:6} {values}  requests: {total / per[name]:.1f} per "
              f"{'call' if per[name] > 1 else 'map'}  ({kinds})")
    return 0


def _shape(path: str) -> str:
    """``/v2/<id>/status/<job>`` -> ``/v2/{id}/status/{job}``: requests grouped by kind."""
    parts = path.split("?")[0].split("/")
    if len(parts) > 3 and parts[1] == "v2" and parts[2] not in rp_names():
        parts[2] = "{id}"
        if len(parts) > 4:
            parts[4] = "{job}"
    return "/".join(parts)


def rp_names() -> frozenset:
    from rpremote import platform as rp

    return rp.REST_V2_NAMES


if __name__ == "__main__":
    sys.exit(main())
