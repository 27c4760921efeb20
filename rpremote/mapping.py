"""``f.map``: fan many calls out over an endpoint's workers, batching small items into jobs.

One job per item costs a queue round trip per item (milliseconds), so items travel in
batches: one ``map`` request runs a list of calls and returns one outcome per call. The batch
size (``BatchSizer``) keeps every worker busy and a job near ``TARGET_JOB_S`` of work.
Up to ``concurrency`` jobs are in flight, each followed by a thread of its own over the shared
HTTP connection pool. The function is pickled once for the whole map.

A map tells its reporter how far it is (``MapProgress``, through the optional
``map_update`` / ``map_finished`` methods) and can be cancelled from another thread (a
notebook's Cancel button): ``progress.cancel()`` submits nothing more, cancels the jobs in
flight, and the map raises ``JobCancelled``.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from . import platform as rp
from . import protocol
from .capture import PickleNotes, dumps, dumps_oob
from .errors import ConfigError, JobCancelled, UnpicklableError
from .job import Job, remote_exception

if TYPE_CHECKING:
    from .api import RemoteFunction

TARGET_JOB_S = 0.25
MAX_BATCH = 4096
FIRST_BATCH = 8
ORDERS = ("input", "completed")


class BatchSizer:
    """How many items the next job gets.

    With a known total, every lane gets at least one job (``cap``), so big batches never
    starve a worker, and the first jobs go out at that size. An input of unknown length starts
    small. Either way the size then follows the measured time per item toward ``TARGET_JOB_S``.
    """

    def __init__(self, fixed: int | None, total: int | None, lanes: int):
        self.fixed = fixed
        self.cap = MAX_BATCH if total is None else max(1, min(MAX_BATCH, math.ceil(total / lanes)))
        self.size = self.cap if total is not None else FIRST_BATCH

    def next_size(self) -> int:
        return self.fixed or self.size

    def observe(self, items: int, seconds: float | None) -> None:
        if self.fixed or not items or seconds is None:
            return
        per_item = max(seconds / items, 1e-6)
        self.size = max(1, min(self.cap, int(TARGET_JOB_S / per_item)))


STOPPED = "STOPPED"  # map_finished status when the caller stopped iterating early


@dataclass
class MapProgress:
    """How far a map is; one object per map, updated in place by the thread iterating it.

    ``done`` and ``failed`` count items with an outcome; ``running`` counts items in jobs
    submitted and not yet back (queued or running). ``execution_s`` sums the execution time
    of the map's jobs, what RunPod bills. ``cancel()`` may be called from any thread.
    """

    name: str
    endpoint: str
    total: int | None
    done: int = 0
    failed: int = 0
    running: int = 0
    execution_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    cancel: Callable[[], None] = field(default=lambda: None, repr=False)
    cancelled: bool = False

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def items_per_s(self) -> float | None:
        elapsed = self.elapsed
        return self.finished / elapsed if self.finished and elapsed > 0 else None


class _LogsOnly:
    """A map prints its jobs' output, not a status line per job (retries excepted)."""

    def __init__(self, inner):
        self.inner = inner

    def status(self, job, status, worker):
        pass

    def retrying(self, job, items: int) -> None:
        job.name = f"{job.name} ({items} item{'s' if items != 1 else ''})"
        self.inner.status(job, "RETRYING", job.worker)

    def log(self, job, stream, text):
        self.inner.log(job, stream, text)

    def __getattr__(self, name):  # display(...), and whatever else the inner reporter offers
        return getattr(self.inner, name)

    def finished(self, job, status):
        self.inner.finished(job, status)


def run_map(
    rf: "RemoteFunction",
    calls: Iterable[tuple[tuple, dict]],
    *,
    total: int | None,
    order: str = "input",
    return_exceptions: bool = False,
    batch_size: int | None = None,
    concurrency: int | None = None,
) -> Iterator[Any]:
    from . import config, journal
    from .client import targets
    from .report import ReportContext, default_reporter

    if order not in ORDERS:
        raise ConfigError(f"order must be one of {', '.join(ORDERS)} (got {order!r})")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer or None (got {batch_size!r})")
    lanes = concurrency or 2 * rf.resources.workers_max
    if not isinstance(lanes, int) or lanes < 1:
        raise ConfigError(f"concurrency must be a positive integer or None (got {concurrency!r})")
    if rf.is_generator:
        raise ConfigError(f"{rf.fn.__name__} is a generator function; map over plain functions "
                          "(or call .stream for each input)")

    fn_notes = PickleNotes()
    fn_bytes = dumps(rf.fn, label=rf.fn.__qualname__, notes=fn_notes)
    secret, _ = config.secret_source()
    target = targets.current()
    target.check_environment(protocol.python_version(), rf._environment(fn_notes)["client_env"])
    endpoint = rf._endpoint_on(target)
    base = default_reporter(ReportContext(kind="map", blocking=True, target=target.name,
                                          resources=rf.resources))
    reporter = _LogsOnly(base)
    recording = journal.watching(reporter, target, rf.resources, "map")
    on_update = getattr(base, "map_update", None)
    on_finished = getattr(base, "map_finished", None)
    policy = rf.policy
    retries = rf.retries
    name = f"{rf.fn.__module__}.{rf.fn.__qualname__}"
    sizer = BatchSizer(batch_size, total, lanes)
    source = iter(calls)

    def run_job(batch: list[tuple[tuple, dict]], start: int) -> tuple[list[Any], Job]:
        """One job running ``batch``: an outcome per item, exceptions as exception objects."""
        notes = PickleNotes()  # the function's, plus what this batch's inputs refer to
        notes.by_reference |= fn_notes.by_reference
        notes.code = list(fn_notes.code)
        try:
            payload = dumps_oob(batch, label="map inputs", notes=notes)
        except UnpicklableError as e:
            raise UnpicklableError(_shift(e.path, start), e.type_name, e.reason) from None
        request = protocol.call_request(secret, fn_bytes, payload, name=name, kind=protocol.MAP,
                                        **rf._environment(notes))
        target.blobs.ship(request)
        job = Job(target.queue, endpoint, secret=secret, name=rf.fn.__name__,
                  reporter=recording, call_id=request["call"], fetch=target.blobs.fetch,
                  result_device=rf.result_device)
        if stopping:
            raise _Stopped()
        live.add(job)
        try:
            job.submit(request, policy, sync=True)
            if stopping:  # stopped while submitting: the main thread may have missed its id
                job.cancel()
                raise _Stopped()
            try:
                outcomes = [(ok, p if ok else remote_exception(p)) for ok, p in job.result()]
            except Exception as e:  # the whole job failed (worker lost, timeout, ...)
                outcomes = [(False, e)] * len(batch)
        finally:
            live.discard(job)
            if job.execution_time:
                with counting:
                    progress.execution_s += job.execution_time
        return outcomes, job

    def run_batch(batch: list[tuple[tuple, dict]], start: int) -> tuple[int, list[Any], Job]:
        """``batch``'s outcomes; items that failed in a way ``retries`` covers are run again."""
        outcomes, first = run_job(batch, start)
        job, todo = first, list(range(len(batch)))
        for attempt in range(1, (retries.max_retries if retries else 0) + 1):
            todo = [i for i in todo if not outcomes[i][0] and retries.applies(outcomes[i][1])]
            if not todo or stopping:
                break
            job.attempts.append((job.id or "?", outcomes[todo[0]][1]))
            reporter.retrying(job, len(todo))
            time.sleep(retries.delay(attempt))
            again, job = run_job([batch[i] for i in todo], start)
            for i, outcome in zip(todo, again):
                outcomes[i] = outcome
        return start, outcomes, first  # the batch sizer learns from the full-size job

    live: set[Job] = set()  # submitted and not finished: cancelled if the map stops early
    stopping = False
    counting = threading.Lock()

    def cancel() -> None:
        """Stop the map from any thread: nothing more is submitted, live jobs are cancelled."""
        nonlocal stopping
        progress.cancelled = stopping = True
        for job in list(live):
            if job.id and not job.done:
                job.cancel()

    progress = MapProgress(name=rf.fn.__name__, endpoint=endpoint, total=total, cancel=cancel)

    def cancelled() -> JobCancelled:
        return JobCancelled(f"the map of {rf.fn.__name__} on {endpoint} was cancelled after "
                            f"{progress.finished} of {total if total is not None else '?'} "
                            "items", None, rp.CANCELLED)
    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="rpremote-map")
    in_flight: dict[Future, int] = {}  # a batch's future -> its number of items
    next_start = 0
    ready: dict[int, Any] = {}  # input index -> outcome, waiting for its turn
    next_out = 0
    exhausted = False

    def fill() -> None:
        nonlocal next_start, exhausted
        while not exhausted and not stopping and len(in_flight) < lanes:
            batch = list(islice(source, sizer.next_size()))
            if not batch:
                exhausted = True
                return
            in_flight[pool.submit(run_batch, batch, next_start)] = len(batch)
            next_start += len(batch)
            progress.running += len(batch)

    outcome_status = rp.COMPLETED
    try:
        fill()
        if on_update:
            on_update(progress)
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            if progress.cancelled:
                raise cancelled()
            for fut in done:
                progress.running -= in_flight.pop(fut)
                try:
                    start, outcomes, job = fut.result()
                except _Stopped:  # only a cancel stops a batch while the map goes on
                    raise cancelled() from None
                sizer.observe(len(outcomes), job.execution_time)
                for i, outcome in enumerate(outcomes):
                    ready[start + i] = outcome
                    if outcome[0]:
                        progress.done += 1
                    else:
                        progress.failed += 1
            fill()
            if on_update:
                on_update(progress)
            if order == "completed":
                for index in sorted(ready):
                    yield _value(ready.pop(index), return_exceptions)
            else:
                while next_out in ready:
                    yield _value(ready.pop(next_out), return_exceptions)
                    next_out += 1
        if progress.cancelled:  # cancelled after the last job came back, before the end
            raise cancelled()
    except GeneratorExit:
        outcome_status = STOPPED
        raise
    except KeyboardInterrupt:
        outcome_status = rp.CANCELLED
        raise
    except BaseException:
        outcome_status = rp.CANCELLED if progress.cancelled else rp.FAILED
        raise
    finally:
        # Stopped early (an exception, Ctrl-C, the caller broke off): nothing keeps running.
        stopping = exhausted = True
        for fut in list(in_flight):
            fut.cancel()
        for job in list(live):
            if job.id and not job.done:
                job.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        progress.running = 0
        if on_finished:
            on_finished(progress, outcome_status)


class _Stopped(Exception):
    """A batch not submitted because the map was stopped."""


def _value(outcome: tuple[bool, Any], return_exceptions: bool) -> Any:
    ok, payload = outcome
    if ok or return_exceptions:
        return payload
    raise payload


def _shift(path: str, start: int) -> str:
    """``map inputs[3][0][1]`` -> the item's place in the whole input: ``inputs[3+start]...``."""
    head = "map inputs["
    if path.startswith(head):
        index, _, rest = path[len(head):].partition("]")
        if index.isdigit():
            return f"map input {int(index) + start}{rest}"
    return path


def calls_from(iterables: tuple[Iterable, ...], star: bool) -> tuple[Iterator[tuple[tuple, dict]], int | None]:
    """``map(f, xs, ys)`` / ``starmap(f, pairs)`` inputs as ``(args, kwargs)`` pairs, and their count when known."""
    total = None
    try:
        total = min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        pass
    if star:
        (only,) = iterables
        return ((tuple(args), {}) for args in only), total
    return ((args, {}) for args in zip(*iterables)), total
