"""The default worker image on RunPod, rehearsed for real: a bare official image bootstraps
rpremote, at this client's exact version, into a clean environment.

``rpremote serve`` runs an official image's start command in a virtual environment with the
image's Python and none of this machine's packages, a fresh HOME per worker (its container
disk). The client ships its own build of rpremote through the offload store (moto's S3 server
here), pinned to its own dependency versions; pip fetches those from the package index (its
cache stands for the registry's bandwidth). With a network volume attached, the first worker
installs onto the volume and the next cold worker installs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import start_emulator
from test_runpod_target import KEY, rehearsal_env, run_script

import rpremote
from rpremote import platform as rp
from rpremote.client.control import ControlPlane
from rpremote.client.control.ours import is_ours

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
pytestmark = pytest.mark.skipif(PYTHON not in rp.OFFICIAL_IMAGE_OF_PYTHON,
                                reason=f"no official RunPod image has Python {PYTHON}")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("bootstrap-emulator"), "--api-key", KEY)
    try:
        yield emu
    finally:
        with ControlPlane(emu.url, emu.key) as cp:
            for e in cp.endpoints.list():
                cp.endpoints.delete(e)
        emu.stop()


@pytest.fixture
def bucket(s3_server):
    name = f"rpremote-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


PROBE = """
    import sys, time
    import rpremote

    @rpremote.remote(gpu="ADA_24", workers=(0, 2), idle_timeout=IDLE)
    def where(blob):
        import os, sys
        import rpremote
        print("worker has", len(blob), "bytes")
        return {"prefix": sys.prefix, "rpremote": rpremote.__file__,
                "version": rpremote.__version__, "home": os.environ["HOME"]}

    started = time.monotonic()
    out = where(b"x" * (12 * 1024 * 1024))  # over the job API's 10 MB: through the store
    out["seconds"] = round(time.monotonic() - started, 1)
    print("RESULT", __import__("json").dumps(out))
"""


def probe(emu, home, s3_server, bucket, idle=5, extra=None):
    env = {**rehearsal_env(emu, home), **s3_server.env(),
           "RPREMOTE_STORE": f"s3://{bucket}/rp", **(extra or {})}
    result = run_script(PROBE.replace("IDLE", str(idle)), env, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), result, env


def test_a_bare_official_image_bootstraps_rpremote_and_runs_the_call(emulator, tmp_path,
                                                                      s3_server, bucket):
    out, result, env = probe(emulator, tmp_path / "home", s3_server, bucket)
    # The worker ran the image's clean Python, with rpremote this client's version, installed
    # on its own container disk (no volume), not this machine's.
    assert out["prefix"].startswith(str(emulator.state / "images"))
    assert out["version"] == rpremote.__version__
    assert out["rpremote"].startswith(out["home"]) and "/rpremote/deps/" in out["rpremote"]
    assert "worker has 12582912 bytes" in result.stdout + result.stderr
    # Said while it happened: the endpoint, the start, the bootstrap's steps.
    err = result.stderr
    assert "creating endpoint rpremote-ada-24-" in err
    assert "uploading rpremote's own build" in err
    assert "worker: installing" in err
    # The endpoint as the API has it: the official image, the bootstrap as its command.
    with ControlPlane(emulator.url, emulator.key) as cp:
        [ep] = [e for e in cp.endpoints.list() if is_ours(e)]
    assert ep["image"] == rp.OFFICIAL_IMAGE_OF_PYTHON[PYTHON].tag
    assert ep["args"].startswith("python -c ")
    plan = json.loads(ep["env"]["RPREMOTE_BOOTSTRAP"])
    assert plan["version"] == rpremote.__version__ and plan["wheel"]["sha256"]
    assert any(r.startswith("cloudpickle==") for r in plan["requirements"])
    # The wheel went into the store once, content-addressed.
    digest = plan["wheel"]["sha256"]
    s3_server.client().head_object(Bucket=bucket, Key=f"rp/{digest[:2]}/{digest}")
    # The journal has the job with what it cost at the pool's price.
    jobs = subprocess.run([sys.executable, "-m", "rpremote", "jobs", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    [row] = json.loads(jobs.stdout)
    assert row["target"] == "runpod" and row["cost_usd"] > 0
    assert KEY not in result.stdout + result.stderr + jobs.stdout


def test_with_a_network_volume_the_next_cold_worker_installs_nothing(emulator, tmp_path,
                                                                       s3_server, bucket):
    with ControlPlane(emulator.url, emulator.key) as cp:
        volume = cp.volumes.create({"name": "rpremote-cache", "size": 10, "dataCenter": "EU-RO-1"})
    try:
        extra = {"RPREMOTE_VOLUME": volume["id"]}
        first, result, _ = probe(emulator, tmp_path / "home", s3_server, bucket, idle=1,
                                 extra=extra)
        assert "/rpremote/deps/" in first["rpremote"]
        assert first["rpremote"].startswith(str(emulator.state / "volumes" / volume["id"]))
        with ControlPlane(emulator.url, emulator.key) as cp:
            [ep] = [e for e in cp.endpoints.list()
                    if is_ours(e) and e["networkVolumes"] == [volume["id"]]]
            deadline = time.monotonic() + 60
            while cp.endpoints.workers(ep)["workers"] and time.monotonic() < deadline:
                time.sleep(0.5)  # the worker idles out (1 s): the next call is cold again
            assert not cp.endpoints.workers(ep)["workers"]
        second, result, _ = probe(emulator, tmp_path / "home", s3_server, bucket, idle=1,
                                  extra=extra)
        assert second["home"] != first["home"]  # another worker, a fresh container disk
        assert second["rpremote"] == first["rpremote"]  # ... and rpremote from the volume
        logs = "".join(p.read_text(errors="replace")
                       for p in (emulator.state / "logs" / ep["id"]).glob("*.log"))
        assert "nothing to install" in logs  # said by the second worker's bootstrap
        assert second["seconds"] < first["seconds"]
    finally:
        with ControlPlane(emulator.url, emulator.key) as cp:
            for e in cp.endpoints.list():
                cp.endpoints.delete(e)
            cp.volumes.delete(volume)
