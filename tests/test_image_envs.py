"""Official RunPod images run for real in `rpremote serve`: the endpoint's own start command, in
a clean environment standing for the image (a virtual environment of the image's Python, with
pip and none of this machine's packages), a fresh container disk (HOME) per worker, and the
endpoint's network volume as a directory (RPREMOTE_VOLUME_MOUNT). Real processes over real
HTTP: endpoints are made through the control plane.

One state directory serves the module, so the clean environment is made once; each test has
an emulator of its own on it, and deletes what it made, so the next starts empty.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import gone, start_emulator, stop_pid, wait_for
from rpremote import platform as rp

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
OFFICIAL = rp.OFFICIAL_IMAGE_OF_PYTHON.get(PYTHON)
OTHER = next((i for i in rp.OFFICIAL_IMAGES if i.python != PYTHON), None)
pytestmark = pytest.mark.skipif(OFFICIAL is None or OTHER is None,
                                reason=f"needs official images with Python {PYTHON} and another")

# What the emulator inherits that an official image's worker must not see, or must see.
EMULATOR_ENV = {"PYTHONPATH": "/nonexistent/emulator-pythonpath",
                "RPREMOTE_STORE": "/nonexistent/emulator-store",
                "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}

# The start command: write a report of what the worker sees to $PROBE_OUT/<worker id>.json,
# then sleep (a worker that starts and never asks for work) or exit with $PROBE_EXIT.
PROBE = r"""
import importlib.util, json, os, shutil, subprocess, sys, time
home = os.environ["HOME"]
report = {
    "pid": os.getpid(), "endpoint": os.environ["RUNPOD_ENDPOINT_ID"],
    "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "executable": sys.executable, "cwd": os.getcwd(), "home": home,
    "home_was": sorted(os.listdir(home)), "path": os.environ["PATH"],
    "which_python": shutil.which("python"), "which_pip": shutil.which("pip"),
    "env": {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")},
    "importable": {m: importlib.util.find_spec(m) is not None
                   for m in ("runpod", "rpremote", "httpx", "cloudpickle")},
    "pip": subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                          text=True).stdout,
}
with open(os.path.join(home, "mine.txt"), "w") as f:
    f.write("container state")
volume = os.environ.get("RPREMOTE_VOLUME_MOUNT")
if volume:
    with open(os.path.join(volume, os.environ["RUNPOD_POD_ID"]), "w") as f:
        f.write("on the volume")
    report["volume_files"] = sorted(os.listdir(volume))
out = os.environ["PROBE_OUT"]
with open(os.path.join(out, ".tmp-" + os.environ["RUNPOD_POD_ID"]), "w") as f:
    json.dump(report, f)
os.replace(os.path.join(out, ".tmp-" + os.environ["RUNPOD_POD_ID"]),
           os.path.join(out, os.environ["RUNPOD_POD_ID"] + ".json"))
print("probe reported", flush=True)
if os.environ.get("PROBE_EXIT"):
    sys.exit(int(os.environ["PROBE_EXIT"]))
time.sleep(600)
"""


def endpoint_body(image: str, **over) -> dict:
    body = {"name": "image-env", "type": "QUEUE", "image": image, "gpu": {"pools": ["ADA_24"]},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
            "workers": {"min": 1, "max": 1, "idleTimeout": 5}, "timeout": 60000}
    body.update(over)
    return body


def created(r: httpx.Response) -> dict:
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image-envs") / "state"


@pytest.fixture
def plane(state):
    """An emulator on the module's state directory; at the end its endpoints and volumes are
    deleted, it is stopped by its PID, and every worker process seen is checked gone."""
    emu = start_emulator(state, env=EMULATOR_ENV)
    pids: set[int] = set()
    c = emu.client(timeout=30)
    c.pids = pids  # the tests add the worker pids they learn
    try:
        yield c
    finally:
        try:
            for ep in c.get("/v2/serverless").json()["endpoints"]:
                pids.update(w["pid"] for w in
                            c.get(f"/rpremote/v1/endpoints/{ep['id']}").json()["workers"]
                            if w["pid"])
                c.delete(f"/v2/serverless/{ep['id']}")
            for vol in c.get("/v2/network-volumes").json()["networkVolumes"]:
                c.delete(f"/v2/network-volumes/{vol['id']}")
        finally:
            c.close()
            stop_pid(emu.pid)
        wait_for(lambda: all(gone(pid, reap=False) for pid in pids), timeout=15,
                 what=f"worker processes {sorted(pids)} to end")


def reports(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def worker_pids(c: httpx.Client, ep: str) -> set[int]:
    return {w["pid"] for w in c.get(f"/rpremote/v1/endpoints/{ep}").json()["workers"]
            if w["pid"]}


def log_lines(c: httpx.Client, ep: str, worker: str, want: int = 1000,
              timeout: float = 10) -> list[dict]:
    """The events of a worker's log stream: until it ends, ``want`` arrived, or ``timeout``."""
    events = []
    deadline = time.time() + timeout
    with c.stream("GET", f"/v2/serverless/{ep}/workers/{worker}/logs",
                  params={"tail": 5000}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) >= want or time.time() > deadline:
                break
    return events


def test_an_official_image_runs_its_start_command_in_a_clean_environment(plane, state, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    start = shlex.join(["python", "-c", PROBE])
    ep = created(plane.post("/v2/serverless", json=endpoint_body(
        OFFICIAL.tag, args=start, env={"PROBE_OUT": str(out)})))
    assert ep["args"] == start and ep["cmd"] == ["python", "-c", PROBE]
    # the first worker makes the clean environment (once), then runs the start command
    [(worker, report)] = wait_for(lambda: list(reports(out).items()), timeout=60,
                                  what="the probe's report")
    plane.pids.update(worker_pids(plane, ep["id"]) | {report["pid"]})

    clean = state.resolve() / "images" / f"python{PYTHON}"
    assert Path(report["prefix"]) == clean and report["env"]["VIRTUAL_ENV"] == str(clean)
    assert (clean / ".rpremote-complete").exists()
    assert Path(report["which_python"]).parent == clean / "bin"
    assert Path(report["which_pip"]).parent == clean / "bin"
    assert report["pip"].startswith("pip ") and str(clean) in report["pip"]
    # none of this machine's packages: not rpremote (nor from the emulator's cwd), not runpod
    assert report["importable"] == {"runpod": False, "rpremote": False, "httpx": False,
                                    "cloudpickle": False}
    assert Path(report["base_prefix"]) == Path(sys.base_prefix)
    # PATH: the clean bin first, the system's after it, never the emulator's venv
    path = report["path"].split(os.pathsep)
    assert path[0] == str(clean / "bin")
    if sys.prefix != sys.base_prefix:
        assert str(Path(sys.executable).parent) not in path
    env = report["env"]
    assert not {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"} & set(env)
    assert not [k for k in env if k.startswith("RPREMOTE_")], env  # no store, no local worker
    assert env["PIP_INDEX_URL"] == EMULATOR_ENV["PIP_INDEX_URL"]  # the network's settings stay
    expected_cache = os.environ.get("PIP_CACHE_DIR") or str(
        Path(os.environ["XDG_CACHE_HOME"]) / "pip" if os.environ.get("XDG_CACHE_HOME")
        else Path.home() / ".cache" / "pip")
    assert env["PIP_CACHE_DIR"] == expected_cache
    # HOME: a fresh container disk of this worker's, private, where it starts
    home = Path(report["home"])
    assert home == state.resolve() / "containers" / worker
    # (only what starting it wrote: pip asks `rustc --version`, and rustup makes ~/.rustup)
    assert not set(report["home_was"]) - {".rustup", ".cache"}, report["home_was"]
    assert report["cwd"] == str(home)
    assert (home / "mine.txt").read_text() == "container state"
    assert home.stat().st_mode & 0o077 == 0

    # still starting (it never asks for work): INITIALIZING, not lost
    workers = plane.get(f"/v2/serverless/{ep['id']}/workers").json()["workers"]
    assert [(w["id"], w["status"]) for w in workers] == [(worker, "INITIALIZING")]

    # the worker goes: its container disk goes with it; its log says how it ended
    assert plane.delete(f"/v2/serverless/{ep['id']}").status_code == 204
    wait_for(lambda: not home.exists(), timeout=20, what="the container disk to be removed")
    wait_for(lambda: gone(report["pid"], reap=False), timeout=10, what="the worker to end")
    assert clean.exists()  # the image's environment stays for the next worker


def test_a_failing_start_command_and_a_network_volume(plane, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    vol = created(plane.post("/v2/network-volumes", json={"name": "v", "size": 10,
                                                          "dataCenter": "EU-RO-1"}))
    env = {"PROBE_OUT": str(out)}
    staying = created(plane.post("/v2/serverless", json=endpoint_body(
        OFFICIAL.tag, entrypoint=["python", "-c"], cmd=[PROBE], env=env,
        networkVolumes=[vol["id"]])))
    failing = created(plane.post("/v2/serverless", json=endpoint_body(
        OFFICIAL.tag, entrypoint=["python", "-c"], cmd=[PROBE], networkVolumes=[vol["id"]],
        env={**env, "PROBE_EXIT": "3"}, workers={"min": 1, "max": 1, "idleTimeout": 5})))

    def by_endpoint():
        got = {}
        for wid, r in reports(out).items():
            got.setdefault(r["endpoint"], []).append((wid, r))
        return got if {staying["id"], failing["id"]} <= set(got) else None

    seen = wait_for(by_endpoint, timeout=60, what="reports of both endpoints")
    plane.pids.update(worker_pids(plane, staying["id"]),
                      {r["pid"] for rs in seen.values() for _, r in rs})
    (stay_id, stay), (fail_id, fail) = seen[staying["id"]][0], seen[failing["id"]][0]

    # one directory per volume, the same for every worker of every endpoint mounting it
    mount = Path(stay["env"]["RPREMOTE_VOLUME_MOUNT"])
    assert fail["env"]["RPREMOTE_VOLUME_MOUNT"] == str(mount)
    assert mount.name == vol["id"] and mount.is_dir() and mount.stat().st_mode & 0o077 == 0
    assert Path(stay["home"]) != Path(fail["home"])

    # the failing worker is reaped: its container disk goes, the volume's files stay, and its
    # log (still readable) says how it ended
    wait_for(lambda: not Path(fail["home"]).exists(), timeout=20, what="its container disk")
    assert (mount / fail_id).read_text() == "on the volume"
    assert (mount / stay_id).exists()
    events = log_lines(plane, failing["id"], fail_id)
    lines = [(e["source"], e["line"]) for e in events]
    assert ("container", "probe reported") in lines, lines
    assert lines[0][0] == "system" and "started" in lines[0][1]
    assert lines[-1][0] == "system" and "exit code 3" in lines[-1][1], lines
    # the staying worker keeps its disk meanwhile; the engine starts the failing one again
    assert Path(stay["home"]).exists()
    wait_for(lambda: len(by_endpoint()[failing["id"]]) >= 2, timeout=20,
             what="a new worker after the failed one")
    again = by_endpoint()[failing["id"]]
    plane.pids.update(r["pid"] for _, r in again)
    assert all("mine.txt" not in r["home_was"] for _, r in again)  # each on a fresh disk

    # detached and deleted, the volume's directory goes
    for ep in (staying, failing):
        plane.delete(f"/v2/serverless/{ep['id']}")
    assert plane.delete(f"/v2/network-volumes/{vol['id']}").status_code == 204
    assert not mount.exists()


def unhealthy_reason(c: httpx.Client, ep: str) -> str:
    def shown():
        workers = c.get(f"/v2/serverless/{ep}/workers").json()["workers"]
        return workers if workers else None

    workers = wait_for(shown, timeout=10, what="the endpoint's workers")
    assert [w["status"] for w in workers] == ["UNHEALTHY"]
    events = log_lines(c, ep, workers[0]["id"], want=1)
    assert events[0]["source"] == "system" and "cannot start" in events[0]["line"]
    return events[0]["line"]


def test_an_image_of_another_python_cannot_start_here(plane):
    ep = created(plane.post("/v2/serverless", json=endpoint_body(
        OTHER.tag, args="python -c 'print(1)'")))
    reason = unhealthy_reason(plane, ep["id"])
    assert f"has Python {OTHER.python}" in reason and f"runs Python {PYTHON}" in reason
    assert f"with Python {OTHER.python}" in reason


def test_an_official_image_without_a_start_command_cannot_start(plane):
    ep = created(plane.post("/v2/serverless", json=endpoint_body(OFFICIAL.tag)))
    assert ep["args"] == "" and ep["cmd"] == []
    reason = unhealthy_reason(plane, ep["id"])
    assert "no start command" in reason and "Pod services" in reason
    assert "give the endpoint a start command" in reason
    # a start command given later makes it a real worker
    r = plane.patch(f"/v2/serverless/{ep['id']}",
                    json={"args": "python -c 'import time; time.sleep(60)'"})
    assert r.status_code == 200, r.text
    workers = wait_for(lambda: [w for w in plane.get(
        f"/v2/serverless/{ep['id']}/workers").json()["workers"] if w["status"] != "UNHEALTHY"],
        timeout=10, what="a worker that starts")
    assert workers[0]["status"] == "INITIALIZING"
    plane.pids.update(worker_pids(plane, ep["id"]))


def test_an_unknown_gpu_pool_is_422(plane):
    for method, path, body in (
            ("POST", "/v2/serverless", endpoint_body(OFFICIAL.tag, gpu={"pools": ["RTX_4090"]})),
            ("PATCH", None, {"gpu": {"pools": ["ADA_24", "NOPE"]}})):
        if path is None:
            ep = created(plane.post("/v2/serverless", json=endpoint_body(
                OFFICIAL.tag, workers={"min": 0, "max": 1, "idleTimeout": 5})))
            path = f"/v2/serverless/{ep['id']}"
        r = plane.request(method, path, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        [error] = r.json()["errors"]
        assert error.startswith("$.gpu.pools: unknown GPU pool") and "ADA_24" in error
        assert "AMPERE_24" in error  # the valid pool ids


# -- without processes ------------------------------------------------------------------------------

def test_image_map_start(tmp_path):
    from rpremote.local.images import EXECUTOR_COMMAND, ImageMap

    images = ImageMap({"myorg/worker": "python handler.py"}, python=PYTHON)
    start = images.start(OFFICIAL.tag, ["python", "-c", "print('a b')"], tmp_path)
    assert start.command == "python -c 'print('\"'\"'a b'\"'\"')'"
    assert start.python_env == str(tmp_path / "images" / f"python{PYTHON}") and not start.error
    assert images.start("docker.io/" + OFFICIAL.tag, ["x"], tmp_path).command == "x"
    # mapped images keep their command whatever the endpoint's start command says
    assert images.start("myorg/worker:2", ["ignored"], tmp_path).command == "python handler.py"
    assert images.start(rp.worker_image(PYTHON), ["x"], tmp_path).command == EXECUTOR_COMMAND
    assert images.start(rp.worker_image(PYTHON), ["x"], tmp_path).python_env is None
    assert images.command("myorg/worker:2") == "python handler.py"  # old callers
    # an --image mapping of an official image wins over its clean environment
    assert ImageMap({OFFICIAL.tag: "python h.py"}).start(OFFICIAL.tag, ["x"], tmp_path) \
        .python_env is None
    no_cmd = images.start(OFFICIAL.tag, [], tmp_path)
    assert no_cmd.command is None and "no start command" in no_cmd.error
    assert images.why_not(OFFICIAL.tag) == no_cmd.error
    other = images.start(OTHER.tag, ["x"], tmp_path)
    assert other.command is None and f"with Python {OTHER.python}" in other.error
    assert "failed to pull" in images.start("nosuch/image:1", ["x"], tmp_path).error


def test_old_stored_endpoint_specs_still_load():
    from rpremote.local.config import EndpointSpec

    spec = EndpointSpec.from_dict({"id": "old", "workerCmd": "python w.py", "release": 2})
    assert spec.pythonEnv is None and spec.volumeMount is None
    assert EndpointSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="pythonEnv"):
        EndpointSpec(id="x", pythonEnv="/env")


def test_clean_worker_env(tmp_path, monkeypatch):
    from rpremote.local.config import EmulatorTimings, EndpointSpec
    from rpremote.local.supervisor import Supervisor

    own_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([own_bin, "/usr/bin", "/bin"]))
    for name, value in {"PYTHONPATH": "/pp", "PYTHONHOME": "/ph", "PYTHONSTARTUP": "/ps",
                        "RPREMOTE_LOCAL_WORKER": "1", "RPREMOTE_VOLUME_MOUNT": "/inherited",
                        "PIP_CONSTRAINT": "/c.txt", "XDG_CACHE_HOME": str(tmp_path / "xdg")
                        }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PIP_CACHE_DIR", raising=False)
    env_dir = str(tmp_path / "images" / "python3.x")
    spec = EndpointSpec(id="ep", workerCmd="python -c pass", pythonEnv=env_dir,
                        env={"RPREMOTE_STORE": "s3://b/p"}, volumeMount=str(tmp_path / "v"))
    env = Supervisor(spec, "http://127.0.0.1:1", "tok", tmp_path, EmulatorTimings()) \
        .worker_env("w1")
    assert env["PATH"].split(os.pathsep)[0] == f"{env_dir}/bin"
    if sys.prefix != sys.base_prefix:
        assert own_bin not in env["PATH"].split(os.pathsep)
    assert env["VIRTUAL_ENV"] == env_dir and env["HOME"] == str(tmp_path / "containers" / "w1")
    assert env["PIP_CACHE_DIR"] == str(tmp_path / "xdg" / "pip")
    assert env["PIP_CONSTRAINT"] == "/c.txt"
    assert env["RPREMOTE_STORE"] == "s3://b/p"  # the endpoint's env
    assert env["RPREMOTE_VOLUME_MOUNT"] == str(tmp_path / "v")
    assert not {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "RPREMOTE_LOCAL_WORKER",
                "RPREMOTE_BLOB_DIR", "RPREMOTE_BLOB_URL", "XDG_CACHE_HOME"} & set(env)
    # other endpoints: as before, but no inherited volume
    plain = Supervisor(EndpointSpec(id="ep2", workerCmd="python w.py"), "http://127.0.0.1:1",
                       "tok", tmp_path, EmulatorTimings()).worker_env("w2")
    assert plain["HOME"] == str(tmp_path / "worker-home") and "RPREMOTE_BLOB_DIR" in plain
    assert "RPREMOTE_VOLUME_MOUNT" not in plain


def test_deps_root_is_on_the_mounted_volume(tmp_path, monkeypatch):
    from rpremote.executor import installer

    monkeypatch.delenv(installer.DEPS_DIR_ENV, raising=False)
    monkeypatch.setenv("RPREMOTE_VOLUME_MOUNT", str(tmp_path))
    assert installer.deps_root() == tmp_path / "rpremote" / "deps"
    monkeypatch.setenv("RPREMOTE_VOLUME_MOUNT", str(tmp_path / "missing"))
    assert installer.deps_root() != tmp_path / "missing" / "rpremote" / "deps"
