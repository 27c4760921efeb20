"""Interrupting a real Jupyter kernel (jupyter_client) cancels the remote work it waits for."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import wait_for
from test_stop_and_retry import _assert_stopped, _ticks, tick_and_record_stop

pytestmark = pytest.mark.usefixtures("rpremote_home")

# Defined in the kernel's own namespace, as a notebook cell would (travels by value).
DEFINE = "import os, time\nfrom rpremote import remote\n\n" + inspect.getsource(tick_and_record_stop)


@pytest.fixture(scope="module")
def kernel(rpremote_home):
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        reply = execute(kc, DEFINE)
        assert reply["status"] == "ok", reply
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 120) -> dict:
    msg_id = kc.execute(code)
    return reply_to(kc, msg_id, timeout)


def reply_to(kc, msg_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]


def interrupt_when_ticking(km, kc, code: str, folders: list[Path], after_s: float = 0.0) -> dict:
    msg_id = kc.execute(code)
    for folder in folders:
        wait_for(lambda: _ticks(folder / "ticks") >= 2, timeout=60, what=f"ticks in {folder.name}")
    time.sleep(after_s)
    km.interrupt_kernel()
    return reply_to(kc, msg_id, timeout=60)


@pytest.mark.parametrize("after_s", [0.0, 2.5], ids=["during-submit", "while-following"])
def test_kernel_interrupt_cancels_a_blocking_call(kernel, tmp_path, after_s):
    km, kc = kernel
    assert execute(kc, f"tick_and_record_stop({str(tmp_path)!r}, 0)")["status"] == "ok"  # warm
    folder = tmp_path / "job"
    folder.mkdir()
    reply = interrupt_when_ticking(km, kc, f"tick_and_record_stop({str(folder)!r}, 60)",
                                   [folder], after_s)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    _assert_stopped(folder)


def test_kernel_interrupt_cancels_every_job_of_a_map(kernel, tmp_path):
    km, kc = kernel
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        f.mkdir()
    code = f"list(tick_and_record_stop.map({[str(f) for f in folders]!r}, [60, 60]))"
    reply = interrupt_when_ticking(km, kc, code, folders, after_s=1.0)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    for f in folders:
        _assert_stopped(f)
    # The kernel and the endpoint go on working.
    done = tmp_path / "after"
    done.mkdir()
    reply = execute(kc, f"assert tick_and_record_stop({str(done)!r}, 0.2) == 'finished'")
    assert reply["status"] == "ok", reply
