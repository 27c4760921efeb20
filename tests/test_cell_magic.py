"""``%%runpod`` in a real Jupyter kernel (jupyter_client): push, pull, outputs, errors."""

from __future__ import annotations

import os
import re

import pytest
from jupyter_client.manager import start_new_kernel

from rpremote.capture.cells import analyse

pytestmark = pytest.mark.usefixtures("rpremote_home")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def kernel(rpremote_home):
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 120) -> dict[str, str]:
    """Execute ``code``; its outputs by kind: stdout, stderr, result, error (text)."""
    msg_id = kc.execute(code)
    out = {"stdout": "", "stderr": "", "result": "", "error": ""}
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return out
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind == "execute_result":
            out["result"] += content["data"].get("text/plain", "")
        elif kind == "error":
            out["error"] += ANSI.sub("", "\n".join(content["traceback"]))


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
