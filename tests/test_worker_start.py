"""A worker's start and its requests: spares that did their imports ahead, the SDK's import
without the CPU probe, and a call's result sent in job-done alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import start_emulator, wait_for, wait_status
from rpremote import protocol
from rpremote.capture import dumps
from rpremote.job import decode_result
from rpremote.local import worker_template

SECRET = "worker-start-test-secret"
EXECUTOR = f"{sys.executable} -m rpremote.executor"


# -- functions the workers run (pickled by value) -------------------------------------------

def quiet(x):
    return x + 1


def chatty(x):
    import time
    print("a line before the result")
    time.sleep(0.5)  # the line is streamed while the call still runs
    return x * 2


def whoami(pid_file):
    import os
    import sys
    import time
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")
    os.write(1, b"straight to the worker's log\n")
    info = {"pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv, "orig_argv": sys.orig_argv,
            "cmdline": [a.decode() for a in cmdline if a],
            "env": {k: os.environ.get(k) for k in ("RUNPOD_POD_ID", "RPREMOTE_TEST_MARK", "FOO",
                                                   "PYTHONUNBUFFERED")},
            "local_modules": sorted(m for m in sys.modules if m.startswith("rpremote.local")),
            "runpod_imported": "runpod" in sys.modules}
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(json.dumps(info))
        time.sleep(60)
    return info


def request(fn, *args):
    return {"input": protocol.call_request(SECRET.encode(), dumps(fn), dumps((args, {})),
                                           name=fn.__name__)}


def value_of(body: dict, req: dict):
    result = [e for batch in body["output"] for e in batch if e["t"] == protocol.RESULT]
    assert len(result) == 1
    return decode_result(result[0], SECRET.encode(), req["input"]["call"])


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """One emulator for the module: ``spare`` takes the emulator's spare worker (its settings
    differ from the spare's only in RPREMOTE_*), ``plain`` cannot (FOO differs)."""
    state = tmp_path_factory.mktemp("worker-start")
    emu = start_emulator(
        state,
        "--endpoint", "spare", "--worker-cmd", EXECUTOR, "--env", f"RPREMOTE_SECRET={SECRET}",
        "--env", "RPREMOTE_TEST_MARK=abc", "--workers-min", "1", "--workers-max", "1",
        "--endpoint", "plain", "--worker-cmd", EXECUTOR, "--env", f"RPREMOTE_SECRET={SECRET}",
        "--env", "FOO=1", "--workers-min", "0", "--workers-max", "1",
    )
    try:
        yield emu
    finally:
        emu.stop()


def test_a_quiet_call_posts_no_stream_chunk_and_a_chatty_one_does(emu):
    with emu.client() as c:
        req = request(quiet, 1)
        body = c.post("/v2/spare/runsync", json=req).json()
        assert body["status"] == "COMPLETED" and value_of(body, req) == 2
        # what the worker sent by job-stream, none of it delivered yet: nothing
        assert c.get(f"/v2/spare/stream/{body['id']}").json()["stream"] == []

        req = request(chatty, 4)
        body = c.post("/v2/spare/runsync", json=req).json()
        assert body["status"] == "COMPLETED" and value_of(body, req) == 8
        streamed = [chunk["output"] for chunk in c.get(f"/v2/spare/stream/{body['id']}").json()["stream"]]
        assert streamed and all(e["t"] == protocol.LOG for batch in streamed for e in batch)
        assert "a line before the result" in "".join(e["data"] for b in streamed for e in b)
        # job-done's aggregate holds every chunk: the streamed ones, then the last
        assert body["output"][:len(streamed)] == streamed
        assert len(body["output"]) == len(streamed) + 1


def test_a_worker_from_the_spare_is_its_own_process_and_dies_by_its_pid(emu, tmp_path):
    with emu.client() as c:
        pid_file = tmp_path / "worker.json"
        job = c.post("/v2/spare/run", json=request(whoami, str(pid_file))).json()
        info = json.loads(wait_for(lambda: pid_file.exists() and pid_file.read_text(),
                                   what="the job to say who runs it"))
        body = c.get(f"/v2/spare/status/{job['id']}").json()
        worker = body["workerId"]
        assert "rpremote.local.worker_template" in info["cmdline"]  # it was the spare
        assert info["orig_argv"] == EXECUTOR.split()  # and it is the executor, as started
        assert info["argv"][0].endswith(os.path.join("rpremote", "executor", "__main__.py"))
        assert info["env"] == {"RUNPOD_POD_ID": worker, "RPREMOTE_TEST_MARK": "abc",
                               "FOO": None, "PYTHONUNBUFFERED": "1"}
        assert info["cwd"] == os.getcwd()  # the emulator's, as for any worker
        assert info["local_modules"] == [] and info["runpod_imported"]
        log = emu.state / "logs" / "spare" / f"{worker}.log"
        assert "straight to the worker's log" in log.read_text()
        assert "cannot stand in" not in log.read_text()

        os.kill(info["pid"], signal.SIGKILL)
        failed = wait_status(c, "spare", job["id"], "FAILED", timeout=15)
        err = json.loads(failed["error"])
        assert err["error_type"] == "WorkerLost" and "SIGKILL" in err["error_message"]
        # a replacement takes the next call (from the next spare, once there is one)
        req = request(quiet, 2)
        again = c.post("/v2/spare/runsync", json=req).json()
        assert again["status"] == "COMPLETED" and again["workerId"] != worker


def test_an_endpoint_the_spare_cannot_stand_in_for_starts_its_command(emu):
    with emu.client() as c:
        req = request(whoami, "")
        body = c.post("/v2/plain/runsync", json=req).json()
        assert body["status"] == "COMPLETED"
        info = value_of(body, req)
        assert info["cmdline"] == EXECUTOR.split() and info["env"]["FOO"] == "1"


def test_the_spare_stands_in_only_where_that_is_the_same():
    here = os.getcwd()
    env = dict(os.environ, RUNPOD_POD_ID="w1", RPREMOTE_SECRET="s")
    argv = [sys.executable, "-m", "rpremote.executor"]
    assert worker_template.why_not_here(argv, env, None, set(), dict(os.environ)) is None
    assert worker_template.why_not_here(argv, env, here, set(), dict(os.environ)) is None
    assert "executor command" in worker_template.why_not_here(
        [sys.executable, "handler.py"], env, None, set(), dict(os.environ))
    assert "not this interpreter" in worker_template.why_not_here(
        ["/usr/bin/python3", "-m", "rpremote.executor"], env, None, set(), dict(os.environ))
    assert "runs in" in worker_template.why_not_here(argv, env, "/", set(), dict(os.environ))
    assert "differs in FOO" in worker_template.why_not_here(
        argv, dict(env, FOO="1"), None, set(), dict(os.environ))
    # an RPREMOTE_ setting read while the spare imported must be the same too
    assert "RPREMOTE_FETCH_CACHE_MB" in worker_template.why_not_here(
        argv, dict(env, RPREMOTE_FETCH_CACHE_MB="1"), None, {"RPREMOTE_FETCH_CACHE_MB"},
        dict(os.environ))


def test_preloaded_modules_are_what_import_runpod_imports_and_not_runpod():
    code = textwrap.dedent("""
        import json, sys
        from rpremote.executor.sdk_fixes import quick_cpu_info, sdk_dependencies
        if sys.argv[1] == "runpod":
            with quick_cpu_info():
                import runpod
            print(json.dumps([runpod.__version__, sorted({m.split(".")[0] for m in sys.modules})]))
        else:
            from rpremote.local import worker_template
            worker_template._preload()
            print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "runpod")))
    """)
    run = lambda what: json.loads(subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, what], capture_output=True, text=True, check=True).stdout)
    version, imported = run("runpod")
    from rpremote.executor.sdk_fixes import sdk_dependencies

    names = sdk_dependencies(version)
    assert names, f"runpod {version} is not a version the dependency list was checked for"
    import importlib.util
    installed = [n for n in names if importlib.util.find_spec(n) is not None]
    assert set(installed) <= set(imported)
    assert run("preload") == []


def test_quick_cpu_info_names_the_processor_and_puts_the_probe_back():
    cpuinfo = pytest.importorskip("cpuinfo")
    from rpremote.executor.sdk_fixes import cpu_brand, quick_cpu_info

    real = cpuinfo.get_cpu_info
    with quick_cpu_info():
        assert cpuinfo.get_cpu_info() == {"brand_raw": cpu_brand()}
    assert cpuinfo.get_cpu_info is real
    model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    if model:
        assert cpu_brand() == model[0]
