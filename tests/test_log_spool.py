"""Live logs of a job another process follows: the log spool (real emulator, real workers).

The process following a job keeps its output in ``<home>/logs/<job>.log``; ``rpremote logs``
in another process prints it as it arrives, and takes over a job nobody follows.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rpremote import config, journal, log_spool, remote
from rpremote.client.local import LocalEmulator
from rpremote.client.queue import QueueClient

from conftest import wait_for


@remote(workers=(0, 2), idle_timeout=30)
def ticker(n, pause):
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(pause)
    return n


@pytest.fixture(autouse=True)
def quiet():
    config.configure(quiet=True)
    yield
    config.reset()


def rpremote_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rpremote", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def read_lines_while(proc: subprocess.Popen, lines: list[tuple[float, str]]) -> threading.Thread:
    def pump():
        for line in proc.stdout:
            lines.append((time.monotonic(), line))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def test_spool_is_bounded_and_offsets_survive_a_drop(tmp_path):
    directory = tmp_path / "logs"
    w = log_spool.SpoolWriter(directory, "job-1", max_bytes=1000)
    text, offset, exists = log_spool.read(directory, "job-1")
    assert (text, offset, exists) == ("", 0, False)
    w.append("first line\n", batches=1)
    text, first, _ = log_spool.read(directory, "job-1")
    assert text == "first line\n" and first == 11
    for i in range(200):
        w.append(f"line {i} é\n", batches=2 + i)
    total = log_spool.size(directory, "job-1")
    assert total == 11 + sum(len(f"line {i} é\n".encode()) for i in range(200))
    data = (directory / "job-1.log").read_bytes()
    assert len(data) <= 1000
    assert data.startswith(b"[rpremote: ") and b"bytes of older output dropped]\n" in data
    # A reader behind the drop gets the note and all that is kept; its offset is the end.
    text, offset, _ = log_spool.read(directory, "job-1", first)
    assert text.startswith("[rpremote: ") and text.endswith("line 199 é\n")
    assert offset == total
    # A reader near the end gets only what is new; an offset cut inside 'é' waits for it.
    w.append("last é")
    text, offset2, _ = log_spool.read(directory, "job-1", offset)
    assert text == "last é" and offset2 == offset + len("last é".encode())
    assert log_spool.read(directory, "job-1", offset2 - 1)[0] == ""
    age, batches = log_spool.follower(directory, "job-1")
    assert age is not None and age < 5 and batches == 201
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in os.listdir(directory):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600, name
    w.close()
    assert log_spool.prune(directory, keep=set()) == 2 and os.listdir(directory) == []
    with pytest.raises(ValueError):
        log_spool.paths(directory, "../escape")


def test_rpremote_logs_shows_a_running_job_of_another_process_as_it_arrives(fresh_home):
    job = ticker.spawn(8, 0.5)
    follower = threading.Thread(target=job.result, daemon=True)  # this process follows it
    follower.start()
    wait_for(lambda: (journal.get(job.id) or journal.Entry("", "")).status == "IN_PROGRESS",
             timeout=60, what="the job to start")
    t0 = time.monotonic()
    proc = rpremote_cli("logs", "-f", job.id[:13])
    lines: list[tuple[float, str]] = []
    pump = read_lines_while(proc, lines)
    try:
        wait_for(lambda: len(lines) >= 2, timeout=30, what="two lines from rpremote logs")
        # They came while the job ran, not at its end.
        assert journal.get(job.id).status == "IN_PROGRESS"
        assert proc.poll() is None
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(5)
    follower.join(30)
    assert "".join(line for _, line in lines) == "".join(f"tick {i}\n" for i in range(8))
    assert lines[0][0] - t0 < 3.0  # the first lines at once, not after the job
    assert journal.get(job.id).status == "COMPLETED"
    # After the end: the whole output, again, from the spool.
    done = subprocess.run([sys.executable, "-m", "rpremote", "logs", job.id], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "".join(f"tick {i}\n" for i in range(8))
    spool = fresh_home / "logs" / f"{job.id}.log"
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(spool.parent).st_mode) == 0o700


SPAWN_AND_LEAVE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from rpremote import configure
    from test_log_spool import ticker
    configure(quiet=True)
    job = ticker.spawn(16, 0.5)
    print(job.id, flush=True)
""")


def test_a_job_nobody_follows_is_followed_by_whoever_asks_for_its_logs(fresh_home):
    from conftest import HANDLERS

    script = SPAWN_AND_LEAVE.format(tests=str(HANDLERS.parent))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.split()[-1]
    assert journal.get(job_id).status == "IN_QUEUE"  # its process spawned it and left
    emulator = LocalEmulator.running()
    queue = QueueClient(emulator.url, emulator.key, where="the test's emulator")
    endpoint = journal.get(job_id).endpoint
    try:  # it runs meanwhile: the lines it prints wait on the platform for a reader
        wait_for(lambda: queue.status(endpoint, job_id)["status"] == "IN_PROGRESS",
                 timeout=60, what="the job to start")
    finally:
        queue.close()
    time.sleep(1.0)
    # Without -f: a round with the platform, what is there so far, back at once.
    r = subprocess.run([sys.executable, "-m", "rpremote", "logs", job_id],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tick 0\n") and "this is its output so far" in r.stderr
    # Following it to its end: nothing printed twice, nothing lost.
    r = subprocess.run([sys.executable, "-m", "rpremote", "logs", "-f", job_id], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"tick {i}\n" for i in range(16))
    entry = journal.get(job_id)
    assert entry.status == "COMPLETED" and entry.execution_ms and entry.name == "ticker"
    assert log_spool.follower(fresh_home / "logs", job_id)[1] >= 1


def test_a_job_that_ended_unseen_has_its_output_asked_of_the_platform_once(fresh_home):
    from conftest import HANDLERS

    script = SPAWN_AND_LEAVE.format(tests=str(HANDLERS.parent)).replace("(16, 0.5)", "(3, 0)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.split()[-1]
    # `rpremote jobs` learns from the platform that it ended; nobody has its output yet.
    wait_for(lambda: "COMPLETED" in subprocess.run(
        [sys.executable, "-m", "rpremote", "jobs", "--limit", "1"], capture_output=True,
        text=True, timeout=60).stdout, timeout=60, what="the job to end")
    assert journal.get(job_id).status == "COMPLETED"
    assert not log_spool.read(fresh_home / "logs", job_id)[2]
    for _ in range(2):  # asked of the platform the first time, read from the spool after
        r = subprocess.run([sys.executable, "-m", "rpremote", "logs", job_id],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "tick 0\ntick 1\ntick 2\n"
        assert log_spool.follow_state(fresh_home / "logs", job_id).done  # whole
    assert journal.get(job_id).status == "COMPLETED"


def test_the_journal_records_where_calls_come_from(monkeypatch):
    class ZMQInteractiveShell:
        execution_count = 7

    class FakeIPython:
        @staticmethod
        def get_ipython():
            return ZMQInteractiveShell()

    monkeypatch.setitem(sys.modules, "IPython", FakeIPython)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/work/train.ipynb")
    assert journal.origin() == ("/home/me/work/train.ipynb", "7")
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert journal.origin() == (None, "7")
    monkeypatch.delitem(sys.modules, "IPython")
    monkeypatch.setattr(sys, "argv", ["examples/demo.py", "x"])
    assert journal.origin() == (os.path.abspath("examples/demo.py"), None)
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert journal.origin() == (None, None)


def test_a_spawner_that_waits_after_a_takeover_gets_its_result_and_nothing_twice(fresh_home):
    job = ticker.spawn(14, 0.5)  # spawned here, not followed (yet)
    wait_for(lambda: job.status == "IN_PROGRESS", timeout=60, what="the job to start")
    time.sleep(1.0)
    # Another process follows it for its logs, and keeps watching...
    proc = rpremote_cli("logs", "-f", job.id)
    lines: list[tuple[float, str]] = []
    pump = read_lines_while(proc, lines)
    try:
        wait_for(lambda: len(lines) >= 3, timeout=30, what="lines taken over by rpremote logs")
        # ... when this process goes back to waiting for it: the other steps aside.
        assert job.result(timeout=60) == 14
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(5)
    every = "".join(f"tick {i}\n" for i in range(14))
    assert "".join(line for _, line in lines) == every  # the watcher saw each line once
    assert log_spool.read(fresh_home / "logs", job.id)[0] == every
    assert job.logs and every.endswith(job.logs) and job.logs != every  # the rest came here
    entry = journal.get(job.id)
    assert entry.status == "COMPLETED" and entry.name == "ticker" and entry.source


def test_prune_keeps_the_journals_jobs_within_a_total_size(tmp_path):
    directory = tmp_path / "logs"
    for n, job_id in enumerate(["old", "mid", "new", "forgotten"]):
        w = log_spool.SpoolWriter(directory, job_id)
        w.append("x" * 1000, batches=1)
        w.close()
        for name in os.listdir(directory):
            if name.startswith(job_id + "."):
                os.utime(directory / name, (1000 + n, 1000 + n))
    removed = log_spool.prune(directory, keep={"old", "mid", "new"}, max_total=2100)
    assert removed == 4  # 'forgotten' (not in the journal) and 'old' (over the total)
    assert sorted(os.listdir(directory)) == ["mid.follow", "mid.log", "new.follow", "new.log"]


def test_a_spawner_that_only_asks_the_status_writes_nothing_twice(fresh_home):
    """The notebook case: the kernel's view of a spawned job asks its status now and then;
    when the job ends, /status hands it the whole output: the follower has written it."""
    job = ticker.spawn(8, 0.4)
    wait_for(lambda: job.status == "IN_PROGRESS", timeout=60, what="the job to start")
    proc = rpremote_cli("logs", "-f", job.id)
    lines: list[tuple[float, str]] = []
    pump = read_lines_while(proc, lines)
    try:
        wait_for(lambda: lines, timeout=30, what="the watcher's first line")
        wait_for(lambda: job.status == "COMPLETED", timeout=60, what="the job to end")
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(5)
    every = "".join(f"tick {i}\n" for i in range(8))
    assert job.logs == every  # this process got them all, from the final status
    assert "".join(line for _, line in lines) == every
    assert log_spool.read(fresh_home / "logs", job.id)[0] == every
    assert log_spool.follow_state(fresh_home / "logs", job.id).done
