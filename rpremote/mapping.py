"""``f.map``: fan many calls out over an endpoint's workers, batching small items into jobs.

One job per item costs a queue round trip per item (milliseconds), so items travel in
batches: one ``map`` request runs a list of items and returns their values as a list, with
the failed ones' errors beside it by index (a few objects per batch, not a few per item:
with tiny items, building and unpickling per-item pairs, and the garbage collections they
set off, cost more than the work). The batch
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
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

from . import platform as rp
from . import protocol
from .frames import user_facing
from .capture import PickleNotes, dumps, dumps_oob
from .errors import ConfigError, JobCancelled, UnpicklableError
from .job import Job, remote_exception

if TYPE_CHECKING:
    from .resources import Resources
    from .retries import Retries

TARGET_JOB_S = 0.25
MAX_BATCH = 8192
FIRST_BATCH = 8
ORDERS = ("input", "completed")


MAX_THREADS = 256  # of all maps of a process together; each map keeps to its ``concurrency``
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    """The threads that follow map jobs, shared by the maps of this process: a map of tiny
    items lasts a few milliseconds, and starting its threads each time was a tenth of that."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="rpremote-map")
        return _pool


def _forget_threads() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_threads)


class BatchSizer:
    """How many items the next job gets.

    With a known total, every worker gets a job (``cap``): one round of jobs when the items
    are quick (each job costs a few milliseconds of every process's time, so a map of tiny
    items is fastest in as few jobs as there are workers), and big batches never starve a
    worker. An input of unknown length starts small. Either way the size then follows the
    measured time per item toward ``TARGET_JOB_S``.
    """

    def __init__(self, fixed: int | None, total: int | None, workers: int):
        self.fixed = fixed
        self.cap = (MAX_BATCH if total is None
                    else max(1, min(MAX_BATCH, math.ceil(total / workers))))
        self.size = self.cap if total is not None else FIRST_BATCH

    def next_size(self) -> int:
        return self.fixed or self.size

    def observe(self, items: int, seconds: float | None) -> None:
        if self.fixed or not items or seconds is None:
            return
        per_item = max(seconds / items, 1e-6)
        self.size = max(1, min(self.cap, int(TARGET_JOB_S / per_item)))


class MappedFunction(Protocol):
    """What a map needs of the function it runs (``api.RemoteFunction``). An interface, so
    this module, which ``api`` imports, needs nothing from ``api``."""

    fn: Callable[..., Any]
    resources: Resources
    retries: Retries | None
    result_device: str

    @property
    def policy(self) -> dict[str, int]: ...
    @property
    def is_generator(self) -> bool: ...
    def _environment(self, notes: PickleNotes) -> dict[str, Any]: ...
    def _endpoint_on(self, target: Any) -> str: ...


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


@user_facing
def run_map(
    rf: MappedFunction,
    items: Iterable[Any],
    *,
    star: bool,
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
    reporter = target.watch(_LogsOnly(base), endpoint)
    recording = journal.watching(reporter, target, rf.resources, "map")
    on_update = getattr(base, "map_update", None)
    on_finished = getattr(base, "map_finished", None)
    policy = rf.policy
    retries = rf.retries
    name = f"{rf.fn.__module__}.{rf.fn.__qualname__}"
    sizer = BatchSizer(batch_size, total, min(lanes, rf.resources.workers_max))
    source = iter(items)

    def run_job(batch: list[Any], start: int) -> tuple[Outcome, Job]:
        """One job running ``batch``: its values, and its failed items' exceptions by index."""
        notes = PickleNotes()  # the function's, plus what this batch's inputs refer to
        notes.by_reference |= fn_notes.by_reference
        notes.code = list(fn_notes.code)
        try:
            payload = dumps_oob(batch, label="map inputs", notes=notes)
        except UnpicklableError as e:
            raise UnpicklableError(_shift(e.path, start), e.type_name, e.reason) from None
        request = protocol.call_request(secret, fn_bytes, payload, name=name, kind=protocol.MAP,
                                        star=star, **rf._environment(notes))
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
                values, errors = job.result()
                outcome = Outcome(values, {i: remote_exception(e) for i, e in errors.items()})
            except Exception as e:  # the whole job failed (worker lost, timeout, ...)
                outcome = Outcome([None] * len(batch), dict.fromkeys(range(len(batch)), e))
        finally:
            live.discard(job)
            if job.execution_time:
                with counting:
                    progress.execution_s += job.execution_time
        return outcome, job

    def run_batch(batch: list[Any], start: int) -> tuple[int, Outcome, Job]:
        """``batch``'s outcome; items that failed in a way ``retries`` covers are run again."""
        outcome, first = run_job(batch, start)
        job = first
        for attempt in range(1, (retries.max_retries if retries else 0) + 1):
            todo = sorted(i for i, e in outcome.errors.items() if retries.applies(e))
            if not todo or stopping:
                break
            job.attempts.append((job.id or "?", outcome.errors[todo[0]]))
            reporter.retrying(job, len(todo))
            time.sleep(retries.delay(attempt))
            again, job = run_job([batch[i] for i in todo], start)
            for k, i in enumerate(todo):  # k: the item's place in the retry, i: in the batch
                outcome.values[i] = again.values[k]
                if k in again.errors:
                    outcome.errors[i] = again.errors[k]
                else:
                    del outcome.errors[i]
        return start, outcome, first  # the batch sizer learns from the full-size job

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
    pool = _threads()
    in_flight: dict[Future, int] = {}  # a batch's future -> its number of items
    next_start = 0
    ready: dict[int, Outcome] = {}  # a batch's first input index -> its outcome, awaiting its turn
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
                    start, outcome, job = fut.result()
                except _Stopped:  # only a cancel stops a batch while the map goes on
                    raise cancelled() from None
                sizer.observe(len(outcome.values), job.execution_time)
                ready[start] = outcome
                progress.failed += len(outcome.errors)
                progress.done += len(outcome.values) - len(outcome.errors)
            fill()
            if on_update:
                on_update(progress)
            if order == "completed":
                for start in sorted(ready):
                    yield from ready.pop(start).results(return_exceptions)
            else:
                while next_out in ready:
                    outcome = ready.pop(next_out)
                    next_out += len(outcome.values)
                    yield from outcome.results(return_exceptions)
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
        progress.running = 0
        if on_finished:
            on_finished(progress, outcome_status)


class _Stopped(Exception):
    """A batch not submitted because the map was stopped."""


@dataclass
class Outcome:
    """One batch's outcome: a value per item (``None`` where it failed), the failures apart."""

    values: list[Any]
    errors: dict[int, BaseException]

    def results(self, return_exceptions: bool) -> Iterator[Any]:
        """The items' values in order; a failed item yields its exception or raises it."""
        if not self.errors:
            yield from self.values
            return
        for i, value in enumerate(self.values):
            error = self.errors.get(i)
            if error is None:
                yield value
            elif return_exceptions:
                yield error
            else:
                raise error


def _shift(path: str, start: int) -> str:
    """``map inputs[3][1]`` -> the item's place in the whole input: ``map input 3+start[1]``."""
    head = "map inputs["
    if path.startswith(head):
        index, _, rest = path[len(head):].partition("]")
        if index.isdigit():
            return f"map input {int(index) + start}{rest}"
    return path


def items_from(iterables: tuple[Iterable, ...], star: bool) -> tuple[Iterable[Any], bool, int | None]:
    """``map(f, xs)`` / ``map(f, xs, ys)`` / ``starmap(f, pairs)`` inputs: the items, whether
    each is a tuple of arguments (``f(*item)``) rather than the one argument, and their count
    when known."""
    if not iterables:
        raise TypeError("map needs at least one iterable of inputs")
    total = None
    try:
        total = min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        pass
    if star:
        (only,) = iterables
        return (tuple(args) for args in only), True, total
    if len(iterables) == 1:
        return iterables[0], False, total
    return zip(*iterables), True, total
