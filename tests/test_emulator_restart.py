"""The local target comes back: an auto-started emulator SIGKILLed under a process that keeps
running is replaced on that process's next call; a call in flight fails at once with its
outcome unknown (and the journal says so); the dead emulator's workers do not outlive it.
Real processes throughout: each test has its own RPREMOTE_HOME and so its own emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rpremote import config, journal, remote
from rpremote.client import targets
from rpremote.errors import EmulatorStopped, OutcomeUnknown

from conftest import gone, stop_pid, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc to follow the emulator's worker processes")

BOUND_S = 15.0  # how long a call in flight may take to fail; orphans to go


@remote(workers=(0, 2), idle_timeout=60)
def where(x):
    return x, os.getppid()


@remote(workers=(0, 2), idle_timeout=60)
def nap(seconds):
    for _ in range(int(seconds * 10)):  # short sleeps: a stop takes effect at once
        time.sleep(0.1)
    return "woke"


@pytest.fixture
def home(fresh_home):
    """A fresh RPREMOTE_HOME, and the pid of its emulator now; every emulator started under
    it is stopped by its pid at the end."""
    seen: set[int] = set()

    def emulator_pid() -> int:
        pid = json.loads((fresh_home / "emulator" / "server.json").read_text())["pid"]
        seen.add(pid)
        return pid

    yield fresh_home, emulator_pid
    for pid in seen:
        stop_pid(pid)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``: the reapers, the workers and the SDK's heartbeat processes."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(b")") + 2:].split()[1]), []).append(int(name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _kill(pid: int) -> tuple[float, set[int]]:
    """SIGKILL the emulator; when, and the processes it leaves behind."""
    orphans = _descendants(pid)
    os.kill(pid, signal.SIGKILL)
    return time.monotonic(), orphans


def _all_gone(pids: set[int], since: float) -> float:
    wait_for(lambda: all(gone(p) for p in pids), timeout=BOUND_S, interval=0.05,
             what=f"the dead emulator's workers {sorted(p for p in pids if not gone(p))} to exit")
    return time.monotonic() - since


def _in_progress(name: str) -> list[journal.Entry]:
    return [e for e in journal.recent(limit=50, name=name) if e.status == "IN_PROGRESS"]


def test_an_emulator_killed_between_two_calls_is_replaced_on_the_next(home, capsys):
    _, emulator_pid = home
    assert where(1)[0] == 1
    first = emulator_pid()
    killed_at, orphans = _kill(first)
    assert orphans, "the emulator had started a worker"
    lived = _all_gone(orphans, killed_at)
    assert gone(first)

    t0 = time.monotonic()
    value, worker_parent = where(2)
    took = time.monotonic() - t0
    assert value == 2
    second = emulator_pid()
    assert second != first and targets.current().emulator.pid == second
    assert "the local emulator (pid %d) has stopped; switching to a new one" % first \
        in capsys.readouterr().err
    assert worker_parent not in orphans  # a worker of the new emulator ran it
    calls = journal.recent(limit=10, name="where")
    assert [e.status for e in calls] == ["COMPLETED", "COMPLETED"]
    assert calls[0].worker != calls[1].worker
    print(f"\nnext call on a new emulator: {took:.2f} s; orphaned workers lived {lived:.2f} s")


def test_a_call_in_flight_fails_at_once_with_its_outcome_unknown(home):
    _, emulator_pid = home
    config.configure(quiet=True)
    spawned = nap.spawn(60)  # a handle held across the restart
    outcome: list[BaseException] = []
    ended_at: list[float] = []

    def call():
        try:
            nap(60)
        except BaseException as e:
            outcome.append(e)
        ended_at.append(time.monotonic())

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    # (The journal hears of the spawned job's start only when someone asks: its status does.)
    wait_for(lambda: spawned.status == "IN_PROGRESS" and len(_in_progress("nap")) == 2,
             timeout=60, what="both naps to run")
    first = emulator_pid()
    killed_at, orphans = _kill(first)

    caller.join(BOUND_S)
    assert not caller.is_alive(), "the call in flight did not fail"
    failed_in = ended_at[0] - killed_at
    assert failed_in < BOUND_S
    (error,) = outcome
    assert isinstance(error, OutcomeUnknown) and error.status == "UNKNOWN"
    text = str(error)
    assert f"the local emulator (pid {first}) stopped while job {error.job_id} (nap) was " \
           "IN_PROGRESS: its outcome is unknown (the next call starts a new emulator)" == text
    lived = _all_gone(orphans, killed_at)
    entry = journal.get(error.job_id)
    assert entry.status == "UNKNOWN" and entry.finished_at
    assert "outcome is unknown" in entry.error
    assert journal.get(spawned.id).status == "IN_PROGRESS"  # not followed yet

    # The next call starts a new emulator; the handle of a job on the dead one does not
    # follow it there: it answers, at once, that its outcome is unknown.
    t0 = time.monotonic()
    assert where(3)[0] == 3
    took = time.monotonic() - t0
    assert emulator_pid() != first
    t1 = time.monotonic()
    with pytest.raises(OutcomeUnknown, match=f"pid {first}.*job {spawned.id} .*outcome is unknown"):
        spawned.result(timeout=30)
    assert time.monotonic() - t1 < 2
    assert spawned.status == "UNKNOWN" and journal.get(spawned.id).status == "UNKNOWN"
    with pytest.raises(OutcomeUnknown):  # asked again: the same answer
        spawned.result()
    r = subprocess.run([sys.executable, "-m", "rpremote", "jobs", "--json"], capture_output=True,
                       text=True, timeout=60, env=os.environ)
    listed = {e["id"]: e["status"] for e in json.loads(r.stdout)}
    assert listed[error.job_id] == listed[spawned.id] == "UNKNOWN"  # not asked again
    print(f"\nin-flight call failed {failed_in:.3f} s after the kill; next call on a new "
          f"emulator: {took:.2f} s; orphaned workers lived {lived:.2f} s")


def test_a_map_in_flight_fails_at_once_and_its_jobs_are_recorded_unknown(home):
    _, emulator_pid = home
    config.configure(quiet=True)
    outcome: list[BaseException] = []
    ended_at: list[float] = []

    def mapping():
        try:
            list(nap.map([60] * 8, batch_size=1, concurrency=4))
        except BaseException as e:
            outcome.append(e)
        ended_at.append(time.monotonic())

    t_start = time.time()
    runner = threading.Thread(target=mapping, daemon=True)
    runner.start()
    wait_for(lambda: len(_in_progress("nap")) == 2, timeout=60, what="two map jobs to run")
    first = emulator_pid()
    killed_at, orphans = _kill(first)

    runner.join(BOUND_S)
    assert not runner.is_alive(), "the map in flight did not fail"
    (error,) = outcome
    assert isinstance(error, (OutcomeUnknown, EmulatorStopped))
    assert f"the local emulator (pid {first})" in str(error)

    def recorded():  # by each job's own thread, which may end just after the map raised
        jobs = [e for e in journal.recent(limit=50, name="nap") if e.submitted_at >= t_start - 1]
        return jobs if {e.status for e in jobs} == {"UNKNOWN"} else None

    jobs = wait_for(recorded, timeout=5, what="the map's jobs to be recorded UNKNOWN")
    assert len(jobs) == 4 and {e.kind for e in jobs} == {"map"}  # two were running, two queued
    queued = [e for e in jobs if "was IN_QUEUE" in e.error]
    assert len(queued) == 2
    lived = _all_gone(orphans, killed_at)

    # The new emulator does not run what the dead one left queued: its callers gave it up
    # as unknown, and may well send it again. The next call does not wait behind it.
    t0 = time.monotonic()
    assert where(4)[0] == 4
    assert time.monotonic() - t0 < 30
    queue = targets.current().queue
    for e in queued:
        st = queue.status(e.endpoint, e.id)
        assert st["status"] == "FAILED" and "it was not run" in st["error"]
    print(f"\nmap failed {ended_at[0] - killed_at:.3f} s after the kill; "
          f"orphans lived {lived:.2f} s")


def test_a_call_not_yet_sent_when_the_emulator_died_goes_to_the_new_one(home, monkeypatch):
    """The emulator dies after the call found the target and before its request left: nothing
    was sent, so it is sent to a new emulator, once."""
    _, emulator_pid = home
    config.configure(quiet=True)
    assert where(1)[0] == 1
    first = emulator_pid()
    stale = targets.current()
    _, orphans = _kill(first)
    wait_for(lambda: not stale.emulator.alive(), timeout=5, what="the kill to land")
    answers = iter([True])  # the pid check before the call misses the death once
    monkeypatch.setattr(stale, "alive", lambda: next(answers, False))
    assert where(5)[0] == 5
    assert emulator_pid() != first and targets.current() is not stale
    assert [e.status for e in journal.recent(limit=10, name="where")] == ["COMPLETED"] * 2
    _all_gone(orphans, time.monotonic())


def test_aio_call_in_flight_fails_with_its_outcome_unknown(home):
    import asyncio

    _, emulator_pid = home
    config.configure(quiet=True)

    async def scenario():
        task = asyncio.ensure_future(nap.aio(60))
        while not _in_progress("nap"):
            await asyncio.sleep(0.1)
        killed_at, orphans = _kill(emulator_pid())
        with pytest.raises(OutcomeUnknown, match="outcome is unknown"):
            await asyncio.wait_for(task, BOUND_S)
        return time.monotonic() - killed_at, orphans

    failed_in, orphans = asyncio.run(scenario())
    assert failed_in < BOUND_S
    assert (journal.recent(limit=1, name="nap")[0]).status == "UNKNOWN"
    assert where(6)[0] == 6
    _all_gone(orphans, time.monotonic())


def test_a_stopped_emulator_is_seen_from_its_pid_even_as_an_unreaped_zombie(tmp_path):
    """A killed emulator started by this process is its zombie until reaped: kill(pid, 0)
    still succeeds, so the check must read the process state."""
    from rpremote.client.local import LocalEmulator, _pid_alive

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _pid_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: gone(proc.pid, reap=False), timeout=5, what="the zombie")
        assert Path(f"/proc/{proc.pid}").exists()  # not reaped yet
        assert not _pid_alive(proc.pid)
        assert not LocalEmulator("http://127.0.0.1:9", "k", proc.pid, started_here=False).alive()
        assert not _pid_alive(0) and not _pid_alive(-1)
    finally:
        proc.kill()
        proc.wait()
