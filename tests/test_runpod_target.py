"""``RPREMOTE_TARGET=runpod`` rehearsed against ``rpremote serve``: real processes, real HTTP.

One emulator plays RunPod: its REST v2 control plane (``RPREMOTE_RUNPOD_API``) and its job API
(``RPREMOTE_RUNPOD_QUEUE``), with one key (``RUNPOD_API_KEY``). The client code is the one that
talks to RunPod; nothing is mocked. Most tests here use rpremote's own worker image
(``rpremote/worker:py3.11``, which the emulator runs as this interpreter's executor: a ready
image, fast); the official image's bootstrap into a clean environment is
``test_runpod_bootstrap.py``. Every endpoint a test makes is deleted by the fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import start_emulator, wait_for
from test_control_client import Recording, contract_problems

import rpremote
from rpremote import config
from rpremote import platform as rp
from rpremote.client import targets
from rpremote.client.control import ControlPlane
from rpremote.errors import ApiKeyError, InvalidRequest, JobCancelled, WorkersUnhealthy

KEY = "rpk-REHEARSAL-CANARY-0123456789"
PYTHON_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
READY_IMAGE = rp.worker_image(PYTHON_MINOR)
OTHER_IMAGE = "rpremote-tests/executor:2"  # mapped to the executor too, under another name


@pytest.fixture(scope="module")
def runpod_emulator(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("runpod-emulator"), "--api-key", KEY,
                         "--image", f"{OTHER_IMAGE}=python -m rpremote.executor")
    try:
        yield emu
    finally:
        emu.stop()


def rehearsal_env(emu, home: Path) -> dict[str, str]:
    return {"RPREMOTE_TARGET": "runpod", "RUNPOD_API_KEY": emu.key,
            "RPREMOTE_RUNPOD_API": emu.url, "RPREMOTE_RUNPOD_QUEUE": emu.url,
            "RPREMOTE_HOME": str(home), "HOME": str(home)}


@pytest.fixture
def rehearsal(runpod_emulator, tmp_path, monkeypatch):
    """This process set to the runpod target at the emulator; endpoints made are deleted."""
    home = tmp_path / "home"
    home.mkdir()
    for name, value in rehearsal_env(runpod_emulator, home).items():
        monkeypatch.setenv(name, value)
    for name in ("RPREMOTE_STORE", "RPREMOTE_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    targets.forget()
    config.reset()
    config.configure(quiet=False)
    cp = ControlPlane(runpod_emulator.url, runpod_emulator.key)
    before = {e["id"] for e in cp.endpoints.list()}
    try:
        yield runpod_emulator
    finally:
        targets.forget()
        config.reset()
        for e in cp.endpoints.list():
            if e["id"] not in before:
                cp.endpoints.delete(e)
        cp.close()


def plane(emu) -> ControlPlane:
    return ControlPlane(emu.url, emu.key)


def ours(emu) -> list[dict]:
    from rpremote.client.control.ours import is_ours

    with plane(emu) as cp:
        return [e for e in cp.endpoints.list() if is_ours(e)]


def run_script(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items()
                                  if k not in ("RPREMOTE_STORE", "RPREMOTE_IMAGE")}, **env})


SCRIPT = f"""
    import rpremote

    @rpremote.remote(gpu="ADA_24", workers=(0, 2), image={READY_IMAGE!r})
    def square(x):
        print("squaring", x)
        return x * x

    print("value", square(7))
"""


def test_a_scripts_first_call_makes_one_endpoint_and_a_second_process_reuses_it(
        runpod_emulator, tmp_path):
    env = rehearsal_env(runpod_emulator, tmp_path)
    first = run_script(SCRIPT, env)
    assert first.returncode == 0, first.stderr
    assert "value 49" in first.stdout and "squaring 7" in first.stdout + first.stderr
    assert "creating endpoint rpremote-ada-24-" in first.stderr
    made = ours(runpod_emulator)
    try:
        assert len(made) == 1
        with plane(runpod_emulator) as cp:
            ep = cp.endpoints.get(made[0]["id"])  # read back as the API has it
        assert ep["type"] == "QUEUE" and ep["image"] == READY_IMAGE
        assert ep["gpu"]["pools"] == ["ADA_24"] and ep["gpu"]["count"] == 1
        assert ep["workers"] == {"min": 0, "max": 2, "idleTimeout": rp.IDLE_TIMEOUT_DEFAULT_S}
        assert ep["timeout"] == rp.EXECUTION_TIMEOUT_DEFAULT_MS  # always sent (never 0)
        assert ep["flashboot"] == "FLASHBOOT"
        assert ep["scaling"]["type"] == "QUEUE_DELAY"
        assert ep["env"]["RPREMOTE_MANAGED"] == rpremote.__version__
        assert "RPREMOTE_SECRET" in ep["env"] and KEY not in json.dumps(ep["env"])
        second = run_script(SCRIPT, env)
        assert second.returncode == 0, second.stderr
        assert "value 49" in second.stdout and "creating endpoint" not in second.stderr
        assert [e["id"] for e in ours(runpod_emulator)] == [ep["id"]]
        for out in (first, second):
            assert KEY not in out.stdout + out.stderr
    finally:
        with plane(runpod_emulator) as cp:
            for e in ours(runpod_emulator):
                cp.endpoints.delete(e)


def test_racing_first_calls_make_one_endpoint(runpod_emulator, tmp_path):
    """Two processes of one machine (one lock) and one of another machine (its own data
    dir, so no shared lock): all end on one endpoint, the same one."""
    shared = {"RPREMOTE_SECRET": "one-secret-for-both-machines-0123456789"}
    env = {**rehearsal_env(runpod_emulator, tmp_path / "a"), **shared}
    other = {**rehearsal_env(runpod_emulator, tmp_path / "b"), **shared}
    code = SCRIPT.replace("workers=(0, 2)", "workers=(0, 1)") + """
    from rpremote.client import targets
    print("endpoint", targets.current()._endpoints.popitem()[1]["id"])
    """
    results: list[subprocess.CompletedProcess] = []
    threads = [threading.Thread(target=lambda e=e: results.append(run_script(code, e)))
               for e in (env, env, other)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            assert r.returncode == 0, r.stderr
            assert "value 49" in r.stdout
        ids = {line.split()[1] for r in results for line in r.stdout.splitlines()
               if line.startswith("endpoint ")}
        left = ours(runpod_emulator)
        assert len(ids) == 1 and [e["id"] for e in left] == list(ids)
    finally:
        with plane(runpod_emulator) as cp:
            for e in ours(runpod_emulator):
                cp.endpoints.delete(e)


def test_a_changed_image_patches_the_endpoint_and_changed_resources_add_one(rehearsal, capsys):
    @rpremote.remote(gpu="ADA_24", workers=(0, 1), image=READY_IMAGE)
    def which():
        import os
        return os.environ["RUNPOD_ENDPOINT_ID"]

    first = which()
    [ep] = ours(rehearsal)
    assert first == ep["id"] and ep["image"] == READY_IMAGE

    @rpremote.remote(gpu="ADA_24", workers=(0, 1), image=OTHER_IMAGE)
    def which_again():
        import os
        return os.environ["RUNPOD_ENDPOINT_ID"]

    assert which_again() == first  # the same endpoint, patched
    [patched] = ours(rehearsal)
    assert patched["id"] == first and patched["image"] == OTHER_IMAGE
    assert "updating endpoint" in capsys.readouterr().err

    @rpremote.remote(gpu="ADA_24", workers=(0, 2), image=OTHER_IMAGE)
    def bigger():
        import os
        return os.environ["RUNPOD_ENDPOINT_ID"]

    assert bigger() != first  # other resources: another endpoint
    assert len(ours(rehearsal)) == 2


def test_spawn_map_generator_and_cancel(rehearsal):
    config.configure(image=READY_IMAGE)

    @rpremote.remote(workers=(0, 2), idle_timeout=30)
    def double(x):
        return 2 * x

    @rpremote.remote(workers=(0, 2), idle_timeout=30)
    def count(n):
        for i in range(n):
            yield i

    @rpremote.remote(workers=(0, 2), idle_timeout=30)
    def sleepy():
        import time
        time.sleep(60)

    job = double.spawn(21)
    assert job.result(timeout=120) == 42
    assert list(double.map(range(10))) == [2 * i for i in range(10)]
    assert list(count.stream(4)) == [0, 1, 2, 3]
    slow = sleepy.spawn()
    wait_for(lambda: slow.status in ("IN_PROGRESS",), timeout=60, what="the job to run")
    slow.cancel()
    with pytest.raises(JobCancelled):
        slow.result(timeout=30)
    [ep] = ours(rehearsal)
    assert "cpu" in ep and "gpu" not in ep  # gpu=None: a CPU endpoint, never a GPU billed


def test_no_key_or_a_refused_key_fails_before_anything_is_made(rehearsal, monkeypatch):
    before = ours(rehearsal)

    @rpremote.remote(image=READY_IMAGE)
    def f():
        return 1

    monkeypatch.delenv("RUNPOD_API_KEY")
    targets.forget()
    with pytest.raises(ApiKeyError, match="RUNPOD_API_KEY"):
        f()
    monkeypatch.setenv("RUNPOD_API_KEY", "rpk-WRONG-0000")
    targets.forget()
    with pytest.raises(ApiKeyError) as refused:
        f()
    assert "rpk-WRONG-0000" not in str(refused.value) and KEY not in str(refused.value)
    assert ours(rehearsal) == before


def test_an_unknown_gpu_pool_is_refused_by_the_api_and_nothing_is_made(rehearsal, monkeypatch):
    """A pool this client knows and the API does not (a client newer than the platform)."""
    pool = rp.GpuPool("FUTURE_96", 96, ("NVIDIA Future 96GB",), 0.001, 0.0008)
    monkeypatch.setitem(rp.GPU_POOLS, "FUTURE_96", pool)
    from rpremote import resources

    monkeypatch.setitem(resources._CANONICAL, "future_96", "FUTURE_96")
    before = ours(rehearsal)

    @rpremote.remote(gpu="FUTURE_96", image=READY_IMAGE)
    def f():
        return 1

    with pytest.raises(InvalidRequest) as refused:
        f()
    assert refused.value.status == 422 and "FUTURE_96" in str(refused.value)
    assert "Nothing was created" in str(refused.value)
    assert ours(rehearsal) == before


def test_an_image_that_cannot_start_says_why_and_leaves_nothing(rehearsal):
    @rpremote.remote(image="rpremote-tests/no-such-image:1")
    def f():
        return 1

    started = time.monotonic()
    with pytest.raises(WorkersUnhealthy) as failed:
        f()
    assert "no-such-image" in str(failed.value) and "cancelled" in str(failed.value)
    assert time.monotonic() - started < 60
    assert ours(rehearsal) == []  # the endpoint the call made is gone


def test_every_control_plane_request_fits_the_documented_schemas(rehearsal, monkeypatch):
    recording = Recording()
    original = ControlPlane.from_settings.__func__

    def recorded(cls, *, transport=None):
        return original(cls, transport=recording)

    monkeypatch.setattr(ControlPlane, "from_settings", classmethod(recorded))

    @rpremote.remote(gpu=["NVIDIA GeForce RTX 4090", "AMPERE_24"], workers=(0, 1),
                     image=READY_IMAGE)
    def f():
        return 1

    assert f() == 1
    config.configure(image=OTHER_IMAGE)

    @rpremote.remote(gpu=["NVIDIA GeForce RTX 4090", "AMPERE_24"], workers=(0, 1))
    def g():
        return 2

    assert g() == 2  # a PATCH
    sent = recording.sent()
    assert ("POST", "/v2/serverless") in sent and any(m == "PATCH" for m, _ in sent)
    assert contract_problems(recording.requests) == []
    create = next(r for r in recording.requests if r["method"] == "POST")
    assert create["body"]["timeout"] > 0
    assert create["body"]["gpu"]["pools"] == ["ADA_24", "AMPERE_24"]


# -- the create body, as data (no server needed) -------------------------------------------------

def test_gpu_types_map_to_their_pools_and_exclude_the_pools_other_types():
    from rpremote.client.runpod import gpu_fields
    from rpremote.resources import make_resources

    named = gpu_fields(make_resources(gpu=["NVIDIA RTX A5000", "NVIDIA L4"], gpu_count=2))
    assert named == {"pools": ["AMPERE_24"], "count": 2,
                     "excludedTypes": ["NVIDIA GeForce RTX 3090"]}
    pool_too = gpu_fields(make_resources(gpu=["AMPERE_24", "NVIDIA L4", "ADA_24"]))
    assert pool_too == {"pools": ["AMPERE_24", "ADA_24"], "count": 1}  # the pool wins


def test_a_network_volume_store_attaches_the_volume_in_its_data_center():
    from rpremote.client.runpod import endpoint_body
    from rpremote.client.runpod_image import choose
    from rpremote.resources import make_resources

    body = endpoint_body(make_resources(gpu="ADA_24"), choose(READY_IMAGE), {"A": "1"},
                         ("agv6w2qcg7", "EU-RO-1"))
    assert body["networkVolumes"] == ["agv6w2qcg7"] and body["dataCenterIds"] == ["EU-RO-1"]
    assert body["timeout"] > 0 and "args" not in body  # a ready image: its own command
    official = endpoint_body(make_resources(), choose(None), {}, None)
    assert official["args"].startswith("python -c ") and official["cpu"][0]["vcpuCount"] >= 2


def test_an_image_with_another_python_is_refused_before_anything_is_sent():
    from rpremote.client.runpod_image import choose
    from rpremote.errors import VersionMismatch

    other = next(i for i in rp.OFFICIAL_IMAGES if i.python != PYTHON_MINOR)
    with pytest.raises(VersionMismatch) as refused:
        choose(other.tag)
    assert other.python in str(refused.value) and PYTHON_MINOR in str(refused.value)
