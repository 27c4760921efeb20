"""The job journal: every @remote job recorded (real emulator, real SDK workers), the CLI over
it, and a journal that cannot be written never failing a call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rpremote import config, journal, remote
from rpremote.client import targets

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("rpremote_home")

SECRET_ARG = "zebra-payload-7f3e9c"  # a distinctive argument: must never reach the journal


@remote(workers=(0, 2), idle_timeout=60)
def shout(word):
    print(f"said {word}", flush=True)
    return word.upper()


@remote(workers=(0, 2), idle_timeout=60)
def nap(seconds):
    print("napping", flush=True)
    # Short sleeps, so a cancel stops it at once: one long C call ignores the stop, and its
    # worker (shared with other tests' functions of these resources) ends 10 s later, taking
    # down whatever job it runs then.
    for _ in range(int(seconds * 10)):
        time.sleep(0.1)
    return "woke"


@remote(workers=(0, 2), idle_timeout=60)
def fails(n):
    raise ValueError(f"bad input number {n}\nsecond line")


@remote(workers=(0, 2), idle_timeout=60)
def square(x):
    return x * x


@pytest.fixture(autouse=True)
def quiet():
    config.configure(quiet=True)
    yield
    config.reset()


def cli(*args, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpremote", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "RPREMOTE_HOME": str(home)})


def _started(job) -> bool:
    return job.status == "IN_PROGRESS"


def test_calls_spawns_failures_and_maps_are_recorded_without_secrets(rpremote_home):
    t0 = time.time()
    assert shout(SECRET_ARG) == SECRET_ARG.upper()
    job = nap.spawn(60)
    wait_for(lambda: _started(job), timeout=60, what="the nap to start")
    job.cancel()
    assert job.status == "CANCELLED"
    with pytest.raises(ValueError):
        fails(7)
    assert list(square.map(range(20), batch_size=5)) == [x * x for x in range(20)]
    t1 = time.time()

    rows = [e for e in journal.recent(limit=100) if e.submitted_at >= t0 - 1]
    by_name: dict[str, list[journal.Entry]] = {}
    for e in rows:
        by_name.setdefault(e.name, []).append(e)
    (call,) = by_name["shout"]
    (spawned,) = by_name["nap"]
    (failed,) = by_name["fails"]
    mapped = by_name["square"]
    assert len(mapped) == 4 and {e.kind for e in mapped} == {"map"}
    assert (call.kind, call.status, call.target, call.gpu) == ("call", "COMPLETED", "local", "CPU")
    assert call.endpoint == shout.resources.endpoint_name
    assert call.worker and call.execution_ms is not None and call.delay_ms is not None
    assert t0 - 1 <= call.submitted_at <= call.started_at <= call.finished_at <= t1 + 1
    assert call.cost_usd is None  # CPU: no GPU price
    assert spawned.id == job.id and spawned.status == "CANCELLED" and spawned.worker
    assert failed.status == "FAILED"
    assert failed.error == "ValueError: bad input number 7"
    assert all(e.status == "COMPLETED" and e.worker for e in mapped)
    assert all(e.attempts == 1 for e in rows)

    home = Path(rpremote_home)
    secret, _ = config.secret_source()
    key = (home / "emulator" / "api_key").read_text().strip()
    # Read the bytes in another process: opening and closing the file here would drop this
    # process's POSIX locks on it (SQLite's documented pitfall), not a thing rpremote does.
    blob = subprocess.run(
        [sys.executable, "-c", "import sys, glob; sys.stdout.buffer.write(b''.join("
         "open(p, 'rb').read() for p in glob.glob(sys.argv[1] + '*')))", str(home / "jobs.sqlite3")],
        capture_output=True, check=True).stdout
    assert blob and job.id.encode() in blob
    for needle in (secret, key.encode(), SECRET_ARG.encode(), SECRET_ARG.upper().encode(),
                   b"second line"):
        assert needle not in blob


def test_cli_lists_prints_logs_and_cancels(rpremote_home):
    assert shout("hello-cli") == "HELLO-CLI"
    call = journal.recent(limit=1, name="shout")[0]

    r = cli("jobs", "--limit", "5", home=rpremote_home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "NAME", "ENDPOINT", "GPU", "STATUS"]
    assert any(call.id[:13] in line and "shout" in line and "COMPLETED" in line for line in lines)

    r = cli("jobs", "--json", "--status", "completed", "--limit", "3", home=rpremote_home)
    listed = json.loads(r.stdout)
    assert listed[0]["id"] == call.id and all(e["status"] == "COMPLETED" for e in listed)

    r = cli("logs", call.id[:13], home=rpremote_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "said hello-cli\n"

    job = nap.spawn(60)
    assert journal.get(job.id).status == "IN_QUEUE"
    wait_for(lambda: _started(job), timeout=60, what="the nap to start")
    r = cli("cancel", job.id[:13], home=rpremote_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{job.id}: CANCELLED"
    assert journal.get(job.id).status == "CANCELLED"
    assert targets.current().queue.status(job.endpoint, job.id)["status"] == "CANCELLED"
    assert job.refresh() == "CANCELLED"

    # A spawned job nobody follows reads IN_QUEUE in the journal; `jobs` asks the platform.
    quick = shout.spawn("unfollowed")
    queue, endpoint = targets.current().queue, quick.endpoint
    wait_for(lambda: queue.status(endpoint, quick.id)["status"] == "COMPLETED", timeout=60,
             what="the unfollowed job to end")
    assert journal.get(quick.id).status == "IN_QUEUE"
    r = cli("jobs", "--cached", "--limit", "3", home=rpremote_home)
    assert any(quick.id[:13] in line and "IN_QUEUE" in line for line in r.stdout.splitlines())
    r = cli("jobs", "--limit", "3", home=rpremote_home)
    assert any(quick.id[:13] in line and "COMPLETED" in line for line in r.stdout.splitlines()), r.stdout
    assert journal.get(quick.id).status == "COMPLETED"
    assert journal.get(quick.id).execution_ms is not None

    r = cli("logs", "no-such-job", home=rpremote_home)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("rpremote logs: no job 'no-such-job' in the job journal")
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("cancel", "sync-", home=rpremote_home)  # every blocking call's id starts so
    assert r.returncode == 1 and "several jobs" in r.stderr


def test_logs_without_a_running_emulator_say_so(tmp_path):
    j = journal.journal(tmp_path / "jobs.sqlite3")
    j.record("abc-123", "rpremote-cpu-0", target="local", name="f", status="COMPLETED",
             submitted_at=time.time())
    r = cli("logs", "abc", home=tmp_path)
    assert r.returncode == 1
    assert "the local emulator is not running" in r.stderr
    r = cli("jobs", home=tmp_path)
    assert "abc-123" in r.stdout and "gone with it" not in r.stdout
    j.record("def-456", "rpremote-cpu-0", target="local", name="g", status="IN_QUEUE",
             submitted_at=time.time())
    r = cli("jobs", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(1 job not seen ending ran on the local emulator, which is not running now" in r.stdout


def test_an_unwritable_journal_warns_once_and_the_call_goes_on(monkeypatch, capfd, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the journal's directory should be")
    monkeypatch.setattr(journal, "data_dir", lambda: blocker / "rpremote")
    assert shout("one") == "ONE"
    assert shout("two") == "TWO"
    err = capfd.readouterr().err
    assert err.count("cannot write the job journal") == 1
    assert "calls go on" in err


def test_concurrent_spawns_lose_no_rows():
    jobs: list = []
    lock = threading.Lock()

    def spawn(i):
        job = square.spawn(i)
        with lock:
            jobs.append(job)

    threads = [threading.Thread(target=spawn, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(jobs) == 30
    ids = {j.id for j in jobs}
    assert ids <= {e.id for e in journal.recent(limit=200)}
    results = [None] * 30

    def follow(k):
        results[k] = jobs[k].result()

    threads = [threading.Thread(target=follow, args=(k,)) for k in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    done = {e.id: e.status for e in journal.recent(limit=200) if e.id in ids}
    assert len(done) == 30 and set(done.values()) == {"COMPLETED"}


def test_journal_prunes_to_the_newest_and_resolves_prefixes(tmp_path):
    j = journal.Journal(tmp_path / "j.sqlite3")
    now = time.time()
    for i in range(30):
        assert j.record(f"job-{i:03d}", "ep", status="COMPLETED", submitted_at=now + i)
    assert j.prune(keep=10)
    kept = j.recent(limit=100)
    assert [e.id for e in kept] == [f"job-{i:03d}" for i in range(29, 19, -1)]
    assert j.get("job-025").id == "job-025"
    with pytest.raises(journal.AmbiguousJobId):
        j.get("job-02")
    assert j.get("nope") is None
    assert j.update("job-029", error="boom\nmore") and j.get("job-029").error == "boom"
    with pytest.raises(TypeError):
        j.record("x", "ep", payload=b"never")


@remote(workers=(0, 2), idle_timeout=60)
def count_to(n):
    yield from range(n)


def test_generators_and_aio_calls_are_recorded():
    import asyncio

    assert list(count_to(3)) == [0, 1, 2]
    assert asyncio.run(shout.aio("async")) == "ASYNC"
    (gen,) = journal.recent(limit=1, name="count_to")
    assert (gen.status, gen.kind) == ("COMPLETED", "call") and gen.worker
    aio = journal.recent(limit=1, name="shout")[0]
    assert aio.status == "COMPLETED" and aio.execution_ms is not None
