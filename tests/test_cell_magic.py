"""``%%runpod`` in a real Jupyter kernel (jupyter_client): push, pull, outputs, errors."""

from __future__ import annotations

import os
import re

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import iopub_of
from rpremote.capture.cells import analyse

pytestmark = pytest.mark.usefixtures("rpremote_home")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def kernel(rpremote_home):
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    kc.km = km  # for the interrupt test
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 120) -> dict[str, str]:
    """Execute ``code``; its outputs by kind: stdout, stderr, result, display, error (text)."""
    out = {"stdout": "", "stderr": "", "result": "", "display": "", "error": ""}
    for kind, content in iopub_of(kc, code, timeout):
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind == "execute_result":
            out["result"] += content["data"].get("text/plain", "")
        elif kind == "display_data":
            out["display"] += content["data"].get("text/plain", "") + "\n"
        elif kind == "error":
            out["error"] += ANSI.sub("", "\n".join(content["traceback"]))
    return out


def test_free_and_bound_names_of_a_cell():
    names = analyse("import math\ny = helper(x) + k\nclass P(Base):\n    def f(self, a):\n"
                    "        return a * scale\nfor i in range(3):\n    total = i\n"
                    "z = [v for v in values]\ny")
    assert names.free == ["helper", "x", "k", "Base", "scale", "values"]
    assert names.bound == ["math", "y", "P", "i", "total", "z"]


def test_earlier_cells_go_out_and_assigned_names_come_back(kernel):
    assert not run(kernel, "%load_ext rpremote")["error"]
    setup = run(kernel, "import math, os\nx = 21\ndef helper(v):\n    return v * 2\n"
                        "class Point:\n    def __init__(self, r):\n        self.r = r\n"
                        "    def area(self):\n        return math.pi * self.r ** 2")
    assert not setup["error"]
    out = run(kernel, "%%runpod\nimport threading, os\ny = helper(x)\np = Point(y)\n"
                      "lock = threading.Lock()\nwhere = os.getpid()\nprint('remote y', y)\np.area()")
    assert not out["error"], out["error"]
    assert "[remote:cell_" in out["stdout"] and "remote y 42" in out["stdout"]
    assert out["result"] == repr(3.141592653589793 * 42 ** 2)  # the last expression, shown
    assert "lock was not brought back" in out["stderr"]  # one line, the rest still came back
    back = run(kernel, "print(y, type(p).__name__, p.r, where != os.getpid(), 'lock' in globals())")
    assert back["stdout"].strip() == "42 Point 42 True False"
    # The class that went out and came back is still the notebook's class.
    assert run(kernel, "print(isinstance(p, Point))")["stdout"].strip() == "True"
    from rpremote import journal  # the cell is in the job journal, as a cell
    cells = [e for e in journal.recent(limit=20) if e.kind == "cell"]
    assert cells and cells[0].status == "COMPLETED" and "cell_" in cells[0].name


def test_pull_push_and_no_pull(kernel):
    run(kernel, "%load_ext rpremote")
    run(kernel, "hidden = 5\nsecret_name = 'hidden'")
    out = run(kernel, "%%runpod --push hidden --pull a\na = globals()[secret_name] * 2\nb = 1")
    assert not out["error"], out["error"]
    assert run(kernel, "print(a, 'b' in globals())")["stdout"].strip() == "10 False"
    assert not run(kernel, "%%runpod --no-pull\nc = 3")["error"]
    assert run(kernel, "print('c' in globals())")["stdout"].strip() == "False"
    missing = run(kernel, "%%runpod --push nope\nd = 1")
    assert "nope" in missing["error"] and "nothing was sent" in missing["error"]


def test_a_failing_cell_shows_the_remote_traceback_with_the_cells_lines(kernel):
    run(kernel, "%load_ext rpremote")
    out = run(kernel, "%%runpod\na = 1\nb = 2\nc = a / (b - 2)\nd = 4")
    assert "ZeroDivisionError" in out["error"]
    assert re.search(r'File "<runpod-cell-\d+>", line 3', out["error"]), out["error"]
    assert "c = a / (b - 2)" in out["error"]
    bad = run(kernel, "%%runpod\ndef (:")
    assert "does not parse" in bad["error"] and "nothing was sent" in bad["error"]


def test_async_cells_come_back_with_runpod_wait(kernel, tmp_path):
    run(kernel, "%load_ext rpremote")
    run(kernel, "base = 7")
    first = run(kernel, "%%runpod --async\nimport time\ntime.sleep(1)\nprint('async side')\n"
                        "doubled = base * 2\ndoubled + 1")
    assert not first["error"], first["error"]
    job_id = re.search(r"runs as job (\S+);", first["stderr"]).group(1)
    # The cell returned at once: nothing came back yet, and the notebook goes on working.
    assert run(kernel, "print('doubled' in globals())")["stdout"].strip() == "False"
    failing = run(kernel, "%%runpod --async\nx = 1\nraise ValueError('bad async cell')")
    assert not failing["error"], failing["error"]
    waited = run(kernel, "%runpod wait --timeout 120")
    # The good cell came back before the failed one's error was raised: nothing lost. (What
    # it printed went to its job view, not into this cell: tests/test_widgets.py.)
    assert waited["display"].strip() == "15"  # its last expression, displayed
    assert f"job {job_id}) is back" in waited["stderr"]
    assert "ValueError" in waited["error"] and "bad async cell" in waited["error"]
    assert re.search(r'File "<runpod-cell-\d+>", line 2', waited["error"]), waited["error"]
    assert run(kernel, "print(doubled)")["stdout"].strip() == "14"
    assert "async side" in run(kernel, f"%runpod logs {job_id}")["stdout"]
    assert "no --async cells" in run(kernel, "%runpod wait")["stderr"]
    assert "no pending --async cell" in run(kernel, "%runpod wait nope")["error"]


def test_line_magics_jobs_logs_cancel_endpoints_config(kernel, tmp_path):
    run(kernel, "%load_ext rpremote")
    marker = tmp_path / "ticks"
    slow = run(kernel, f"%%runpod --async\nimport time, pathlib\nfor _ in range(600):\n"
                       f"    print('tick', flush=True)\n"
                       f"    pathlib.Path({str(marker)!r}).open('a').write('.')\n    time.sleep(0.1)")
    job_id = re.search(r"runs as job (\S+);", slow["stderr"]).group(1)
    from conftest import wait_for
    wait_for(lambda: marker.exists() and marker.stat().st_size >= 3, timeout=60,
             what="the async cell to run")
    jobs = run(kernel, "%runpod jobs --limit 5")["stdout"]
    assert job_id[:13] in jobs and "cell_" in jobs
    running_logs = run(kernel, f"%runpod logs {job_id}")
    assert "IN_PROGRESS" in running_logs["stderr"] and "once the job ends" in running_logs["stderr"]
    assert f"{job_id}: CANCELLED" in run(kernel, f"%runpod cancel {job_id}")["stdout"]
    size = marker.stat().st_size
    wait_for(lambda: marker.stat().st_size == size or None, timeout=15, interval=1.0,
             what="the cancelled cell to stop")
    cancelled = run(kernel, f"%runpod wait {job_id[:13]}")
    assert "JobCancelled" in cancelled["error"]
    endpoints = run(kernel, "%runpod endpoints")["stdout"]
    assert "rpremote-cpu-" in endpoints and "IDLE TIMEOUT" in endpoints
    assert not run(kernel, "%runpod config gpu=ADA_24 timeout=30 views=always")["error"]
    shown = run(kernel, "%runpod config")
    assert not shown["error"], shown["error"]
    assert "views   = always" in shown["stdout"]
    assert "gpu     = ADA_24" in shown["stdout"] and "timeout = 30 s" in shown["stdout"]
    assert "never shown" in shown["stdout"]
    assert "unknown key" in run(kernel, "%runpod config colour=red")["error"]
    assert "no such command" in run(kernel, "%runpod frobnicate")["error"]
    assert not run(kernel, "%runpod config gpu=cpu timeout=600 views=slow")["error"]


def test_endpoint_flag_uses_an_existing_endpoint_or_says_none_exists(kernel):
    run(kernel, "%load_ext rpremote")
    missing = run(kernel, "%%runpod --endpoint no-such-endpoint\nv = 1")
    assert "no endpoint 'no-such-endpoint'" in missing["error"] and "nothing was sent" in missing["error"]
    from rpremote.cli.endpoints import endpoint_rows
    existing = next(ep["id"] for ep in endpoint_rows() if ep["id"].startswith("rpremote-cpu-"))
    out = run(kernel, f"%%runpod --endpoint {existing}\nv = 41 + 1")
    assert not out["error"], out["error"]
    assert run(kernel, "print(v)")["stdout"].strip() == "42"


def test_a_kernel_interrupt_cancels_the_remote_cell(kernel, tmp_path):
    import time as _time

    run(kernel, "%load_ext rpremote")
    marker = tmp_path / "ticks"
    msg_id = kernel.execute(f"%%runpod\nimport time, pathlib\ntry:\n    for _ in range(600):\n"
                            f"        pathlib.Path({str(marker)!r}).open('a').write('.')\n"
                            f"        time.sleep(0.1)\nexcept BaseException as e:\n"
                            f"    pathlib.Path({str(tmp_path / 'stopped-by')!r}).write_text(type(e).__name__)\n"
                            f"    raise")
    from conftest import wait_for
    wait_for(lambda: marker.exists() and marker.stat().st_size >= 3, timeout=60,
             what="the cell to run remotely")
    _time.sleep(0.5)
    kernel.km.interrupt_kernel()
    deadline = _time.monotonic() + 60
    while True:
        msg = kernel.get_shell_msg(timeout=max(0.1, deadline - _time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            break
    assert msg["content"]["status"] == "error" and msg["content"]["ename"] == "KeyboardInterrupt"
    wait_for(lambda: (tmp_path / "stopped-by").exists(), timeout=15, what="the remote stop")
    assert (tmp_path / "stopped-by").read_text() == "JobStopped"
