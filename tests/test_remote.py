"""@remote end to end: real `runpod` SDK workers running the executor behind an auto-started
local emulator (one per test session, under its own RPREMOTE_HOME)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import warnings

import httpx
import pytest

import rpremote
from rpremote import config, protocol, remote
from rpremote.capture import dumps
from rpremote.client import targets
from rpremote.errors import (
    ApiKeyError, ConfigError, RemoteError, RemoteKeyboardInterrupt, RemoteSystemExit,
    RemoteTraceback, ResultPicklingError, SignatureError, UnpicklableError, VersionMismatch,
    WorkerLost,
)
from rpremote.job import decode_result

pytestmark = pytest.mark.usefixtures("rpremote_home")


# Functions below live in a module that is not an installed package, so they travel by value.

class BadInput(ValueError):
    pass


class Holder:
    def __init__(self, lock):
        self.lock = lock


_warm = None


@remote(workers=(0, 1), idle_timeout=60)
def echo(*args, **kwargs):
    return args, kwargs


@remote(workers=(0, 1), idle_timeout=60)
def raise_bad(n):
    raise BadInput(f"bad {n}")


@remote(workers=(0, 1), idle_timeout=60)
def misbehave(how):
    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt("stop it")
    if how == "unpicklable_exception":
        raise _LockedError(threading.Lock())
    if how == "unpicklable_result":
        return {"ok": 1, "lock": threading.Lock()}
    return how


class _LockedError(Exception):
    def __init__(self, lock):
        super().__init__("holds a lock")
        self.lock = lock


@remote(workers=(0, 1), idle_timeout=60)
def die():
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


@remote(workers=(0, 1), idle_timeout=60)
def warm_counter():
    global _warm
    if _warm is None:
        _warm = {"loaded_at": time.time(), "pid": os.getpid(), "calls": 0}
    _warm["calls"] += 1
    return dict(_warm)


@remote(workers=(0, 1), idle_timeout=60)
def chatty(delay):
    print("first line", flush=True)
    time.sleep(delay)
    for i in range(50):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    logging.getLogger("user").warning("a logging warning")
    warnings.warn("a python warning")
    try:
        1 / 0
    except ZeroDivisionError:
        import traceback
        traceback.print_exc()
    print("no newline at the end", end="")
    return "done"


# -- by value -------------------------------------------------------------------------------------

NOTEBOOK_CELL = '''
import math

SCALE = 10

def helper(x):
    return x * SCALE

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm(self):
        return math.hypot(self.x, self.y)

def make_adder(k):
    def add(v):
        return v + k
    return add

def cell_fn(n):
    p = Point(3, 4)
    return helper(n), p.norm(), make_adder(5)(n), type(p).__name__
'''


def test_notebook_style_function_runs_by_value():
    ns = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CELL, "<cell-1>", "exec"), ns)
    fn = remote(workers=(0, 1), idle_timeout=60)(ns["cell_fn"])
    assert fn(2) == (20, 5.0, 7, "Point")
    closure = ns["make_adder"](100)
    assert remote(workers=(0, 1), idle_timeout=60)(closure)(1) == 101


def test_a_class_instance_argument_and_result_round_trip():
    ns = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CELL, "<cell-2>", "exec"), ns)
    move = remote(workers=(0, 1), idle_timeout=60)(lambda p, d: ns["Point"](p.x + d, p.y + d))
    moved = move(ns["Point"](1, 2), 10)
    assert (moved.x, moved.y) == (11, 12)
    assert type(moved) is ns["Point"]  # the class keeps its identity after the round trip


def test_args_and_kwargs_arrive_intact():
    assert echo(1, "two", [3.0], key={"nested": (None, True)}) == \
        ((1, "two", [3.0]), {"key": {"nested": (None, True)}})


# -- what cannot go out ---------------------------------------------------------------------------

def _jobs_on(endpoint: str) -> int:
    target = targets.current()
    counts = target.queue.health(endpoint)["jobs"]
    return sum(v for k, v in counts.items() if isinstance(v, int))


def test_unpicklable_argument_is_named_and_nothing_is_sent():
    class Conn:
        def __init__(self):
            self._sock = socket.socket()

    class Wrapper:
        def __init__(self):
            self.conn = Conn()

    echo(0)  # make sure the endpoint exists
    endpoint = echo.resources.endpoint_name
    before = _jobs_on(endpoint)
    w = Wrapper()
    try:
        with pytest.raises(UnpicklableError) as info:
            echo(w)
    finally:
        w.conn._sock.close()
    assert info.value.path == "args[0].conn._sock"
    assert "socket" in info.value.type_name
    assert "args[0].conn._sock" in str(info.value)
    with pytest.raises(UnpicklableError) as info:
        echo(lock=threading.Lock())
    assert info.value.path == "kwargs['lock']"
    assert _jobs_on(endpoint) == before


def test_unknown_gpu_fails_at_decoration_with_suggestions():
    with pytest.raises(ConfigError) as info:
        remote(gpu="ADA_42")
    assert "ADA_24" in str(info.value)
    with pytest.raises(ConfigError):
        remote(timeout=1)


# -- exceptions -----------------------------------------------------------------------------------

def test_original_exception_type_with_remote_traceback():
    with pytest.raises(BadInput) as info:
        raise_bad(7)
    err = info.value
    assert type(err) is BadInput and str(err) == "bad 7"
    assert isinstance(err.__cause__, RemoteTraceback)
    assert "raise BadInput" in err.__cause__.traceback
    assert "in raise_bad" in err.__cause__.traceback
    assert "rpremote/executor" not in err.__cause__.traceback  # starts in the user's frame


def test_exceptions_that_cannot_travel_and_exits():
    with pytest.raises(RemoteError) as info:
        misbehave("unpicklable_exception")
    assert info.value.type_name == "_LockedError" and "holds a lock" in str(info.value)
    assert "Remote traceback" in str(info.value)

    with pytest.raises(RemoteSystemExit) as info:
        misbehave("exit")
    assert info.value.code == 3

    with pytest.raises(RemoteKeyboardInterrupt) as info:
        misbehave("interrupt")
    assert "stop it" in str(info.value)

    with pytest.raises(ResultPicklingError) as info:
        misbehave("unpicklable_result")
    assert "result['lock']" in str(info.value)

    assert misbehave("fine") == "fine"  # the worker survived all of it


def test_a_worker_that_dies_fails_the_call_instead_of_hanging_it():
    t0 = time.monotonic()
    with pytest.raises(WorkerLost) as info:
        die()
    assert "SIGKILL" in str(info.value)
    assert time.monotonic() - t0 < 30
    assert echo(1) == ((1,), {})  # a replacement worker serves the next call


# -- signatures and versions ----------------------------------------------------------------------

def _send_raw(fn, request: dict) -> dict:
    """POST a hand-made request to the function's endpoint; return the final status body."""
    target = targets.current()
    endpoint = target.endpoint_for(fn.resources)
    st = target.queue.runsync(endpoint, {"input": request}, wait_ms=60_000)
    assert st["status"] == "COMPLETED", st
    return st


def _result_event(st: dict) -> dict:
    events = [e for batch in st["output"] for e in batch]
    return next(e for e in events if e["t"] == "result")


def test_tampered_and_foreign_requests_are_refused_before_unpickling():
    secret, _ = config.secret_source()
    # Tampered: swap the arguments after signing.
    request = protocol.call_request(secret, dumps(echo.fn), dumps(((1,), {})), name="t")
    request["args"] = protocol.encode_blob(dumps(((666,), {})))
    ev = _result_event(_send_raw(echo, request))
    assert ev["error"]["kind"] == protocol.REFUSED_SIGNATURE
    with pytest.raises(SignatureError, match="refused the request"):
        decode_result(ev, secret, request["call"])

    # Signed with another secret.
    request = protocol.call_request(b"not-the-secret", dumps(echo.fn), dumps(((1,), {})), name="t")
    ev = _result_event(_send_raw(echo, request))
    assert "signature does not match" in ev["error"]["message"]

    # Not signed at all.
    request = protocol.call_request(secret, dumps(echo.fn), dumps(((1,), {})), name="t")
    del request["sig"]
    ev = _result_event(_send_raw(echo, request))
    assert "not signed" in ev["error"]["message"]


def test_client_refuses_unsigned_or_foreign_results():
    secret, _ = config.secret_source()
    call = protocol.new_call_id()
    good = protocol.ok_result(secret, call, dumps(42))
    assert decode_result(good, secret, call) == 42
    forged = protocol.ok_result(b"attacker", call, dumps(42))
    with pytest.raises(SignatureError, match="not signed with your secret"):
        decode_result(forged, secret, call)
    unsigned = dict(good)
    del unsigned["sig"]
    with pytest.raises(SignatureError):
        decode_result(unsigned, secret, call)
    with pytest.raises(SignatureError, match="another call"):
        decode_result(good, secret, protocol.new_call_id())
    tampered = dict(good, value=protocol.encode_blob(dumps(43)))
    with pytest.raises(SignatureError):
        decode_result(tampered, secret, call)


def test_worker_with_another_python_minor_is_refused():
    secret, _ = config.secret_source()
    request = protocol.call_request(secret, dumps(echo.fn), dumps(((1,), {})), name="t")
    request["python"] = "3.10"
    protocol.sign(secret, request)
    ev = _result_event(_send_raw(echo, request))
    with pytest.raises(VersionMismatch) as info:
        decode_result(ev, secret, request["call"])
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "3.10" in str(info.value) and f"Python {ours}" in str(info.value)


# -- logs -----------------------------------------------------------------------------------------

def test_logs_stream_live_and_in_order(reporter):
    t0 = time.monotonic()
    assert chatty(4) == "done"
    t_end = time.monotonic()
    first = next(t for t, _, text in reporter.logs if "first line" in text)
    assert t_end - first > 2.0, "the first line must arrive well before the function ends"
    assert first - t0 < 3.5
    out = reporter.text("stdout")
    numbers = [int(line.split()[1]) for line in out.splitlines() if line.startswith("line ")]
    assert numbers == list(range(50))
    assert out.endswith("no newline at the end")
    err = reporter.text("stderr")
    for expected in ("to stderr", "a logging warning", "UserWarning: a python warning",
                     "ZeroDivisionError: division by zero"):
        assert expected in err
    assert reporter.finished_with == "COMPLETED"


def test_terminal_reporter_prefixes_remote_lines_and_stays_quiet_for_fast_calls(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, time\nfrom rpremote import remote\n"
        "@remote(gpu='ADA_24', workers=(0, 1), idle_timeout=60)\n"
        "def f(delay):\n    print('hello from the worker')\n    time.sleep(delay)\n    return delay\n"
        "f(0)\nprint('WARM', file=sys.stderr)\nf(0)\nprint('FAST DONE', file=sys.stderr)\nf(2.5)\n"
    )
    r = _run_script(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("[remote:f] hello from the worker") == 3
    assert r.stderr.count("ADA_24 requested; running on local workers") == 1  # said once
    warm_call = r.stderr.split("WARM")[1].split("FAST DONE")[0]
    assert warm_call.strip() == "", r.stderr  # a fast call adds nothing
    after = r.stderr.split("FAST DONE")[1]
    assert "rpremote: f: running on worker" in after
    assert "rpremote: f: done in" in after


def _run_script(script, env_extra=None, timeout=120):
    import subprocess
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# -- warm state -----------------------------------------------------------------------------------

def test_module_state_stays_warm_across_calls():
    a = warm_counter()
    b = warm_counter()
    assert b["pid"] == a["pid"]
    assert b["loaded_at"] == a["loaded_at"]
    assert b["calls"] == a["calls"] + 1


# -- targets --------------------------------------------------------------------------------------

def test_cloud_targets_without_a_key_fail_and_never_fall_back(monkeypatch, tmp_path):
    """No RunPod key anywhere (no $RUNPOD_API_KEY, no ~/.runpod/config.toml): the cloud
    targets refuse before anything is sent, and never run the call locally instead."""
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RPREMOTE_TARGET", "runpod")
    targets.forget()
    try:
        with pytest.raises(ApiKeyError, match="RUNPOD_API_KEY"):
            echo(1)
        config.configure(target="pod")
        with pytest.raises(ApiKeyError, match="RUNPOD_API_KEY"):
            echo(1)
        with pytest.raises(ConfigError):
            config.configure(target="cloud")
        monkeypatch.setenv("RPREMOTE_TARGET", "moon")
        config.reset()
        with pytest.raises(ConfigError, match="RPREMOTE_TARGET"):
            echo(1)
    finally:
        config.reset()
        targets.forget()


def test_public_api_names():
    assert set(rpremote.__all__) >= {"remote", "configure", "RemoteError", "UnpicklableError",
                                     "SignatureError", "VersionMismatch"}
    for name in rpremote.__all__:
        assert hasattr(rpremote, name)


def test_emulator_is_shared_by_processes(tmp_path):
    """Two processes racing on a fresh home start one emulator and both use it."""
    import json
    import subprocess

    from conftest import stop_autostarted

    home = tmp_path / "home"
    script = tmp_path / "who.py"
    script.write_text(
        "import json, os\nfrom rpremote import remote\nfrom rpremote.client import targets\n"
        "@remote(workers=(0, 2), idle_timeout=30)\ndef pid():\n    return os.getpid()\n"
        "worker = pid()\n"
        "print(json.dumps({'server': targets.current().emulator.pid, 'worker': worker}))\n"
    )
    env = {**os.environ, "RPREMOTE_HOME": str(home)}
    try:
        procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        servers = {json.loads(out)["server"] for out, _ in outs}
        assert len(servers) == 1
        state = json.loads((home / "emulator" / "server.json").read_text())
        assert servers == {state["pid"]}

        # A third process later reuses it.
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             env=env, timeout=120)
        assert json.loads(out.stdout)["server"] == state["pid"]
    finally:
        stop_autostarted(home)


def test_stale_state_file_is_replaced(tmp_path):
    import json
    import subprocess

    from conftest import stop_autostarted

    home = tmp_path / "home"
    (home / "emulator").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "emulator" / "server.json").write_text(json.dumps(
        {"url": "http://127.0.0.1:9", "pid": dead.pid, "key_file": None}))
    script = tmp_path / "one.py"
    script.write_text("from rpremote import remote\n"
                      "@remote(workers=(0, 1))\ndef one():\n    return 1\nprint(one())\n")
    try:
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           env={**os.environ, "RPREMOTE_HOME": str(home)}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "1"
        assert json.loads((home / "emulator" / "server.json").read_text())["pid"] != dead.pid
    finally:
        stop_autostarted(home)


def test_admin_api_masks_secret_env(rpremote_home):
    echo(0)
    emu = targets.current().emulator
    r = httpx.get(f"{emu.url}/rpremote/v1/endpoints/{echo.resources.endpoint_name}",
                  headers={"Authorization": f"Bearer {emu.key}"})
    env = r.json()["env"]
    assert env["RPREMOTE_SECRET_FILE"] == "***"
