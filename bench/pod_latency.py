"""The Pod target, rehearsed: warm per-call latency through the Pod proxy beside the local
target, and the time from ``rpremote pod up`` to the first result, in one run.

One ``rpremote serve`` plays RunPod (its control plane, a Pod as a real process running
``rpremote serve`` with the ready image, and RunPod's Pod proxy at ``/pod-proxy/...``). Each
target is timed in a client process of its own: ``--n`` warm trivial calls (p50, p99), after
warm-up. The Pod's path has one hop more than the local target (client -> proxy -> the Pod's
server), which is what the ratio shows; on RunPod the proxy is across the internet, so add
the round trips there (``bench/`` has no latency injector yet).

Usage: .venv/bin/python bench/pod_latency.py [--n 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cold_start import Rehearsal  # noqa: E402

TIMED = """
    import json, statistics, time
    import rpremote

    @rpremote.remote(idle_timeout=60)
    def trivial(x=1):
        return x

    for _ in range(20):
        trivial()
    samples = []
    for _ in range(N):
        t = time.perf_counter()
        trivial()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    print("RESULT " + json.dumps({"p50_ms": round(statistics.median(samples), 2),
                                  "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2)}))
"""

FIRST = """
    import json, time
    import rpremote

    @rpremote.remote()
    def trivial(x=1):
        return x

    t = time.perf_counter()
    trivial()
    print("RESULT " + json.dumps({"first_call_s": round(time.perf_counter() - t, 2)}))
"""


def run(code: str, env: dict[str, str], n: int = 0) -> dict:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code).replace("N)", f"{n})")],
                       env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(r.stdout + r.stderr)
    return json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    from rpremote import platform as rp

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    results: dict[str, dict] = {}
    with Rehearsal() as rehearsal:
        home = Path(tempfile.mkdtemp(prefix="rpremote-bench-pod-"))
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("RPREMOTE_", "RUNPOD_"))}
        local = {**base, "RPREMOTE_HOME": str(home / "local")}
        pod = {**rehearsal.env(home / "pod", {}), "RPREMOTE_TARGET": "pod",
               "RPREMOTE_POD_PROXY": rehearsal.url + "/pod-proxy/{pod_id}-{port}",
               "RPREMOTE_IMAGE": rp.worker_image(python)}
        started = time.monotonic()
        up = subprocess.run([sys.executable, "-m", "rpremote", "pod", "up", "--gpu",
                             "NVIDIA RTX A5000", "--idle-stop", "10m"], env=pod,
                            capture_output=True, text=True, timeout=900)
        if up.returncode:
            raise RuntimeError(up.stdout + up.stderr)
        up_s = time.monotonic() - started
        first = run(FIRST, pod)
        results["pod up -> ready"] = {"s": round(up_s, 2)}
        results["pod up -> first result"] = {
            "s": round(time.monotonic() - started, 2), "first call": first["first_call_s"]}
        results["local target, warm call"] = run(TIMED, local, args.n)
        results["pod target (through the proxy), warm call"] = run(TIMED, pod, args.n)
        try:
            subprocess.run([sys.executable, "-m", "rpremote", "pod", "down", "--yes"], env=pod,
                           capture_output=True, timeout=120)
        finally:
            state = home / "local" / "emulator" / "server.json"
            if state.exists():  # the local target's auto-started emulator, by its pid
                os.kill(json.loads(state.read_text())["pid"], 15)
    print(f"the pod target, rehearsed (Python {python}; {args.n} warm calls each)")
    for name, values in results.items():
        print(f"  {name:45} " + "  ".join(f"{k} {v}" for k, v in values.items()))
    ratio = (results["pod target (through the proxy), warm call"]["p50_ms"]
             / results["local target, warm call"]["p50_ms"])
    print(f"  pod / local warm p50: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
