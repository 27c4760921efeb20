"""Stopping and retrying on real SDK workers: Ctrl-C, task cancel, stubborn code, ttl, retries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rpremote
from rpremote import Retries, remote
from rpremote.errors import ConfigError, JobExpired, WorkerLost

from conftest import RecordingReporter, wait_for

pytestmark = pytest.mark.usefixtures("rpremote_home")


def _attempt(folder: str) -> int:
    """Number this run in ``folder`` (0, 1, ...), recording the worker's pid."""
    p = Path(folder)
    n = len(list(p.glob("attempt-*")))
    (p / f"attempt-{n}").write_text(str(os.getpid()))
    return n


class Flaky(Exception):
    pass


@remote(workers=(0, 2), idle_timeout=60, retries=Retries(2, backoff=0.1))
def sleeps_on_first_attempt(folder, seconds):
    n = _attempt(folder)
    if n == 0:
        time.sleep(seconds)
    return n, os.getpid()


@remote(workers=(0, 2), idle_timeout=60, retries=Retries(3, backoff=0.05, on=[Flaky]))
def fails_twice(folder):
    n = _attempt(folder)
    if n < 2:
        raise Flaky(f"attempt {n}")
    return f"ok on attempt {n}"


@remote(workers=(0, 2), idle_timeout=60, retries=Retries(3, backoff=0.05, on=["Flaky"]))
def value_error(folder):
    _attempt(folder)
    raise ValueError("an ordinary bug")


@remote(workers=(0, 2), idle_timeout=60, retries=Retries(2, backoff=0.05, on=[Flaky]))
def item_three_flaky_once(folder, x):
    if x == 3 and not (Path(folder) / "failed-once").exists():
        (Path(folder) / "failed-once").write_text("")
        raise Flaky("item 3, first try")
    (Path(folder) / f"ran-{x}-{time.monotonic_ns()}").write_text("")
    return x * 10


def test_retry_after_the_worker_is_killed_mid_job(tmp_path):
    rec = RecordingReporter()
    rpremote.configure(reporter=rec)
    try:
        job = sleeps_on_first_attempt.spawn(str(tmp_path), 60)
        first = wait_for(lambda: (tmp_path / "attempt-0").exists() and (tmp_path / "attempt-0").read_text(),
                         timeout=60, what="the first attempt to start")
        first_id = job.id
        os.kill(int(first), signal.SIGKILL)
        n, pid = job.result(timeout=90)
    finally:
        from rpremote import config
        config.reset()
    assert n == 1 and pid != int(first)
    assert len(job.attempts) == 1
    failed_id, why = job.attempts[0]
    assert failed_id == first_id != job.id
    assert isinstance(why, WorkerLost) and "SIGKILL" in str(why)
    assert "RETRYING" in [status for status, _ in rec.statuses]


def test_a_blocking_call_is_retried_too(tmp_path):
    import threading

    def killer():
        first = wait_for(lambda: (tmp_path / "attempt-0").exists() and (tmp_path / "attempt-0").read_text(),
                         timeout=60, what="the first attempt")
        os.kill(int(first), signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    n, _ = sleeps_on_first_attempt(str(tmp_path), 60)
    t.join()
    assert n == 1


def test_named_exceptions_are_retried_with_backoff(tmp_path):
    t0 = time.monotonic()
    assert fails_twice(str(tmp_path)) == "ok on attempt 2"
    assert len(list(tmp_path.glob("attempt-*"))) == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backoff 0.05, then 0.1


def test_ordinary_exceptions_are_not_retried(tmp_path):
    job = value_error.spawn(str(tmp_path))
    with pytest.raises(ValueError, match="an ordinary bug"):
        job.result(timeout=60)
    assert job.attempts == []
    assert len(list(tmp_path.glob("attempt-*"))) == 1


def test_map_retries_only_the_items_that_failed(tmp_path):
    out = list(item_three_flaky_once.map([str(tmp_path)] * 6, range(6), batch_size=3))
    assert out == [0, 10, 20, 30, 40, 50]
    ran = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("ran-*"))
    assert ran == [0, 1, 2, 3, 4, 5]  # item 3 ran again alone; 4 and 5 once each


def test_retries_are_checked_at_decoration():
    with pytest.raises(ConfigError, match="retries"):
        remote(retries=-1)
    with pytest.raises(ConfigError, match="retries"):
        remote(retries="3")
    with pytest.raises(ConfigError, match="Retries.on"):
        Retries(2, on=[42])
    with pytest.raises(ConfigError, match="factor"):
        Retries(2, factor=0.5)
    with pytest.raises(ConfigError, match="generator"):
        @remote(retries=2)
        def gen():
            yield 1
    assert [Retries(5, backoff=1, factor=3, max_backoff=20).delay(i) for i in (1, 2, 3, 4)] == [1, 3, 9, 20]
    assert not Retries(1).applies(ValueError()) and Retries(1).applies(WorkerLost("WorkerLost", "x"))
    assert not Retries(1, on=[Exception]).applies(KeyboardInterrupt())


# -- ttl -----------------------------------------------------------------------------------------

@remote(workers=1, idle_timeout=60)
def occupy(seconds):
    time.sleep(seconds)
    return "done"


@remote(workers=1, idle_timeout=60, ttl=10)
def short_lived():
    return "ran"


def test_a_job_whose_ttl_runs_out_in_the_queue_expires():
    with pytest.raises(ConfigError, match="ttl"):
        remote(ttl=5)  # the platform's minimum is 10 s
    blocker = occupy.spawn(14)  # the single worker is busy for longer than the ttl
    wait_for(lambda: rpremote.Job.attach(blocker.id, blocker.endpoint).status == "IN_PROGRESS",
             timeout=60, what="the blocker to run")
    t0 = time.monotonic()
    job = short_lived.spawn()
    with pytest.raises(JobExpired, match="ttl of 10 s"):
        job.result(timeout=60)
    assert 8 < time.monotonic() - t0 < 14
    assert job.status == "EXPIRED"
    assert blocker.result(timeout=60) == "done"


# -- stopping ------------------------------------------------------------------------------------

def _ticks(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@remote(workers=(0, 2), idle_timeout=60)
def tick_and_record_stop(folder, seconds):
    """Ticks into ``folder/ticks``; records which exception stopped it, then lets it go."""
    import pathlib
    p = pathlib.Path(folder)
    (p / "pid").write_text(str(os.getpid()))
    try:
        for _ in range(int(seconds * 10)):
            with (p / "ticks").open("a") as f:
                f.write(".")
            time.sleep(0.1)
    except BaseException as e:
        (p / "stopped-by").write_text(type(e).__name__)
        raise
    return "finished"


@remote(workers=(0, 2), idle_timeout=60, env={"RPREMOTE_STOP_GRACE_S": "1.5"})
def ignores_stops(folder):
    import pathlib
    p = pathlib.Path(folder)
    (p / "pid").write_text(str(os.getpid()))
    while True:
        try:
            while True:
                with (p / "ticks").open("a") as f:
                    f.write(".")
                time.sleep(0.1)
        except BaseException as e:  # swallows the stop, and keeps going
            (p / "swallowed").write_text(type(e).__name__)


@remote(workers=1, idle_timeout=60, env={"RPREMOTE_STOP_GRACE_S": "3"})
def sleeps_in_c_or_says_pid(seconds):
    time.sleep(seconds)  # one C call: JobStopped cannot interrupt it
    return os.getpid()


def _assert_stopped(folder: Path) -> None:
    wait_for(lambda: (folder / "stopped-by").exists(), timeout=15, what="the remote stop")
    assert (folder / "stopped-by").read_text() == "JobStopped"
    size = _ticks(folder / "ticks")
    time.sleep(1.0)
    assert _ticks(folder / "ticks") == size, "the remote function kept running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_function_that_ignores_the_stop_loses_its_worker(tmp_path):
    job = ignores_stops.spawn(str(tmp_path))
    wait_for(lambda: _ticks(tmp_path / "ticks") >= 3, timeout=60, what="ticks")
    pid = int((tmp_path / "pid").read_text())
    job.cancel()
    assert job.status == "CANCELLED"
    wait_for(lambda: (tmp_path / "swallowed").exists(), timeout=15, what="the stop to arrive")
    assert (tmp_path / "swallowed").read_text() == "JobStopped"
    wait_for(lambda: not _alive(pid), timeout=20, what="the stuck worker to exit")
    size = _ticks(tmp_path / "ticks")
    time.sleep(0.5)
    assert _ticks(tmp_path / "ticks") == size
    assert ignores_stops.resources.endpoint_name  # and the endpoint still serves:
    assert occupy(0) == "done"


def test_cancelling_the_awaiting_task_cancels_the_remote_job(tmp_path):
    async def main():
        task = asyncio.ensure_future(tick_and_record_stop.aio(str(tmp_path), 60))
        while _ticks(tmp_path / "ticks") < 3:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    _assert_stopped(tmp_path)


def test_many_aio_calls_run_at_once_without_threads():
    async def main():
        return await asyncio.gather(*(occupy.aio(0.5) for _ in range(3)),
                                    *(fails_twice_free.aio(i) for i in range(40)))

    out = asyncio.run(main())
    assert out == ["done"] * 3 + [i + 1 for i in range(40)]


@remote(workers=(0, 2), idle_timeout=60)
def fails_twice_free(i):
    return i + 1


CTRL_C_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_stop_and_retry import tick_and_record_stop
print("calling", flush=True)
tick_and_record_stop({folder!r}, 60)
"""


@pytest.mark.parametrize("after_s", [0.0, 2.5], ids=["during-submit", "while-following"])
def test_ctrl_c_in_a_script_cancels_the_remote_job(tmp_path, after_s):
    # A warm worker starts the job at once, so at 0 s the interrupt lands while /runsync is
    # still held open (the job's id not yet known to the client).
    assert tick_and_record_stop(str(tmp_path), 0) == "finished"
    script = tmp_path / "script.py"
    folder = tmp_path / "job"
    folder.mkdir()
    script.write_text(CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder)))
    # SIGINT at its default even when the suite runs as a background job (where the shell
    # starts it ignored, and the script would rightly ignore our Ctrl-C).
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: _ticks(folder / "ticks") >= 1, timeout=60, what="the remote ticks")
        time.sleep(after_s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    _assert_stopped(folder)


def test_a_worker_with_a_lingering_stopped_job_takes_no_new_job():
    # The stopped job sits in time.sleep(60): its worker must exit after the grace (3 s).
    # A job submitted meanwhile must wait for a fresh worker, not be taken by the doomed one
    # and lost with it (WorkerLost) -- it once broke whichever test ran next on the endpoint.
    stuck = sleeps_in_c_or_says_pid.spawn(60)
    wait_for(lambda: stuck.status == "IN_PROGRESS", timeout=60, what="the sleeper to start")
    worker = stuck.worker
    stuck.cancel()
    assert stuck.status == "CANCELLED"
    t0 = time.monotonic()
    pid = sleeps_in_c_or_says_pid(0)  # the only worker may not take it before it exits
    assert time.monotonic() - t0 > 2.0, "the job ran on the worker that had to exit"
    assert pid != 0
    job = sleeps_in_c_or_says_pid.spawn(0)
    assert job.result(timeout=60) == pid
    assert job.worker != worker
