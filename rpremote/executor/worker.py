"""``python -m rpremote.executor``: the executor as a real ``runpod`` SDK worker.

The handler is an async generator (``return_aggregate_stream``): the request runs in a thread
of its own, and each time the SDK is ready to post a stream chunk it gets everything the job
produced since the last one, so logs reach the caller while the function runs and the final
``/status`` output holds every event.

The SDK's job loop (runpod 1.12) polls its internal queue every 100 ms and, because it counts
a taken job twice, sleeps 1 s whenever it believes it is full: a floor of 0.1-1 s on every
call. ``FastJobScaler`` keeps the SDK's fetch, handler, streaming, stop and heartbeat code and
replaces only those two waits with events. Its job handler is the SDK's ``rp_job.handle_job``
but for one POST: the chunk that holds a job's result event (always its last: every outcome
ends in one) goes only in ``job-done``'s aggregate output, not first in a ``job-stream`` POST
too, so a call that printed nothing costs the worker one request (the client reads what the
stream did not carry from ``/status``). Both are used for the SDK versions they were checked
against; ``RPREMOTE_STOCK_SCALER=1`` turns them off.

A stopped job (cancel, timeout) gets ``JobStopped`` raised in its thread. Code that swallows
it, or sits in a long C call (``time.sleep(60)`` cannot be interrupted), would keep the worker
busy and billing: if the thread is still alive ``RPREMOTE_STOP_GRACE_S`` (default 10) seconds
later, the worker exits, and the platform (or the local supervisor) starts a fresh one. While
a stopped job's thread lingers the worker takes no new job, so a job never lands on a worker
that is about to exit (it would be lost with it).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
import threading
from typing import Any, AsyncIterator

from .. import protocol
from ..blobs import store_from_env
from .core import Executor, JobStopped, load_secret
from . import streams
from .events import EventBuffer
from .sdk_fixes import quick_cpu_info

CHECKED_SDK_VERSIONS = ("1.12.",)
STOP_GRACE_DEFAULT_S = 10.0
STUCK_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", the worker is replaced


def make_handler(executor: Executor):
    async def handler(job: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        out = EventBuffer(wake=lambda: loop.call_soon_threadsafe(ready.set))
        thread = threading.Thread(
            target=_run_quietly, args=(executor, job.get("input"), out),
            name=f"rpremote-job-{job.get('id', '?')}", daemon=True,
        )
        thread.start()
        try:
            while True:
                await ready.wait()
                ready.clear()
                finished = out.finished
                batch = out.drain()
                if batch:
                    yield batch
                if finished:
                    return
        except BaseException:  # stopped by the platform (CancelledError) or worker shutdown
            if thread.is_alive():
                _interrupt(thread)
                with _lingering_lock:
                    _lingering.add(thread)
                threading.Thread(target=_exit_if_stuck, args=(thread, stop_grace_s()),
                                 name="rpremote-stop-watch", daemon=True).start()
            raise

    return handler


def _run_quietly(executor: Executor, request: Any, out: EventBuffer) -> None:
    try:
        executor.run(request, out)
    except JobStopped:
        print(f"rpremote: {threading.current_thread().name} stopped", file=sys.__stderr__, flush=True)


def _interrupt(thread: threading.Thread) -> None:
    """Raise ``JobStopped`` in the job's thread at its next Python instruction."""
    if thread.is_alive() and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(JobStopped)
        )


def stop_grace_s() -> float:
    try:
        return max(0.0, float(os.environ.get("RPREMOTE_STOP_GRACE_S", STOP_GRACE_DEFAULT_S)))
    except ValueError:
        return STOP_GRACE_DEFAULT_S


# Threads of stopped jobs that have not ended yet: while there is one, no new job is taken.
_lingering: set[threading.Thread] = set()
_lingering_lock = threading.Lock()


def taking_jobs() -> bool:
    """False while a stopped job's thread may still make this worker exit."""
    with _lingering_lock:
        _lingering.difference_update([t for t in _lingering if not t.is_alive()])
        return not _lingering


def _exit_if_stuck(thread: threading.Thread, grace: float) -> None:
    """Give a stopped job ``grace`` seconds to finish (its ``finally`` blocks), then exit."""
    thread.join(grace)
    if thread.is_alive():
        print(f"rpremote: {thread.name} ignored the stop for {grace:g} s; exiting this worker "
              "so that a fresh one replaces it", file=sys.__stderr__, flush=True)
        os._exit(STUCK_EXIT_CODE)


def is_last_chunk(output: Any) -> bool:
    """Whether a chunk the handler yielded holds the job's result event (nothing follows it)."""
    return isinstance(output, list) and any(
        isinstance(e, dict) and e.get("t") == protocol.RESULT for e in output)


async def handle_job(session, config: dict[str, Any], job: dict[str, Any]) -> None:
    """``rp_job.handle_job`` (runpod 1.12) without the ``job-stream`` POST of the last chunk."""
    from runpod.serverless.modules import rp_job

    if rp_job.is_generator(config["handler"]):
        is_stream = True
        job_result: dict[str, Any] = {"output": []}
        async for stream_output in rp_job.run_job_generator(config["handler"], job):
            rp_job.log.debug(f"Stream output: {stream_output}", job["id"])
            if isinstance(stream_output.get("output"), dict):
                if stream_output["output"].get("error"):
                    stream_output = {"error": str(stream_output["output"]["error"])}
            if stream_output.get("error"):
                job_result = stream_output
                break
            if config.get("return_aggregate_stream", False):
                job_result["output"].append(stream_output["output"])
                if is_last_chunk(stream_output["output"]):
                    continue  # it travels in job-done's aggregate output alone
            await rp_job.stream_result(session, stream_output, job)
    else:
        is_stream = False
        job_result = await rp_job.run_job(config["handler"], job)

    if config.get("refresh_worker", False):
        rp_job.log.info("refresh_worker flag set, stopping pod after job.", job["id"])
        job_result["stopPod"] = True

    if config.get("rp_args", {}).get("rp_debugger", False) and isinstance(job_result, dict):
        job_result["output"]["rp_debugger"] = rp_job.rp_debugger.get_debugger_output()
        ready_delay = (config["reference_counter_start"] - rp_job.REF_COUNT_ZERO) * 1000
        job_result["output"]["rp_debugger"]["ready_delay_ms"] = ready_delay
    else:
        rp_job.rp_debugger.clear_debugger_output()

    await rp_job.send_result(session, job_result, job, is_stream=is_stream)


def fast_scaler_class():
    from runpod.serverless.modules import rp_scale

    class FastJobScaler(rp_scale.JobScaler):
        """The SDK's JobScaler with event-driven waits instead of 0.1 s / 1 s sleeps."""

        def __init__(self, config: dict[str, Any]):
            super().__init__(config)
            self._slot_free = asyncio.Event()
            if not config.get("jobs_handler"):
                self.jobs_handler = handle_job

        def current_occupancy(self) -> int:
            # A taken job sits in the queue *and* in the progress set; count it once.
            return self.job_progress.get_job_count()

        async def get_jobs(self, session) -> None:
            while self.is_alive():
                await self.set_scale()
                self._slot_free.clear()
                if not taking_jobs():  # a stopped job lingers: this worker may have to exit
                    await asyncio.sleep(0.1)
                    continue
                needed = self.current_concurrency - self.current_occupancy()
                if needed <= 0:
                    try:
                        await asyncio.wait_for(self._slot_free.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                    continue
                try:
                    jobs = await asyncio.wait_for(
                        self.jobs_fetcher(session, needed), timeout=self.jobs_fetcher_timeout
                    )
                except asyncio.CancelledError:
                    raise
                except asyncio.TimeoutError:
                    continue
                except rp_scale.TooManyRequests:
                    await asyncio.sleep(5)
                    continue
                except Exception as err:  # connection refused while the server restarts, ...
                    rp_scale.log.error(f"Failed to get job: {type(err).__name__}: {err}")
                    await asyncio.sleep(0.5)
                    continue
                for job in jobs or ():
                    self.job_progress.add(job)
                    await self.jobs_queue.put(job)

        async def run_jobs(self, session) -> None:
            tasks: set[asyncio.Task] = set()
            getter: asyncio.Future | None = None
            while self.is_alive() or not self.jobs_queue.empty():
                if getter is None and len(tasks) < self.current_concurrency:
                    getter = asyncio.ensure_future(self.jobs_queue.get())
                waiting = tasks | ({getter} if getter else set())
                done, _ = await asyncio.wait(waiting, timeout=1.0,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter is not None and getter in done:
                    job = getter.result()
                    getter = None
                    task = asyncio.create_task(self.handle_job(session, job))
                    tasks.add(task)
                    self.jobs_tasks[job["id"]] = task
                tasks -= done
            if getter is not None:
                getter.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        async def handle_job(self, session, job: dict) -> None:
            try:
                await super().handle_job(session, job)
            finally:
                self._slot_free.set()

    return FastJobScaler


def main() -> None:
    # Before runpod is imported: it configures a logging handler on sys.stderr at import,
    # which must hold the router so a job's logging calls reach that job's caller.
    streams.install()

    with quick_cpu_info():  # see sdk_fixes: 1.1 s of probing for a debugger's label
        import runpod
    from runpod.serverless.modules import rp_scale

    # runpod.serverless.utils.rp_upload runs logging.basicConfig(level=INFO) on import, which
    # would show every library's INFO records in the jobs' output (matplotlib's "generated new
    # fontManager", ...). Back to Python's default level, as the function would run locally;
    # the handler stays, so warnings and a user's own logging set-up still reach the caller.
    import logging
    if logging.getLogger().level == logging.INFO:
        logging.getLogger().setLevel(logging.WARNING)

    secret = load_secret()
    if secret is None:
        print("rpremote executor: no RPREMOTE_SECRET or RPREMOTE_SECRET_FILE set; every request "
              "will be refused (set one in the endpoint's environment)", file=sys.stderr)
    if os.environ.get("RPREMOTE_STOCK_SCALER") != "1" and runpod.__version__.startswith(CHECKED_SDK_VERSIONS):
        rp_scale.JobScaler = fast_scaler_class()
    # The SDK's imports leave ~10^5 long-lived objects; without this every full collection
    # walks them all (30-50 ms pauses in the middle of a job that allocates a lot, e.g. a map
    # batch). Frozen objects are never collected, and never were going to be.
    gc.freeze()
    runpod.serverless.start({
        "handler": make_handler(Executor(secret, store_from_env())),
        "return_aggregate_stream": True,
    })
