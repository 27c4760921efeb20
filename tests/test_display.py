"""Rich outputs from workers: display(), figures and a cell's value come back in order.

Worker side in-process and without IPython; client side in a real kernel (iopub messages, in
the order they arrive) and in a script (the terminal's text form), on real emulator workers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import iopub_of
from rpremote import displays, protocol
from rpremote.capture import dumps
from rpremote.executor.core import Executor
from rpremote.executor.events import EventBuffer

SECRET = b"display-test-secret"
PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def run_in_executor(fn, *args):
    request = protocol.call_request(SECRET, dumps(fn), dumps((args, {})), name=fn.__name__)
    out = EventBuffer()
    Executor(SECRET).run(request, out)
    return request, out.drain()


# -- the event ------------------------------------------------------------------------------------


def test_a_display_event_is_a_signed_mime_bundle_and_big_ones_go_by_reference():
    small = protocol.display_event(SECRET, "c1", {"text/plain": "x", "text/html": "<b>x</b>"},
                                   {"text/html": {"isolated": True}})
    assert small["t"] == "display" and small["data"]["text/html"] == "<b>x</b>"
    assert small["metadata"] == {"text/html": {"isolated": True}}
    protocol.check_result(SECRET, "c1", small)  # signed, and answers its call
    assert protocol.display_bundle(small)[0]["text/plain"] == "x"
    tampered = {**small, "data": {"text/html": "<script>evil()</script>"}}
    with pytest.raises(Exception, match="not signed"):
        protocol.check_result(SECRET, "c1", tampered)

    png = base64.b64encode(os.urandom(protocol.DISPLAY_INLINE_BYTES)).decode()
    big = protocol.display_event(SECRET, "c1", {"image/png": png})
    assert "data" not in big and big["bundle"]["ref"] == 1  # through the offload store
    raw = bytes(big["bundle"].pop("_raw"))
    assert protocol.display_bundle(big, lambda digest, size: raw)[0]["image/png"] == png
    protocol.check_result(SECRET, "c1", big)

    huge = protocol.display_event(SECRET, "c1", {"image/png": "A" * (protocol.MAX_DISPLAY_BYTES + 1)})
    assert "too big to send back" in huge["data"]["text/plain"] and "image/png" not in huge["data"]


def test_the_text_form_of_a_display():
    png = base64.b64encode(PNG_1x1).decode()
    assert displays.describe({"text/plain": "<Figure>", "image/png": png}) == "<image/png 1x1, 70 bytes>"
    assert displays.describe({"text/plain": "<HTML object>", "text/html": "<b>"}) == "<HTML object>"
    assert displays.describe({"image/jpeg": "AAAA"}, {"image/jpeg": {"width": 3, "height": 2}}) \
        == "<image/jpeg 3x2, 3 bytes>"


def test_reporter_wrappers_pass_display_through_and_a_reporter_without_it_gets_text(tmp_path):
    from rpremote.journal import JournalReporter
    from rpremote.mapping import _LogsOnly
    from rpremote.report import TerminalReporter

    terminal = TerminalReporter()
    assert _LogsOnly(terminal).display == terminal.display
    assert JournalReporter(_LogsOnly(terminal), target="local",
                           path=tmp_path / "j.sqlite3").display == terminal.display

    class LogsOnly:  # an older reporter: status, log, finished
        def __init__(self):
            self.lines = []

        def log(self, job, stream, text):
            self.lines.append((stream, text))

    from rpremote.job import Job

    inner = LogsOnly()
    job = Job(None, "ep", secret=SECRET, name="f", reporter=_LogsOnly(inner), call_id="c")
    png = base64.b64encode(PNG_1x1).decode()
    job._batch([protocol.display_event(SECRET, "c", {"image/png": png, "text/plain": "<F>"}),
                protocol.display_event(b"another secret", "c", {"text/html": "<script>"})])
    assert inner.lines[0] == ("stdout", "<image/png 1x1, 70 bytes>\n")
    assert inner.lines[1][0] == "stderr" and "was not shown" in inner.lines[1][1]
    assert len(inner.lines) == 2


# -- the worker side ------------------------------------------------------------------------------


def draws_between_prints():
    from IPython.display import HTML, Markdown, display as ipython_display
    import matplotlib.pyplot as plt

    print("one")
    ipython_display(HTML("<b>bold</b>"), Markdown("*md*"))
    print("two", end="")
    plt.plot([1, 2, 3])
    plt.show()
    plt.plot([3, 2])  # left open: a function's figures go only when it shows them
    handle = display({"k": 1}, display_id=True)  # the builtin, as in a notebook
    handle.update({"k": 2})
    print("three")
    return len(plt.get_fignums())


def test_display_and_show_between_prints_arrive_in_order_from_one_job():
    request, events = run_in_executor(draws_between_prints)
    shown = [(e["t"], e.get("data") if e["t"] == "log" else sorted(e["data"]))
             for e in events if e["t"] != "result"]
    assert shown[0] == ("log", "one\n")
    assert shown[1] == ("display", ["text/html", "text/plain"])
    assert shown[2] == ("display", ["text/markdown", "text/plain"])
    assert shown[3] == ("log", "two")
    assert shown[4] == ("display", ["image/png", "text/plain"])
    assert shown[5:7] == [("display", ["text/plain"])] * 2
    assert shown[7] == ("log", "three\n") and len(shown) == 8
    png = base64.b64decode(events[4]["data"]["image/png"])
    assert png.startswith(b"\x89PNG")
    first, update = events[5], events[6]
    assert first["display_id"] == update["display_id"] and update["update"] is True
    assert update["data"]["text/plain"] == "{'k': 2}"
    for e in events:
        if e["t"] != "log":
            protocol.check_result(SECRET, request["call"], e)  # displays are signed
    from rpremote.job import decode_result
    assert decode_result(events[-1], SECRET, request["call"]) == 1  # plt.show() closed its figure


def shows_its_tag(tag):
    import time

    for i in range(20):
        display(f"{tag}-{i}")
        time.sleep(0.002)
    return tag


def test_concurrent_jobs_in_threads_each_get_only_their_own_displays(capsys):
    import threading

    from rpremote.executor.display import display

    box: dict[str, list] = {}
    threads = [threading.Thread(target=lambda tag=tag: box.update({tag: run_in_executor(
        shows_its_tag, tag)[1]})) for tag in ("a", "b", "c")]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        display("main thread, not a job")  # outside jobs: printed, as without rpremote
    for t in threads:
        t.join()
    assert "main thread, not a job" in capsys.readouterr().out
    for tag, events in box.items():
        texts = [e["data"]["text/plain"] for e in events if e["t"] == "display"]
        assert texts == [repr(f"{tag}-{i}") for i in range(20)]


WITHOUT_IPYTHON = textwrap.dedent('''
    import sys
    sys.modules["IPython"] = None  # as on a worker without IPython: importing it fails
    import base64, json
    from rpremote import protocol
    from rpremote.capture import dumps
    from rpremote.executor.cells import run_cell
    from rpremote.executor.core import Executor
    from rpremote.executor.events import EventBuffer

    CELL = """
    print("before")
    class Table:
        def _repr_html_(self):
            return "<table><td>1</td></table>"
    display(Table())
    print("between")
    import matplotlib.pyplot as plt
    plt.plot([1, 2])
    plt.show()
    fig = plt.figure()
    plt.plot([2, 1])
    print("after")
    """
    request = protocol.call_request(b"k", dumps(run_cell), dumps(((CELL, "<c>", {}, None), {})),
                                    name="cell")
    out = EventBuffer()
    Executor(b"k").run(request, out)
    for e in out.drain():
        if e["t"] == "log":
            print(json.dumps(["log", e["data"]]))
        elif e["t"] == "display":
            png = base64.b64decode(e["data"].get("image/png", ""))[:4].decode("latin-1")
            print(json.dumps(["display", sorted(e["data"]), e["data"].get("text/html"), png]))
        else:
            print(json.dumps(["result", e["ok"]]))
    print(json.dumps(["ipython", "IPython.core" in sys.modules]))
''')


def test_a_cell_on_a_worker_without_ipython_sends_displays_and_its_open_figures():
    out = subprocess.run([sys.executable, "-c", WITHOUT_IPYTHON], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines == [
        ["log", "before\n"],
        ["display", ["text/html", "text/plain"], "<table><td>1</td></table>", ""],
        ["log", "between\n"],
        ["display", ["image/png", "text/plain"], None, "\x89PNG"],  # plt.show()
        ["log", "after\n"],
        ["display", ["image/png", "text/plain"], None, "\x89PNG"],  # still open at the end
        ["result", True],
        ["ipython", False],
    ]


# -- a script: the terminal's text form -----------------------------------------------------------

SCRIPT = textwrap.dedent('''
    import base64, os
    import rpremote

    class Table:
        def _repr_html_(self):
            return "<table/>"
        def __repr__(self):
            return "Table(3 rows)"

    @rpremote.remote
    def report():
        import matplotlib.pyplot as plt
        print("start", end="")
        display(Table())
        fig = plt.figure(figsize=(4, 3), dpi=50)
        plt.plot([1, 2])
        fig.show()
        noise = base64.b64encode(os.urandom(600 * 1024)).decode()  # through the offload store
        display({"image/png": noise, "text/plain": "noise"}, raw=True)
        print("end")
        return "ok"

    print(report())
''')


@pytest.mark.usefixtures("rpremote_home")
def test_a_script_prints_the_text_form_of_displays_in_order(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=180, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["[remote:report] start", "[remote:report] Table(3 rows)",
                         lines[2]], out.stdout
    assert lines[2].startswith("[remote:report] <image/png ") and lines[2].endswith(" KB>")
    assert lines[3:] == ["[remote:report] <image/png, 600 KB>", "[remote:report] end", "ok"]

    from rpremote import journal  # `rpremote logs` prints the same text forms, in order
    job = journal.recent(limit=1, name="report")[0]
    logs = subprocess.run([sys.executable, "-m", "rpremote", "logs", job.id], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))
    assert logs.returncode == 0, logs.stderr
    shown = logs.stdout.splitlines()  # stderr too: matplotlib may say it built its font cache
    assert shown[-5:] == ["start", "Table(3 rows)", lines[2].split("] ")[1], shown[-2], "end"], shown
    assert shown[-2] == "<image/png, 600 KB>"  # the spool keeps the text the script printed


# -- a notebook kernel: iopub messages in order ---------------------------------------------------


@contextlib.contextmanager
def new_kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(rpremote_home):
    with new_kernel() as kc:
        yield kc


def outputs(kc, code: str, timeout: float = 120) -> list[tuple[str, object]]:
    """What ``code`` shows, in arrival order: ("stream", text) with neighbouring stream text
    joined, ("display", data), ("result", data), ("error", text)."""
    shown: list[tuple[str, object]] = []
    for kind, content in iopub_of(kc, code, timeout):
        if kind == "stream" and content["name"] == "stdout":
            if shown and shown[-1][0] == "stream":
                shown[-1] = ("stream", shown[-1][1] + content["text"])
            else:
                shown.append(("stream", content["text"]))
        elif kind in ("display_data", "update_display_data"):
            shown.append(("display" if kind == "display_data" else "update", content["data"]))
        elif kind == "execute_result":
            shown.append(("result", content["data"]))
        elif kind == "error":
            shown.append(("error", "\n".join(content["traceback"])))
    return shown


def _kinds(shown):
    """The shape of the outputs: stream text without the ``[remote:NAME] `` prefixes,
    displays and results by their mime types."""
    out = []
    for kind, value in shown:
        if kind == "stream":
            out.append(("stream", "".join(line.split("] ", 1)[-1] for line in
                                          value.splitlines(True))))
        else:
            out.append((kind, sorted(value) if isinstance(value, dict) else value))
    return out


CELL = '''%%runpod
from IPython.display import HTML, Markdown
class Table:
    def _repr_html_(self):
        return "<table><td>cell</td></table>"
print("before")
display(HTML("<b>bold</b>"))
display(Markdown("*md*"))
print("middle", end="")
display(Table())
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.show()
print("after")
plt.plot([3, 2, 1])
print("end")'''


def test_a_cell_shows_prints_displays_and_figures_in_order(kernel):
    assert not outputs(kernel, "%load_ext rpremote")
    shown = outputs(kernel, CELL)
    streams = [v for k, v in shown if k == "stream"]
    assert all(line.startswith("[remote:cell_") for t in streams for line in t.splitlines()), shown
    assert _kinds(shown) == [
        ("stream", "before\n"),
        ("display", ["text/html", "text/plain"]),
        ("display", ["text/markdown", "text/plain"]),
        ("stream", "middle\n"),  # a partial line goes out before the display after it
        ("display", ["text/html", "text/plain"]),
        ("display", ["image/png", "text/plain"]),  # plt.show()
        ("stream", "after\nend\n"),
        ("display", ["image/png", "text/plain"]),  # still open at the end of the cell
    ], shown
    assert shown[1][1]["text/html"] == "<b>bold</b>"
    assert shown[4][1]["text/html"] == "<table><td>cell</td></table>"
    assert base64.b64decode(shown[5][1]["image/png"]).startswith(b"\x89PNG")
    assert shown[5][1]["image/png"] != shown[7][1]["image/png"]  # two figures


def test_a_cells_value_shows_with_its_rich_form(kernel):
    outputs(kernel, "%load_ext rpremote")
    html = outputs(kernel, "%%runpod\nclass Frame:\n    def _repr_html_(self):\n"
                           "        return '<table>frame</table>'\nprint('made')\nFrame()")
    assert _kinds(html) == [("stream", "made\n"), ("result", ["text/html", "text/plain"])], html
    assert html[-1][1]["text/html"] == "<table>frame</table>"
    fig = outputs(kernel, "%%runpod\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                          "ax.plot([1, 4, 9])\nfig")
    assert _kinds(fig) == [("result", ["image/png", "text/plain"])], fig  # shown once, as the value
    assert base64.b64decode(fig[-1][1]["image/png"]).startswith(b"\x89PNG")
    back = outputs(kernel, "print(type(fig).__name__, len(ax.lines))")
    assert back == [("stream", "Figure 1\n")]


@pytest.mark.usefixtures("rpremote_home")
def test_a_figure_value_shows_as_an_image_in_a_kernel_that_never_imported_pyplot():
    with new_kernel() as kc:
        outputs(kc, "%load_ext rpremote")
        fig = outputs(kc, "%%runpod --no-pull\nimport matplotlib.pyplot as plt\n"
                          "fig = plt.figure()\nplt.plot([1, 2])\nfig")
        assert _kinds(fig) == [("result", ["image/png", "text/plain"])], fig
        assert outputs(kc, "import sys\nprint('matplotlib.pyplot' in sys.modules)") \
            == [("stream", "False\n")]


FUNCTION = '''import rpremote
from IPython.display import HTML

class Table:
    def _repr_html_(self):
        return "<table><td>fn</td></table>"

@rpremote.remote
def draw(n):
    import matplotlib.pyplot as plt
    print("one")
    display(HTML("<i>it</i>"))
    print("two")
    plt.plot(range(n))
    plt.show()
    display(Table())
    h = display("v1", display_id=True)
    h.update("v2")
    plt.plot([1, 0])  # a function's open figures are not sent
    print("three")
    return n

draw(3)'''


def test_a_decorated_function_called_in_the_kernel_shows_its_displays_in_order(kernel):
    outputs(kernel, "%load_ext rpremote")
    shown = outputs(kernel, FUNCTION)
    assert _kinds(shown) == [
        ("stream", "one\n"),
        ("display", ["text/html", "text/plain"]),
        ("stream", "two\n"),
        ("display", ["image/png", "text/plain"]),
        ("display", ["text/html", "text/plain"]),
        ("display", ["text/plain"]),
        ("update", ["text/plain"]),
        ("stream", "three\n"),
        ("result", ["text/plain"]),
    ], shown
    assert shown[4][1]["text/html"] == "<table><td>fn</td></table>"
    assert shown[5][1]["text/plain"] == "'v1'" and shown[6][1]["text/plain"] == "'v2'"
    assert shown[-1][1]["text/plain"] == "3"
