"""``@remote``: a function that runs on a worker of an endpoint chosen by its resources.

Everything that can be checked is checked at decoration (GPU names, worker counts, timeout)
or before anything is sent (pickling of the function and its arguments), so a mistake costs
no job and no money. The HTTP side is imported on the first call, keeping ``import
rpremote`` light.
"""

from __future__ import annotations

import functools
import inspect
from typing import (
    TYPE_CHECKING, Any, AsyncIterator, Callable, Generic, Iterable, Iterator, ParamSpec, TypeVar,
    overload,
)

from . import config
from . import platform as rp
from .capture.tensors import check_policy
from .errors import ConfigError, EmulatorStopped, UnpicklableError
from .frames import user_facing
from .resources import Resources, make_resources
from .retries import Retries, as_retries
from .versions import Requirement, check_dependencies, check_system_packages

if TYPE_CHECKING:
    from .capture import PickleNotes
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

# A blocking call goes out as one /runsync (one round trip) while it is expected to be short.
# The platform holds a /runsync at least RUNSYNC_WAIT_MIN_MS (1 s) before it answers "still
# running", so a line printed meanwhile would wait for that answer: a function whose last call
# ran longer than this, and a notebook cell, go as /run and follow /stream instead, whose
# long-poll hands each line over as soon as the worker sends it (one more round trip per call).
SHORT_CALL_S = 0.1


class RemoteFunction(Generic[P, R]):
    """A function bound to resources; calling it runs it remotely and returns its value."""

    kind = "call"  # how the job journal files its jobs ("cell" for %%runpod)

    def __init__(self, fn: Callable[P, R], resources: Resources, timeout_s: float,
                 ttl_s: float | None = None, retries: Retries | None = None, *,
                 dependencies: tuple[Requirement, ...] = (), auto_dependencies: bool = True,
                 system_dependencies: tuple[str, ...] = (), result_device: str = "cpu",
                 endpoint: str | None = None, image: str | None = None):
        self.fn = fn
        self.image = image  # the worker image on RunPod (None: the target's default)
        self.endpoint = endpoint  # an existing endpoint to use instead of one for ``resources``
        self.result_device = result_device
        self.resources = resources
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.retries = retries
        self.dependencies = dependencies
        self.auto_dependencies = auto_dependencies
        self.system_dependencies = system_dependencies
        self._last_run_s: float | None = None  # how long its last call ran on the worker
        functools.update_wrapper(self, fn)

    @property
    def policy(self) -> dict[str, int]:
        """The platform's per-job ``policy``: execution timeout, and ttl when one was set."""
        policy = {"executionTimeout": int(self.timeout_s * 1000)}
        if self.ttl_s is not None:
            policy["ttl"] = int(self.ttl_s * 1000)
        return policy

    def __repr__(self) -> str:
        return f"<remote {self.fn.__qualname__} on {self.resources.describe()}>"

    @property
    def is_generator(self) -> bool:
        return inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    @user_facing
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run remotely and return the value; a generator function returns an iterator."""
        if self.is_generator:
            return self.stream(*args, **kwargs)  # type: ignore[return-value]
        job = self._submit(args, kwargs, sync=self._one_request(), blocking=True)
        try:
            return job.result()
        finally:
            self._note_run(job)

    def _one_request(self) -> bool:
        """Whether a blocking call goes as one ``/runsync`` (see ``SHORT_CALL_S``)."""
        if self.kind == "cell":  # a cell's output is watched as it comes
            return False
        return self._last_run_s is None or self._last_run_s < SHORT_CALL_S

    def _note_run(self, job: "Job") -> None:
        if job.execution_time is not None:
            self._last_run_s = job.execution_time

    @user_facing
    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> "Job":
        """Submit and return a ``Job`` at once; its ``result()`` blocks until it is done."""
        return self._submit(args, kwargs, sync=False)

    @user_facing
    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await f.aio(x)``: the call on httpx's async client, without blocking the event loop.

        Cancelling the awaiting task (or interrupting the kernel) cancels the remote job.
        """
        if self.is_generator:
            raise ConfigError(f"{self.fn.__name__} is a generator function: use `async for x "
                              f"in {self.fn.__name__}.astream(...)` instead of awaiting .aio(...)")
        job = await self._asubmit(args, kwargs, sync=self._one_request(), blocking=True)
        try:
            return await job.aresult()
        finally:
            self._note_run(job)

    @user_facing
    def stream(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
        """Iterate over what the (generator) function yields, as the worker produces it."""
        return _follow_items(self._submit(args, kwargs, sync=False))

    @user_facing
    async def astream(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Any]:
        """``async for x in f.astream(...)``: ``stream`` on httpx's async client, so a notebook's
        event loop keeps running between items.

        Leaving the loop early, or cancelling the task that iterates, cancels the remote job.
        """
        import asyncio

        if not self.is_generator:
            raise ConfigError(f"{self.fn.__name__} is not a generator function: "
                              f"`await {self.fn.__name__}.aio(...)` calls it")
        job = await self._asubmit(args, kwargs, sync=False)
        try:
            async for value in job.aitems():
                yield value
        except (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.shield(job.acancel())  # stop the remote generator too
            raise

    @user_facing
    def map(self, *iterables: Iterable, order: str = "input", return_exceptions: bool = False,
            batch_size: int | None = None, concurrency: int | None = None) -> Iterator[Any]:
        """``f(x)`` for each ``x`` (``f(x, y)`` for several iterables), across the workers.

        Results come in input order (``order="completed"``: as they finish); small items are
        batched into jobs automatically (or ``batch_size`` per job); at most ``concurrency``
        jobs in flight (default twice ``workers`` max). With ``return_exceptions=True`` a
        failed item yields its exception instead of stopping the map.
        """
        from .mapping import items_from, run_map

        items, star, total = items_from(iterables, star=False)
        return run_map(self, items, star=star, total=total, order=order,
                       return_exceptions=return_exceptions, batch_size=batch_size,
                       concurrency=concurrency)

    @user_facing
    def starmap(self, iterable: Iterable[Iterable], *, order: str = "input",
                return_exceptions: bool = False, batch_size: int | None = None,
                concurrency: int | None = None) -> Iterator[Any]:
        """``f(*args)`` for each ``args`` in ``iterable``; otherwise like ``map``."""
        from .mapping import items_from, run_map

        items, star, total = items_from((iterable,), star=True)
        return run_map(self, items, star=star, total=total, order=order,
                       return_exceptions=return_exceptions, batch_size=batch_size,
                       concurrency=concurrency)

    def _submit(self, args: tuple, kwargs: dict, *, sync: bool,
                blocking: bool | None = None) -> "Job":
        """Send one call: ``/runsync`` when ``sync``, else ``/run``; ``blocking``: the caller
        waits for it (how it is reported; default ``sync``)."""
        blocking = sync if blocking is None else blocking
        for last in (False, True):
            job, request = self._prepare(args, kwargs, blocking=blocking)
            try:
                return job.submit(request, self.policy, sync=sync)
            except EmulatorStopped as e:
                # The local emulator stopped before the request left: nothing was sent, so
                # it goes to the one that replaces it (``_prepare`` connects again).
                if e.sent is not False or last:
                    raise
        raise AssertionError("unreachable")

    async def _asubmit(self, args: tuple, kwargs: dict, *, sync: bool,
                       blocking: bool | None = None) -> "Job":
        """``_submit`` on the event loop."""
        import asyncio

        blocking = sync if blocking is None else blocking
        for last in (False, True):
            # Pickling and the first contact with the target (which may start the local
            # emulator) are blocking work: done in a thread, off the loop.
            job, request = await asyncio.to_thread(self._prepare, args, kwargs, blocking)
            try:
                return await job.asubmit(request, self.policy, sync=sync)
            except EmulatorStopped as e:
                if e.sent is not False or last:
                    raise
        raise AssertionError("unreachable")

    def _prepare(self, args: tuple, kwargs: dict,
                 blocking: bool = True) -> tuple["Job", dict[str, Any]]:
        """The signed request and an unsent ``Job`` for it on the current target."""
        from . import journal
        from .client import targets
        from .job import Job
        from .report import ReportContext, default_reporter

        request, secret = self._request(args, kwargs)
        target = targets.current()
        target.check_environment(request["python"], request["client"])
        endpoint = self._endpoint_on(target)
        target.blobs.ship(request)  # big pieces to the offload store (once), before sending
        reporter = default_reporter(ReportContext(kind=self.kind, blocking=blocking,
                                                  target=target.name, resources=self.resources))
        reporter = target.watch(reporter, endpoint)  # a cold start on RunPod is never silent
        job = Job(target.queue, endpoint, secret=secret, name=self.fn.__name__,
                  reporter=journal.watching(reporter, target, self.resources, self.kind),
                  call_id=request["call"], retries=self.retries,
                  fetch=target.blobs.fetch, result_device=self.result_device)
        return job, request

    def _endpoint_on(self, target: Any) -> str:
        """The endpoint id jobs go to: the one named with ``endpoint=`` (checked to exist),
        else the target's endpoint for this function's resources (created when missing)."""
        if self.endpoint:
            return target.existing_endpoint(self.endpoint)
        return target.endpoint_for(self.resources, image=self.image)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the plain function here, for debugging."""
        return self.fn(*args, **kwargs)

    def _request(self, args: tuple, kwargs: dict) -> tuple[dict[str, Any], bytes]:
        """The signed request; raises before sending when something cannot be pickled."""
        from . import protocol
        from .capture import PickleNotes, dumps, dumps_oob

        notes = PickleNotes()
        fn_bytes = dumps(self.fn, label=self.fn.__qualname__, notes=notes)
        try:
            args_bytes = dumps_oob((args, kwargs), label="(args, kwargs)", notes=notes)
        except UnpicklableError:
            dumps(args, label="args")  # re-raise with a path the user recognises
            dumps(kwargs, label="kwargs")
            raise
        secret, _ = config.secret_source()
        name = f"{self.fn.__module__}.{self.fn.__qualname__}"
        return protocol.call_request(secret, fn_bytes, args_bytes, name=name,
                                     **self._environment(notes)), secret

    def _environment(self, notes: "PickleNotes") -> dict[str, Any]:
        """``call_request``'s requirements, system packages and client versions for a pickle."""
        from .capture.requirements import client_environment, requirements_for

        return {
            "requirements": requirements_for(notes if self.auto_dependencies else None,
                                             self.dependencies),
            "system_packages": self.system_dependencies,
            "client_env": client_environment(notes),
        }


@user_facing
def _follow_items(job: "Job") -> Iterator[Any]:
    try:
        yield from job.items()
    except (GeneratorExit, KeyboardInterrupt):
        job.cancel()  # the caller stopped iterating: stop the remote generator too
        raise


@overload
def remote(fn: Callable[P, R]) -> RemoteFunction[P, R]: ...
@overload
def remote(
    fn: None = None, *, gpu: str | list[str] | None = None, gpu_count: int = 1,
    workers: int | tuple[int, int] = (0, rp.WORKERS_MAX_DEFAULT),
    idle_timeout: int = rp.IDLE_TIMEOUT_DEFAULT_S, timeout: float = 600,
    dependencies: list[str] | tuple[str, ...] | None = (), auto_dependencies: bool = True,
    system_dependencies: list[str] | None = None, env: dict[str, str] | None = None,
    ttl: float | None = None, retries: int | Retries | None = None, result_device: str = "cpu",
    endpoint: str | None = None, image: str | None = None,
) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...


def remote(
    fn: Callable | None = None,
    *,
    gpu: str | list[str] | None = None,
    gpu_count: int = 1,
    workers: int | tuple[int, int] = (0, rp.WORKERS_MAX_DEFAULT),
    idle_timeout: int = rp.IDLE_TIMEOUT_DEFAULT_S,
    timeout: float = rp.EXECUTION_TIMEOUT_DEFAULT_MS / 1000,
    dependencies: list[str] | tuple[str, ...] | None = (),
    auto_dependencies: bool = True,
    system_dependencies: list[str] | None = None,
    env: dict[str, str] | None = None,
    ttl: float | None = None,
    retries: int | Retries | None = None,
    result_device: str = "cpu",
    endpoint: str | None = None,
    image: str | None = None,
):
    """Run the decorated function remotely.

    ``gpu``: a RunPod pool id (``"ADA_24"``), a GPU type (``"NVIDIA GeForce RTX 4090"``), a
    list of them, or ``None`` (the default) for CPU — a GPU is never picked, and billed,
    unless asked for. ``workers``: ``(min, max)`` or a max. ``idle_timeout``: seconds a
    worker waits for the next job. ``timeout``: seconds a call may run (the platform's
    ``executionTimeout``). ``ttl``: seconds a job may exist from submission, queue time
    included (the platform's ``ttl``; default 24 h), after which it is deleted whatever its
    state. ``retries``: a count or ``rpremote.Retries(...)``; a lost worker, and exceptions
    named in ``Retries(on=...)``, are retried, ordinary exceptions are not. Functions with
    different resources run on different endpoints.

    ``dependencies``: the third-party packages the function uses are detected and pinned to
    the versions installed here (``numpy==2.4.6``); requirement strings listed here
    (``"httpx"``, ``"torch==2.5.1"``, ``"scipy>=1.13"``) are added or replace a detected pin.
    The worker installs what it lacks (cached) before the call. ``dependencies=None`` or
    ``auto_dependencies=False`` turns detection off. ``system_dependencies``: Debian packages
    (``["ffmpeg"]``) the worker installs with apt-get (the local target only checks them).
    ``result_device``: where torch tensors in results land here: ``"cpu"`` (default),
    ``"keep"`` (the device they were on, when this machine has it) or a device such as
    ``"cuda:0"``. ``endpoint``: the id of an existing endpoint that runs the rpremote executor
    (one you deployed); jobs go there instead of to an endpoint made for these resources.
    ``image``: the container image of the function's RunPod endpoint (target ``runpod``):
    by default an official RunPod image with this Python, which installs rpremote when a
    worker starts; an image with rpremote baked in (``docker/Dockerfile``) starts faster.
    ``configure(image=...)`` and ``$RPREMOTE_IMAGE`` set it for every function.
    """
    resources = make_resources(gpu=gpu, gpu_count=gpu_count, workers=workers,
                               idle_timeout=idle_timeout, env=env)
    requirements = check_dependencies(dependencies)
    if not isinstance(auto_dependencies, bool):
        raise ConfigError(f"auto_dependencies is True or False; got {auto_dependencies!r}")
    detect = auto_dependencies and dependencies is not None
    system = check_system_packages(system_dependencies)
    timeout_s = _check_timeout(timeout)
    ttl_s = _check_ttl(ttl)
    retry_policy = as_retries(retries)
    try:
        device = check_policy(result_device)
    except ValueError as e:
        raise ConfigError(f"result_device: {e}") from None
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.strip()):
        raise ConfigError(f"endpoint is an endpoint id (a non-empty string); got {endpoint!r}")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise ConfigError(f"image is a container image like 'runpod/pytorch:...' (a non-empty "
                          f"string); got {image!r}")

    def wrap(f: Callable) -> RemoteFunction:
        if not callable(f):
            raise ConfigError(f"@remote decorates a function, not {type(f).__name__}")
        if retry_policy and (inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)):
            raise ConfigError(f"{f.__name__} is a generator function: it cannot be retried, since "
                              "the items it already delivered cannot be taken back; drop retries=")
        return RemoteFunction(f, resources, timeout_s, ttl_s, retry_policy,
                              dependencies=requirements, auto_dependencies=detect,
                              system_dependencies=system, result_device=device,
                              endpoint=endpoint.strip() if endpoint else None,
                              image=image.strip() if image else None)

    return wrap(fn) if fn is not None else wrap


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    lo, hi = rp.TTL_MIN_MS / 1000, rp.TTL_MAX_MS / 1000
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not lo <= ttl <= hi:
        raise ConfigError(f"ttl is seconds between {lo:g} and {hi:g} (7 days); got {ttl!r}")
    return float(ttl)


def _check_timeout(timeout: Any) -> float:
    lo, hi = rp.EXECUTION_TIMEOUT_MIN_MS / 1000, rp.EXECUTION_TIMEOUT_MAX_MS / 1000
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not lo <= timeout <= hi:
        raise ConfigError(f"timeout is seconds between {lo:g} and {hi:g} (7 days); got {timeout!r}")
    return float(timeout)
