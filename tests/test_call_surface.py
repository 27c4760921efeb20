"""spawn, Job, await, attach and streamed generators, on real SDK workers (local target)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

import rpremote
from rpremote import remote
from rpremote.errors import JobCancelled

from conftest import RecordingReporter

pytestmark = pytest.mark.usefixtures("rpremote_home")


@remote(workers=(0, 2), idle_timeout=60)
def slow_square(x, delay=0.0):
    print(f"squaring {x}", flush=True)
    time.sleep(delay)
    return x * x


@remote(workers=(0, 2), idle_timeout=60)
def countdown(n, delay):
    for i in range(n, 0, -1):
        print(f"tick {i}", flush=True)
        yield {"i": i, "t": time.time()}
        time.sleep(delay)


@remote(workers=(0, 2), idle_timeout=60)
async def async_countdown(n):
    import asyncio
    for i in range(n):
        await asyncio.sleep(0.01)
        yield i


@remote(workers=(0, 2), idle_timeout=60)
async def async_add(a, b):
    import asyncio
    await asyncio.sleep(0.01)
    return a + b


@remote(workers=(0, 2), idle_timeout=60)
def broken_generator():
    yield 1
    raise ValueError("broke after one item")


def test_spawn_returns_at_once_and_job_handle_tells_everything():
    t0 = time.monotonic()
    job = slow_square.spawn(7, delay=2)
    assert time.monotonic() - t0 < 1.5
    assert isinstance(job, rpremote.Job)
    assert job.id and job.status in ("IN_QUEUE", "IN_PROGRESS")
    assert not job.done
    assert job.result(timeout=60) == 49
    assert job.status == "COMPLETED" and job.done
    assert "squaring 7" in job.logs
    assert job.execution_time is not None and job.execution_time >= 2.0
    assert job.delay_time is not None and job.delay_time >= 0
    kinds = [e["t"] for e in job.events()]
    assert kinds[0] == "log" and kinds[-1] == "result"
    assert job.result() == 49  # again, without another request


def test_result_timeout_leaves_the_job_running():
    job = slow_square.spawn(3, delay=3)
    with pytest.raises(TimeoutError):
        job.result(timeout=0.5)
    assert job.result(timeout=60) == 9


def test_many_spawned_jobs_run_concurrently():
    t0 = time.monotonic()
    jobs = [slow_square.spawn(i, delay=2) for i in range(4)]
    assert [j.result(timeout=120) for j in jobs] == [0, 1, 4, 9]
    assert time.monotonic() - t0 < 4 * 2 + 6  # two workers share them


def test_cancel_a_spawned_job():
    job = slow_square.spawn(5, delay=30)
    time.sleep(0.5)
    job.cancel()
    assert job.status == "CANCELLED"
    with pytest.raises(JobCancelled):
        job.result()


def test_await_a_job_and_aio_inside_an_event_loop():
    async def main():
        job = slow_square.spawn(6)
        ticker = 0

        async def tick():
            nonlocal ticker
            while True:
                ticker += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(tick())
        a, b = await asyncio.gather(job, slow_square.aio(8, delay=0.5))
        t.cancel()
        return a, b, ticker

    a, b, ticker = asyncio.run(main())
    assert (a, b) == (36, 64)
    assert ticker > 10  # the loop kept running while the calls were in flight


def test_attach_from_another_process():
    job = slow_square.spawn(12, delay=1)
    code = (
        "import rpremote, sys\n"
        f"job = rpremote.Job.attach({job.id!r}, {job.endpoint!r})\n"
        "print(job.result(timeout=60))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "144"
    assert job.result() == 144


def test_generator_items_arrive_before_the_generator_ends():
    rec = RecordingReporter()
    rpremote.configure(reporter=rec)
    try:
        received = []
        for item in countdown(4, 1.0):
            received.append((time.time(), item))
    finally:
        from rpremote import config
        config.reset()
    assert [item["i"] for _, item in received] == [4, 3, 2, 1]
    first_arrival = received[0][0]
    last_produced = received[-1][1]["t"]
    assert last_produced - first_arrival > 2.0, "the first item must arrive long before the last is made"
    assert "tick 4" in rec.text()


def test_explicit_stream_async_generators_and_coroutines():
    assert list(countdown.stream(3, 0)) == [{"i": i, "t": pytest.approx(time.time(), abs=60)}
                                            for i in (3, 2, 1)]
    assert list(async_countdown(5)) == [0, 1, 2, 3, 4]
    assert async_add(2, 3) == 5


def test_generator_failure_after_items_raises_after_them():
    got = []
    with pytest.raises(ValueError, match="broke after one item"):
        for item in broken_generator():
            got.append(item)
    assert got == [1]


def test_local_runs_here():
    assert slow_square.local(4) == 16
    assert list(countdown.local(2, 0))[0]["i"] == 2
