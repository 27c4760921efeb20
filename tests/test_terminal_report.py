"""How a map reports its progress: the reporter hooks, and the terminal's two forms (a progress
bar on a TTY, plain lines in a CI log), checked in real subprocesses with and without a pty."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import pytest

import rpremote
from conftest import RecordingReporter, wait_for
from rpremote import config
from rpremote.errors import JobCancelled
from test_stop_and_retry import _assert_stopped, _ticks, tick_and_record_stop

pytestmark = pytest.mark.usefixtures("rpremote_home")

SCRIPT = textwrap.dedent('''
    import sys, time
    from rpremote import remote

    @remote(workers=(0, 2), idle_timeout=60)
    def sq(x):
        time.sleep(0.3)
        if x % 6 == 5:
            raise ValueError(x)
        return x * x

    @remote(workers=(0, 2), idle_timeout=60)
    def slow(s):
        print("slow says hi", flush=True)
        time.sleep(s)
        return s

    @remote(workers=(0, 2), idle_timeout=60)
    def steps(n):
        import rpremote
        for i in range(1, n + 1):
            time.sleep(0.1)
            rpremote.progress(i, n, "loss 0.1")
        return n

    sq(0)  # a warm worker, so the map itself takes a few seconds
    what = sys.argv[1]
    if what == "progress":
        print("value", steps(40), flush=True)
    elif what == "map":
        values = list(sq.map(range(12), return_exceptions=True, batch_size=1))
        print("values", sum(isinstance(v, ValueError) for v in values), values[3], flush=True)
    else:
        print("value", slow(2), flush=True)
''')
REDRAW = re.compile(r"\r(?!\n)")  # a carriage return that is not a pty's line ending


class MapRecorder(RecordingReporter):
    def __init__(self):
        super().__init__()
        self.updates: list[tuple[int, int, int, int | None]] = []
        self.final: tuple[str, object] | None = None

    def map_update(self, progress):
        self.updates.append((progress.done, progress.failed, progress.running, progress.total))
        self.progress = progress

    def map_finished(self, progress, status):
        self.final = (status, progress)


@pytest.fixture
def recorder():
    rec = MapRecorder()
    rpremote.configure(reporter=rec)
    try:
        yield rec
    finally:
        config.reset()


@rpremote.remote(workers=(0, 2), idle_timeout=60)
def half(x):
    time.sleep(0.05)
    if x % 4 == 3:
        raise ValueError(x)
    return x / 2


def test_a_map_tells_its_reporter_how_far_it_is(recorder):
    values = list(half.map(range(16), return_exceptions=True, batch_size=2))
    assert [v for v in values if not isinstance(v, ValueError)][:3] == [0, 0.5, 1]
    status, progress = recorder.final
    assert status == "COMPLETED"
    assert (progress.done, progress.failed, progress.running, progress.total) == (12, 4, 0, 16)
    assert progress.items_per_s and progress.items_per_s > 0 and progress.execution_s > 0
    assert recorder.updates[0][2] > 0  # the first update: jobs submitted, none back
    finished = [d + f for d, f, _, _ in recorder.updates]
    assert finished == sorted(finished) and finished[-1] == 16


def test_a_map_stopped_early_or_failing_says_so(recorder):
    for v in half.map(range(40), batch_size=1):
        break
    assert recorder.final[0] == "STOPPED"
    with pytest.raises(ValueError):
        list(half.map(range(8), batch_size=1))
    assert recorder.final[0] == "FAILED"


def test_progress_cancel_from_another_thread_stops_every_job(recorder, tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        f.mkdir()

    def click():
        for f in folders:
            wait_for(lambda: _ticks(f / "ticks") >= 2, timeout=60, what=f"ticks in {f.name}")
        recorder.progress.cancel()

    clicker = threading.Thread(target=click)
    clicker.start()
    with pytest.raises(JobCancelled, match="was cancelled after 0 of 2 items"):
        list(tick_and_record_stop.map([str(f) for f in folders], [60, 60]))
    clicker.join()
    for f in folders:
        _assert_stopped(f)
    assert recorder.final[0] == "CANCELLED"


def _run(what: str, tty: bool, tmp_path: Path) -> str:
    """Run SCRIPT; its stdout and stderr together, through a pty or through a pipe."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), what]
    env = {**os.environ, "COLUMNS": "100"}
    if not tty:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stdout
        return done.stdout
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    proc = subprocess.Popen(cmd, env=env, stdin=side, stdout=side, stderr=side, close_fds=True)
    os.close(side)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_map_in_a_ci_log_prints_plain_lines_and_a_summary(tmp_path):
    out = _run("map", tty=False, tmp_path=tmp_path)
    assert "values 2 9" in out
    assert "\r" not in out and "\x1b" not in out, out  # no cursor tricks in a log
    lines = re.findall(r"^rpremote: map sq: (\d+)/12 items \(.*\)", out, re.M)
    assert lines and len(lines) <= 11, out  # about one a tenth of the way, not one an item
    assert [int(n) for n in lines] == sorted(int(n) for n in lines)
    assert re.search(r"^rpremote: map sq: done, 12/12 items in [\d.]+ s \(10 done, 2 failed\), "
                     r"[\d.]+ items/s$", out, re.M), out


def test_a_map_on_a_terminal_draws_a_progress_bar(tmp_path):
    out = _run("map", tty=True, tmp_path=tmp_path)
    assert "values 2 9" in out
    assert REDRAW.search(out), out  # the bar is redrawn in place
    assert re.search(r"map sq: +100%\|[^|\n]*\| 12/12 ", out), out
    assert re.search(r"2 failed", out) and "rpremote: map sq: done, 12/12 items" in out, out


def test_a_call_that_reports_progress_prints_a_line_now_and_then(tmp_path):
    out = _run("progress", tty=False, tmp_path=tmp_path)
    assert "value 40" in out
    told = re.findall(r"^rpremote: steps: (\d+)/40 \((\d+)%\) loss 0.1$", out, re.M)
    assert 2 <= len(told) <= 6, out  # 40 reports in 4 s: about one a second, not one each
    assert [int(n) for n, _ in told] == sorted(int(n) for n, _ in told)
    assert told[-1] == ("40", "100"), out


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "pty"])
def test_a_single_call_keeps_its_plain_lines(tmp_path, tty):
    out = _run("call", tty=tty, tmp_path=tmp_path)
    assert "[remote:slow] slow says hi" in out and "value 2" in out
    assert "rpremote: slow: running on worker" in out
    assert re.search(r"rpremote: slow: done in [\d.]+ s", out), out
    assert not REDRAW.search(out), out
