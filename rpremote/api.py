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
    TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, ParamSpec, TypeVar, overload,
)

from . import config
from . import platform as rp
from .errors import ConfigError, UnpicklableError
from .resources import Resources, make_resources

if TYPE_CHECKING:
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")


class RemoteFunction(Generic[P, R]):
    """A function bound to resources; calling it runs it remotely and returns its value."""

    def __init__(self, fn: Callable[P, R], resources: Resources, timeout_s: float):
        self.fn = fn
        self.resources = resources
        self.timeout_s = timeout_s
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<remote {self.fn.__qualname__} on {self.resources.describe()}>"

    @property
    def is_generator(self) -> bool:
        return inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run remotely and return the value; a generator function returns an iterator."""
        if self.is_generator:
            return self.stream(*args, **kwargs)  # type: ignore[return-value]
        return self._submit(args, kwargs, sync=True).result()

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> "Job":
        """Submit and return a ``Job`` at once; its ``result()`` blocks until it is done."""
        return self._submit(args, kwargs, sync=False)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await f.aio(x)``: the call, without blocking a running event loop (a notebook)."""
        import asyncio

        return await asyncio.to_thread(self.__call__, *args, **kwargs)

    def stream(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
        """Iterate over what the (generator) function yields, as the worker produces it."""
        return _follow_items(self._submit(args, kwargs, sync=False))

    def map(self, *iterables: Iterable, order: str = "input", return_exceptions: bool = False,
            batch_size: int | None = None, concurrency: int | None = None) -> Iterator[Any]:
        """``f(x)`` for each ``x`` (``f(x, y)`` for several iterables), across the workers.

        Results come in input order (``order="completed"``: as they finish); small items are
        batched into jobs automatically (or ``batch_size`` per job); at most ``concurrency``
        jobs in flight (default twice ``workers`` max). With ``return_exceptions=True`` a
        failed item yields its exception instead of stopping the map.
        """
        from .mapping import calls_from, run_map

        calls, total = calls_from(iterables, star=False)
        return run_map(self, calls, total=total, order=order, return_exceptions=return_exceptions,
                       batch_size=batch_size, concurrency=concurrency)

    def starmap(self, iterable: Iterable[Iterable], *, order: str = "input",
                return_exceptions: bool = False, batch_size: int | None = None,
                concurrency: int | None = None) -> Iterator[Any]:
        """``f(*args)`` for each ``args`` in ``iterable``; otherwise like ``map``."""
        from .mapping import calls_from, run_map

        calls, total = calls_from((iterable,), star=True)
        return run_map(self, calls, total=total, order=order, return_exceptions=return_exceptions,
                       batch_size=batch_size, concurrency=concurrency)

    def _submit(self, args: tuple, kwargs: dict, *, sync: bool) -> "Job":
        from .client import targets
        from .job import Job
        from .report import default_reporter

        request, secret = self._request(args, kwargs)
        target = targets.current()
        endpoint = target.endpoint_for(self.resources)
        job = Job(target.queue, endpoint, secret=secret, name=self.fn.__name__,
                  reporter=default_reporter(), call_id=request["call"])
        policy = {"executionTimeout": int(self.timeout_s * 1000)}
        return job.submit(request, policy, sync=sync)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the plain function here, for debugging."""
        return self.fn(*args, **kwargs)

    def _request(self, args: tuple, kwargs: dict) -> tuple[dict[str, Any], bytes]:
        """The signed request; raises before sending when something cannot be pickled."""
        from . import protocol
        from .capture import dumps

        fn_bytes = dumps(self.fn, label=self.fn.__qualname__)
        try:
            args_bytes = dumps((args, kwargs), label="(args, kwargs)")
        except UnpicklableError:
            dumps(args, label="args")  # re-raise with a path the user recognises
            dumps(kwargs, label="kwargs")
            raise
        secret, _ = config.secret_source()
        name = f"{self.fn.__module__}.{self.fn.__qualname__}"
        return protocol.call_request(secret, fn_bytes, args_bytes, name=name), secret


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
    dependencies: list[str] | None = None, env: dict[str, str] | None = None,
) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...


def remote(
    fn: Callable | None = None,
    *,
    gpu: str | list[str] | None = None,
    gpu_count: int = 1,
    workers: int | tuple[int, int] = (0, rp.WORKERS_MAX_DEFAULT),
    idle_timeout: int = rp.IDLE_TIMEOUT_DEFAULT_S,
    timeout: float = rp.EXECUTION_TIMEOUT_DEFAULT_MS / 1000,
    dependencies: list[str] | None = None,
    env: dict[str, str] | None = None,
):
    """Run the decorated function remotely.

    ``gpu``: a RunPod pool id (``"ADA_24"``), a GPU type (``"NVIDIA GeForce RTX 4090"``), a
    list of them, or ``None`` (the default) for CPU — a GPU is never picked, and billed,
    unless asked for. ``workers``: ``(min, max)`` or a max. ``idle_timeout``: seconds a
    worker waits for the next job. ``timeout``: seconds a call may run (the platform's
    ``executionTimeout``). Functions with different settings run on different endpoints.
    """
    resources = make_resources(gpu=gpu, gpu_count=gpu_count, workers=workers,
                               idle_timeout=idle_timeout, dependencies=dependencies, env=env)
    timeout_s = _check_timeout(timeout)

    def wrap(f: Callable) -> RemoteFunction:
        if not callable(f):
            raise ConfigError(f"@remote decorates a function, not {type(f).__name__}")
        return RemoteFunction(f, resources, timeout_s)

    return wrap(fn) if fn is not None else wrap


def _check_timeout(timeout: Any) -> float:
    lo, hi = rp.EXECUTION_TIMEOUT_MIN_MS / 1000, rp.EXECUTION_TIMEOUT_MAX_MS / 1000
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not lo <= timeout <= hi:
        raise ConfigError(f"timeout is seconds between {lo:g} and {hi:g} (7 days); got {timeout!r}")
    return float(timeout)
