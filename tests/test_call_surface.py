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


class Ticker:
    """Counts event-loop turns every 10 ms while it runs: proof that the loop is not blocked."""

    def __init__(self):
        self.ticks = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

    def stop(self) -> int:
        self._task.cancel()
        return self.ticks


def test_await_a_job_and_aio_inside_an_event_loop():
    async def main():
        job = slow_square.spawn(6)
        ticker = Ticker()
        a, b = await asyncio.gather(job, slow_square.aio(8, delay=0.5))
        return a, b, ticker.stop()

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


def test_astream_inside_an_event_loop_and_leaving_early_cancels_the_job():
    from contextlib import aclosing
    from rpremote import config
    from rpremote.errors import ConfigError

    async def main():
        ticker = Ticker()
        received = []
        async for item in countdown.astream(3, 1.0):
            received.append((time.time(), ticker.ticks, item))
        ticker.stop()
        rec = RecordingReporter()
        rpremote.configure(reporter=rec)
        try:
            async with aclosing(countdown.astream(100, 0.2)) as items:
                async for item in items:
                    break
        finally:
            config.reset()
        with pytest.raises(ConfigError, match="astream"):
            await countdown.aio(1, 0)
        with pytest.raises(ConfigError, match="aio"):
            async for _ in slow_square.astream(1):
                pass
        return received, rec

    received, rec = asyncio.run(main())
    assert [item["i"] for _, _, item in received] == [3, 2, 1]
    assert received[-1][2]["t"] - received[0][0] > 1.0, "the first item arrives before the last is made"
    assert received[-1][1] > received[0][1] + 10, "the loop kept running between items"
    assert rec.finished_with == "CANCELLED"


def test_generator_failure_after_items_raises_after_them():
    got = []
    with pytest.raises(ValueError, match="broke after one item"):
        for item in broken_generator():
            got.append(item)
    assert got == [1]


@remote(workers=(0, 2), idle_timeout=60)
def train(epochs, seconds_each):
    import rpremote
    for epoch in range(1, epochs + 1):
        time.sleep(seconds_each)
        rpremote.progress(epoch, epochs, f"epoch {epoch}")
    return time.time()


class ProgressRecorder(RecordingReporter):
    def __init__(self):
        super().__init__()
        self.told: list[tuple[float, rpremote.Progress]] = []

    def progress(self, job, update):
        self.told.append((time.time(), update))


def test_progress_reports_arrive_live_and_stay_on_the_job():
    rec = ProgressRecorder()
    rpremote.configure(reporter=rec)
    try:
        job = train.spawn(4, 0.8)
        ended_at = job.result(timeout=120)
    finally:
        from rpremote import config
        config.reset()
    assert [u.message for _, u in rec.told] == [f"epoch {i}" for i in range(1, 5)]
    assert rec.told[0][0] < ended_at - 1.5, "the first report arrives while the job runs"
    assert job.progress == rpremote.Progress(4, 4, "epoch 4") and job.progress.fraction == 1
    told = [e for e in job.events() if e["t"] == "progress"]
    assert [e["done"] for e in told] == [1, 2, 3, 4]
    assert train.local(2, 0) > 0  # outside a job, progress() does nothing


def test_local_runs_here():
    assert slow_square.local(4) == 16
    assert list(countdown.local(2, 0))[0]["i"] == 2


# -- map ------------------------------------------------------------------------------------------

@remote(workers=(0, 2), idle_timeout=60)
def add_or_fail(x, y=0):
    if x == 13:
        raise ValueError(f"unlucky {x}")
    return x + y


@remote(workers=(2, 2), idle_timeout=60)
def sleepy_identity(x):
    time.sleep(0.6 if x == 0 else 0.0)
    return x


def test_map_of_10000_tiny_items_is_correct_and_in_order():
    xs = [x for x in range(10_001) if x != 13]
    assert list(add_or_fail.map(xs, [1] * len(xs))) == [x + 1 for x in xs]
    # An input of unknown length (a generator) is batched as it goes.
    assert list(add_or_fail.map(x for x in xs)) == xs
    assert list(add_or_fail.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_map_orders_by_input_or_by_completion():
    xs = list(range(6))
    from conftest import wait_for
    from rpremote.client import targets
    queue = targets.current().queue
    endpoint = targets.current().endpoint_for(sleepy_identity.resources)
    wait_for(lambda: queue.health(endpoint)["workers"]["idle"] == 2, timeout=60,
             what="both workers ready")
    assert list(sleepy_identity.map(xs, batch_size=1)) == xs
    done_order = list(sleepy_identity.map(xs, batch_size=1, order="completed"))
    assert sorted(done_order) == xs
    assert done_order[0] != 0  # the slow first item does not hold the others back


def test_map_partial_failures():
    out = list(add_or_fail.map(range(10, 16), return_exceptions=True, batch_size=2))
    assert out[:3] == [10, 11, 12] and out[4:] == [14, 15]
    assert isinstance(out[3], ValueError) and str(out[3]) == "unlucky 13"
    assert "unlucky" in out[3].__cause__.traceback

    got = []
    with pytest.raises(ValueError, match="unlucky 13"):
        for value in add_or_fail.map(range(10, 16), batch_size=2):
            got.append(value)
    assert got == [10, 11, 12]


def test_map_bad_settings_and_inputs_fail_before_sending():
    from rpremote.errors import ConfigError, UnpicklableError
    import threading

    with pytest.raises(ConfigError):
        list(add_or_fail.map([1], order="random"))
    with pytest.raises(ConfigError):
        list(add_or_fail.map([1], batch_size=0))
    with pytest.raises(ConfigError, match="generator"):
        list(countdown.map([1]))
    with pytest.raises(TypeError, match="at least one iterable"):
        list(add_or_fail.map())
    with pytest.raises(UnpicklableError) as info:
        list(add_or_fail.map([1, 2, threading.Lock()], batch_size=10))
    assert "map input 2" in str(info.value)


# -- stopping ------------------------------------------------------------------------------------

@remote(workers=(0, 2), idle_timeout=60)
def tick_into(path, seconds):
    import pathlib
    p = pathlib.Path(path)
    for _ in range(int(seconds * 10)):
        with p.open("a") as f:
            f.write(".")
        time.sleep(0.1)
    return "finished"


@remote(workers=(0, 2), idle_timeout=60, timeout=5)
def too_slow(path):
    return tick_into.fn(path, 60)


def test_cancelling_a_running_job_stops_the_remote_function(tmp_path):
    marker = tmp_path / "ticks"
    job = tick_into.spawn(str(marker), 60)
    from conftest import wait_for
    try:  # once (of ~5 full runs) no tick came within 60 s on a loaded 2-core CI: say why
        wait_for(lambda: marker.exists() and marker.stat().st_size >= 5, timeout=120, what="ticks")
    except AssertionError as e:
        raise AssertionError(f"{e}; job {job.id} is {job.refresh()} on worker {job.worker}; "
                             f"logs: {job.logs[-500:]!r}") from None
    job.cancel()
    assert job.status == "CANCELLED"
    time.sleep(1.5)  # the stop reaches the worker; the user's thread is interrupted
    size = marker.stat().st_size
    time.sleep(1.5)
    assert marker.stat().st_size == size, "the remote function kept running after cancel"
    assert tick_into(str(tmp_path / "again"), 0.2) == "finished"  # the worker is still usable


@remote(workers=(0, 1), idle_timeout=60)
def write_after(path, seconds):
    import pathlib
    time.sleep(seconds)
    pathlib.Path(path).write_text("ran")
    return "ran"


def test_cancelling_a_queued_job_removes_it_before_it_runs(tmp_path):
    blocker = write_after.spawn(str(tmp_path / "first"), 3)  # the endpoint's only worker
    queued = write_after.spawn(str(tmp_path / "second"), 0)
    from conftest import wait_for
    wait_for(lambda: blocker.status == "IN_PROGRESS", timeout=60, what="the first job running")
    assert queued.status == "IN_QUEUE"
    queued.cancel()
    assert queued.status == "CANCELLED"
    with pytest.raises(JobCancelled):
        queued.result()
    assert blocker.result(timeout=60) == "ran"
    time.sleep(1.5)  # the worker is free now: a job left in the queue would run
    assert not (tmp_path / "second").exists()


def test_execution_timeout_raises_job_timeout_and_stops_the_function(tmp_path):
    from rpremote.errors import JobTimeout
    marker = tmp_path / "ticks"
    t0 = time.monotonic()
    with pytest.raises(JobTimeout):
        too_slow(str(marker))
    assert 4.5 < time.monotonic() - t0 < 30
    time.sleep(1.5)
    size = marker.stat().st_size
    time.sleep(1.5)
    assert marker.stat().st_size == size
