"""The notebook job views (``%load_ext rpremote``) in a real kernel, read as a frontend reads
them: widget models from iopub ``comm_open`` / ``comm_msg``, clicks sent as ``comm_msg``."""

from __future__ import annotations

import inspect
import os
import re
import time
from collections import defaultdict

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import wait_for
from rpremote.notebook.widgets import LogBuffer
from test_stop_and_retry import _assert_stopped, _ticks, tick_and_record_stop

pytestmark = pytest.mark.usefixtures("rpremote_home")

# Defined in the kernel's namespace, as notebook cells would (they travel by value).
DEFINE = "import os, time\nfrom rpremote import remote\n\n" + inspect.getsource(
    tick_and_record_stop) + '''

@remote(gpu="ADA_24", workers=(0, 1), idle_timeout=60)
def slow(seconds, text="hello"):
    print(text, flush=True)
    time.sleep(seconds)
    return seconds


@remote(workers=(0, 2), idle_timeout=60)
def stepper(n):
    import rpremote
    for i in range(1, n + 1):
        time.sleep(0.4)
        rpremote.progress(i, n, f"step {i}")
    return n


@remote(workers=(0, 2), idle_timeout=60)
def square(x):
    time.sleep(0.2)
    if x % 5 == 4:
        raise ValueError(f"no {x}")
    return x * x
'''
STATE = re.compile(r"data-state='([\w-]+)'")
COUNT = re.compile(r"data-(done|failed|running)='(\d+)'")


class Kernel:
    """A kernel and what its iopub said: outputs per cell, widget models with their history."""

    def __init__(self, km, kc):
        self.km, self.kc = km, kc
        self.models: dict[str, dict] = {}  # comm id -> current state
        self.history: dict[str, list[dict]] = defaultdict(list)  # comm id -> state, each change
        self.opened_by: dict[str, str] = {}  # comm id -> msg id of the cell that opened it
        self.out: dict[str, dict[str, str]] = defaultdict(lambda: {"stdout": "", "stderr": ""})
        self.idle: set[str] = set()

    def _feed(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        parent = msg["parent_header"].get("msg_id", "")
        if kind == "comm_open":
            cid = content["comm_id"]
            self.models[cid] = dict(content["data"].get("state", {}))
            self.opened_by[cid] = parent
            self.history[cid].append(dict(self.models[cid]))
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            cid = content["comm_id"]
            if cid in self.models:
                self.models[cid].update(content["data"]["state"])
                self.history[cid].append(dict(self.models[cid]))
        elif kind == "stream":
            self.out[parent][content["name"]] += content["text"]
        elif kind == "status" and content["execution_state"] == "idle":
            self.idle.add(parent)

    def pump(self, timeout: float = 0.2) -> None:
        """Take in every iopub message that arrives within ``timeout``."""
        try:
            self._feed(self.kc.get_iopub_msg(timeout=timeout))
            while True:
                self._feed(self.kc.get_iopub_msg(timeout=0.01))
        except Exception:  # queue.Empty
            pass

    def wait(self, predicate, timeout: float = 60, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.pump()

    def execute(self, code: str) -> str:
        return self.kc.execute(code)

    def reply(self, msg_id: str, timeout: float = 120) -> dict:
        """The execute reply, after iopub said idle for it (so all its output is in)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        self.wait(lambda: msg_id in self.idle, timeout=30, what="the cell's idle status")
        return msg["content"]

    def run(self, code: str, timeout: float = 120) -> tuple[str, dict]:
        msg_id = self.execute(code)
        reply = self.reply(msg_id, timeout)
        return msg_id, reply

    def ok(self, code: str, timeout: float = 120) -> str:
        msg_id, reply = self.run(code, timeout)
        assert reply["status"] == "ok", reply
        return msg_id

    # -- reading views

    def opened(self, msg_id: str, css: str) -> list[str]:
        """Comm ids of models with this CSS class that the cell ``msg_id`` opened, in order."""
        return [cid for cid, st in self.models.items()
                if self.opened_by[cid] == msg_id and css in (st.get("_dom_classes") or [])]

    def views(self, msg_id: str) -> list[dict[str, str]]:
        """Each view the cell opened, as {part: comm id}, in the order they were opened."""
        parts = ("status", "cancel", "log", "progress", "title")
        found = {p: self.opened(msg_id, f"rpremote-{p}") for p in parts}
        return [{p: found[p][i] for p in parts if i < len(found[p])}
                for i in range(len(self.opened(msg_id, "rpremote-view")))]

    def state(self, cid: str) -> str | None:
        m = STATE.search(self.models[cid].get("value", ""))
        return m.group(1) if m else None

    def states(self, cid: str) -> list[str]:
        """Every state the status widget went through, repeats removed."""
        seen: list[str] = []
        for st in self.history[cid]:
            m = STATE.search(st.get("value", ""))
            if m and (not seen or seen[-1] != m.group(1)):
                seen.append(m.group(1))
        return seen

    def counts(self, cid: str, state: dict | None = None) -> dict[str, int]:
        return {k: int(v) for k, v in COUNT.findall((state or self.models[cid]).get("value", ""))}

    def click(self, cid: str, subshell: str | None = None) -> None:
        """What a frontend sends when the button is clicked (JupyterLab ≥ 4.4 may address a
        kernel subshell)."""
        click = {"method": "custom", "content": {"event": "click"}}
        msg = self.kc.session.msg("comm_msg", {"comm_id": cid, "data": click})
        if subshell:
            msg["header"]["subshell_id"] = subshell
        self.kc.shell_channel.send(msg)

    def subshell(self) -> str:
        self.kc.control_channel.send(self.kc.session.msg("create_subshell_request", {}))
        reply = self.kc.get_control_msg(timeout=30)
        assert reply["content"]["status"] == "ok", reply
        return reply["content"]["subshell_id"]


def _start(load_extension: bool) -> Kernel:
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    k = Kernel(km, kc)
    if load_extension:
        k.ok("%load_ext rpremote")
    k.ok(DEFINE)
    return k


def _stop(k: Kernel) -> None:
    k.kc.stop_channels()
    k.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(rpremote_home):
    k = _start(load_extension=True)
    try:
        yield k
    finally:
        _stop(k)


def test_a_blocking_call_has_one_live_view_and_prints_into_its_cell(kernel):
    cell = kernel.ok("slow(3)")
    (view,) = kernel.views(cell)
    assert "[remote:slow] hello" in kernel.out[cell]["stdout"]  # the cell's own output, live
    status = view["status"]
    states = kernel.states(status)
    assert states[-1] == "done" and "running" in states, states
    final = kernel.models[status]["value"]
    assert re.search(r"exec [3-9]\.\d s", final) and "$" in final, final  # ADA_24 has a price
    assert "local · ADA_24" in kernel.models[view["title"]]["value"]
    assert kernel.models[view["cancel"]]["disabled"] is True
    # Elapsed time ticks while the job runs: several updates while it was running.
    running = [st["value"] for st in kernel.history[status]
               if "data-state='running'" in st["value"]]
    assert len(set(running)) >= 2, running
    assert not kernel.models[view["log"]].get("value"), "a foreground job's log stays in the cell"

    # A quick call shows no view, as the terminal shows no status line for it.
    quick = kernel.ok("t0 = time.monotonic()\nslow(0)\nprint('took', time.monotonic() - t0)")
    out = kernel.out[quick]["stdout"]
    assert "[remote:slow] hello" in out
    if float(out.split("took")[1]) < 0.9:  # (a loaded machine may make it slow)
        assert kernel.views(quick) == []


def test_spawned_jobs_stay_live_and_their_output_stays_out_of_later_cells(kernel):
    cell = kernel.ok("a = slow.spawn(3, 'first line')\nb = slow.spawn(3, 'second line')")
    first, second = kernel.views(cell)
    # One worker at most: b waits in the queue, then runs, then ends; nobody waits for it.
    kernel.wait(lambda: kernel.state(second["status"]) == "done", timeout=90, what="b done")
    assert kernel.states(second["status"]) == ["queued", "running", "done"], \
        kernel.states(second["status"])
    kernel.wait(lambda: kernel.state(first["status"]) == "done", timeout=30, what="a done")
    later = kernel.ok("print('a later cell')")
    assert "line" not in kernel.out[later]["stdout"] + kernel.out[cell]["stdout"]
    log = kernel.models[second["log"]]["value"]
    assert "second line" in log and "first line" not in log, log
    assert "first line" in kernel.models[first["log"]]["value"]
    done = kernel.ok("print(a.result(), b.result())")
    assert kernel.out[done]["stdout"].strip() == "3 3"


@pytest.mark.parametrize("over_subshell", [False, True], ids=["main-shell", "subshell"])
def test_the_cancel_button_stops_a_blocking_call(kernel, tmp_path, over_subshell):
    kernel.ok(f"tick_and_record_stop({str(tmp_path)!r}, 0)")  # a warm worker
    folder = tmp_path / "job"
    folder.mkdir()
    subshell = kernel.subshell() if over_subshell else None
    cell = kernel.execute(f"tick_and_record_stop({str(folder)!r}, 60)")
    view = kernel.wait(lambda: kernel.views(cell), what="the call's view")[0]
    wait_for(lambda: _ticks(folder / "ticks") >= 2, timeout=60, what="ticks")
    kernel.click(view["cancel"], subshell)  # while the cell still blocks the main thread
    reply = kernel.reply(cell, timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "JobCancelled", reply
    _assert_stopped(folder)
    kernel.wait(lambda: kernel.state(view["status"]) == "cancelled", what="cancelled shown")
    assert kernel.models[view["cancel"]]["disabled"] is True


@pytest.mark.parametrize("tap", [True, False], ids=["shell-channel-tap", "on_click-only"])
def test_the_cancel_button_stops_a_spawned_job(kernel, tmp_path, tap):
    kernel.ok(f"import rpremote.notebook.widgets as w\nw.TAP_SHELL_CHANNEL = {tap}")
    try:
        cell = kernel.ok(f"job = tick_and_record_stop.spawn({str(tmp_path)!r}, 60)")
        (view,) = kernel.views(cell)
        wait_for(lambda: _ticks(tmp_path / "ticks") >= 2, timeout=60, what="ticks")
        kernel.click(view["cancel"])  # the kernel is idle: the main shell handles it too
        _assert_stopped(tmp_path)
        kernel.wait(lambda: kernel.state(view["status"]) == "cancelled", what="cancelled shown")
        out = kernel.ok("print(job.status)")
        assert kernel.out[out]["stdout"].strip() == "CANCELLED"
    finally:
        kernel.ok("w.TAP_SHELL_CHANNEL = True")


def test_a_map_has_one_view_with_progress_and_counts(kernel):
    cell = kernel.ok("r = list(square.map(range(20), return_exceptions=True, batch_size=2))")
    (view,) = kernel.views(cell)  # one view for the whole map, none per job
    status, bar = view["status"], view["progress"]
    assert kernel.state(status) == "done"
    assert kernel.counts(status) == {"done": 16, "failed": 4, "running": 0}
    assert kernel.models[bar]["value"] == 20 and kernel.models[bar]["max"] == 20
    assert "items/s" in kernel.models[status]["value"]
    seen = [kernel.counts(status, st) for st in kernel.history[status]]
    assert any(c.get("running") for c in seen), seen  # it was live on the way
    done = [c["done"] + c["failed"] for c in seen if c]
    assert done == sorted(done), done  # counts only go up
    out = kernel.ok("print(sum(isinstance(v, ValueError) for v in r), r[3])")
    assert kernel.out[out]["stdout"].split() == ["4", "9"]


def test_a_call_that_reports_progress_fills_its_bar(kernel):
    cell = kernel.ok("stepper(6)")
    (view,) = kernel.views(cell)
    bar, status = view["progress"], view["status"]
    assert kernel.models[bar]["value"] == 1.0 and kernel.models[bar]["bar_style"] == "success"
    values = [st.get("value") for st in kernel.history[bar]]
    assert any(0 < v < 1 for v in values), values  # it filled on the way
    assert "6/6 (100%) step 6" in kernel.models[status]["value"]


def test_the_cancel_button_stops_every_job_of_a_map(kernel, tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        f.mkdir()
    paths = [str(f) for f in folders]
    cell = kernel.execute(f"list(tick_and_record_stop.map({paths!r}, [60, 60]))")
    view = kernel.wait(lambda: kernel.views(cell), what="the map's view")[0]
    for f in folders:
        wait_for(lambda: _ticks(f / "ticks") >= 2, timeout=60, what=f"ticks in {f.name}")
    kernel.click(view["cancel"])
    reply = kernel.reply(cell, timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "JobCancelled", reply
    assert "cancelled" in reply["evalue"]
    for f in folders:
        _assert_stopped(f)
    kernel.wait(lambda: kernel.state(view["status"]) == "cancelled", what="cancelled shown")


def test_without_the_extension_a_notebook_gets_the_terminal_lines(rpremote_home):
    k = _start(load_extension=False)
    try:
        cell = k.ok("slow(2)")
        assert "[remote:slow] hello" in k.out[cell]["stdout"]
        assert "rpremote: slow: running on worker" in k.out[cell]["stderr"]
        assert re.search(r"rpremote: slow: done in \d", k.out[cell]["stderr"])
        assert not k.views(cell) and not k.models, "no widgets without %load_ext rpremote"
    finally:
        _stop(k)


def test_the_log_area_keeps_the_last_64_kib_and_says_what_it_dropped():
    buf = LogBuffer()
    for i in range(300):
        buf.append(f"{i:05d} " + "x" * 1000 + "\n")
    assert len(buf) == 64 * 1024 == len(buf.text)
    assert buf.dropped == 300 * 1007 - 64 * 1024
    assert buf.text.endswith("00299 " + "x" * 1000 + "\n")
    buf.append("y" * 100_000)  # one piece bigger than the whole area
    assert buf.text == "y" * 64 * 1024
