"""``target="pod"`` rehearsed against ``rpremote serve``: real processes, real HTTP, the proxy.

The emulator plays RunPod's control plane (``/v2/pods``), runs each Pod as a real process (the
Pod's start command: here ``rpremote serve`` inside it, with its own executor workers), and
serves RunPod's Pod proxy at ``/pod-proxy/{pod_id}-{port}``. The client code is the one that
talks to RunPod: only ``RPREMOTE_RUNPOD_API``, ``RPREMOTE_POD_PROXY`` and the key differ.
Every Pod a test makes is terminated at its end; none is left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import start_emulator

from rpremote import platform as rp
from rpremote.client.control import ControlPlane

KEY = "rpk-POD-REHEARSAL-CANARY-42"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
BUSY = "NVIDIA GeForce RTX 4090"  # no capacity in this emulator: the first candidate fails
FREE = "NVIDIA RTX A5000"
PROXY_TIMEOUT_S = 4  # RunPod's proxy: 100 s (524), shortened for the tests


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("pod-emulator"), "--api-key", KEY,
                         "--pod-capacity", f"{BUSY}=0",
                         "--pod-proxy-timeout", str(PROXY_TIMEOUT_S))
    try:
        yield emu
    finally:
        with ControlPlane(emu.url, emu.key) as cp:
            for pod in cp.request("GET", "/v2/pods").get("pods", []):
                cp.request("DELETE", f"/v2/pods/{pod['id']}")
        emu.stop()


def pod_env(emu, home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RPREMOTE_STORE", "RPREMOTE_IMAGE", "RPREMOTE_TARGET")}
    return {**env, "RPREMOTE_TARGET": "pod", "RUNPOD_API_KEY": emu.key,
            "RPREMOTE_RUNPOD_API": emu.url,
            "RPREMOTE_POD_PROXY": emu.url + "/pod-proxy/{pod_id}-{port}",
            "RPREMOTE_IMAGE": rp.worker_image(PYTHON),
            "RPREMOTE_HOME": str(home), "HOME": str(home)}


def cli(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpremote", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def script(env, code, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                          capture_output=True, timeout=timeout)


CALL = """
    import rpremote

    @rpremote.remote(gpu="NVIDIA RTX A5000")
    def where():
        import os
        print("hello from the Pod")
        return os.environ.get("RPREMOTE_POD_ID")

    print("POD", where())
"""

CELL = """
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "rpremote")
    ip.run_cell_magic("runpod", "", "import os\\nprint('CELL', os.environ.get('RPREMOTE_POD_ID'))")
"""


def the_pod(emu) -> dict | None:
    with ControlPlane(emu.url, emu.key) as cp:
        pods = cp.request("GET", "/v2/pods").get("pods", [])
    return pods[0] if pods else None


def wait_status(emu, pod_id, status, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ControlPlane(emu.url, emu.key) as cp:
            pod = cp.request("GET", f"/v2/pods/{pod_id}")
        if pod["status"] == status:
            return pod
        time.sleep(0.5)
    raise AssertionError(f"Pod {pod_id} still {pod['status']}, not {status}")


def test_up_run_reuse_idle_stop_start_down(emulator, tmp_path):
    env = pod_env(emulator, tmp_path / "home")
    up = cli(env, "pod", "up", "--gpu", f"{BUSY},{FREE}", "--idle-stop", "15s")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"refused {BUSY}" in up.stderr and "trying the next GPU type" in up.stderr
    pod = the_pod(emulator)
    assert pod["gpu"]["id"] == FREE and pod["status"] == "RUNNING"
    try:
        first = script(env, CALL)
        assert first.returncode == 0, first.stderr
        assert f"POD {pod['id']}" in first.stdout and "hello from the Pod" in first.stdout
        # A job longer than the proxy's limit is followed by short polls, transparently.
        slow = script(env, CALL.replace('print("hello from the Pod")',
                                        f'import time; time.sleep({PROXY_TIMEOUT_S + 3})'))
        assert slow.returncode == 0 and f"POD {pod['id']}" in slow.stdout, slow.stderr
        cell = script({**env, "HOME": str(tmp_path / "other")}, CELL)  # another process
        assert cell.returncode == 0, cell.stderr
        assert f"CELL {pod['id']}" in cell.stdout
        refused = script(env, CALL.replace("NVIDIA RTX A5000", "NVIDIA H100 80GB HBM3"))
        assert refused.returncode != 0 and "the Pod has 1 x NVIDIA RTX A5000" in refused.stderr
        status = cli(env, "pod", "status")
        assert status.returncode == 0 and pod["id"] in status.stdout and "RUNNING" in status.stdout
        # No requests for the idle time: the Pod stops itself, through the API.
        stopped = wait_status(emulator, pod["id"], "EXITED", timeout=120)
        assert stopped["cost"] == 0
        after = script(env, CALL)
        assert after.returncode != 0
        assert "EXITED" in after.stderr and "rpremote pod up" in after.stderr
        again = cli(env, "pod", "up")
        assert again.returncode == 0, again.stderr
        assert "starting Pod" in again.stderr
        assert script(env, CALL).returncode == 0
        jobs = cli(env, "jobs", "--json")
        rows = json.loads(jobs.stdout)
        assert rows and all(r["target"] == "pod" for r in rows)
        down = cli(env, "pod", "down", "--yes")
        assert down.returncode == 0 and "terminated" in down.stdout
        assert the_pod(emulator) is None
        texts = [up.stdout, up.stderr, first.stdout, first.stderr, status.stdout,
                 emulator.output()]
        server_key = pod["env"]["RPREMOTE_API_KEY"]
        for text in texts:
            assert KEY not in text and server_key not in text
    finally:
        pod = the_pod(emulator)
        if pod:
            with ControlPlane(emulator.url, emulator.key) as cp:
                cp.request("DELETE", f"/v2/pods/{pod['id']}")


def test_max_hours_stops_a_busy_pod_and_the_caller_is_told(emulator, tmp_path):
    env = pod_env(emulator, tmp_path / "home")
    up = cli(env, "pod", "up", "--gpu", FREE, "--max-hours", "0.006")  # ~22 s
    assert up.returncode == 0, up.stderr
    pod = the_pod(emulator)
    try:
        busy = script(env, """
            import rpremote

            @rpremote.remote()
            def forever():
                import time
                time.sleep(600)

            forever()
        """, timeout=200)
        assert busy.returncode != 0
        assert "--max-hours" in busy.stderr and "rpremote pod up" in busy.stderr
        wait_status(emulator, pod["id"], "EXITED", timeout=90)
    finally:
        with ControlPlane(emulator.url, emulator.key) as cp:
            cp.request("DELETE", f"/v2/pods/{pod['id']}")


def test_a_pod_on_the_default_official_image_bootstraps_and_serves(emulator, tmp_path,
                                                                    s3_server):
    """No image set: the official image with this Python; its start command installs this
    rpremote (shipped through the S3 store) into the Pod's clean environment, then serves."""
    if PYTHON not in rp.OFFICIAL_IMAGE_OF_PYTHON:
        pytest.skip(f"no official RunPod image has Python {PYTHON}")
    bucket = f"rpremote-pod-{os.getpid()}"
    s3_server.client().create_bucket(Bucket=bucket)
    env = {**pod_env(emulator, tmp_path / "home"), **s3_server.env(),
           "RPREMOTE_STORE": f"s3://{bucket}/pod"}
    env.pop("RPREMOTE_IMAGE")
    up = cli(env, "pod", "up", "--gpu", FREE, "--idle-stop", "10m", timeout=400)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "installing" in up.stderr  # the Pod's log, shown while it starts
    pod = the_pod(emulator)
    try:
        assert pod["image"] == rp.OFFICIAL_IMAGE_OF_PYTHON[PYTHON].tag
        first = script(env, CALL)
        assert first.returncode == 0, first.stderr
        assert f"POD {pod['id']}" in first.stdout
    finally:
        with ControlPlane(emulator.url, emulator.key) as cp:
            cp.request("DELETE", f"/v2/pods/{pod['id']}")
