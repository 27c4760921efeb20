"""Keep rpremote's own frames out of the tracebacks users see.

A failed, cancelled or timed-out call should read like a local one: the user's line, the
remote traceback (for a remote exception) and the error, not eight frames of ``api.py`` and
``job.py``. IPython hides frames that set ``__tracebackhide__``, but always shows the last
one, which is ours; plain Python hides none. So the public entry points (``user_facing``)
cut rpremote's frames out of the traceback of the errors rpremote means to raise (its own
errors, the re-raised remote exception, an interrupt) before they leave: when the exception
reaches the user's frame its traceback starts and ends there. A bug of rpremote's own (any
other exception) keeps every frame, so it can be found.
"""

from __future__ import annotations

import functools
import inspect
import os
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from .errors import RpremoteError

_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
F = TypeVar("F", bound=Callable[..., Any])


def meant(err: BaseException) -> bool:
    """Whether rpremote raises ``err`` on purpose (so where inside rpremote is noise)."""
    return (isinstance(err, (RpremoteError, KeyboardInterrupt))
            or hasattr(err, "remote_traceback") or type(err).__name__ == "CancelledError")


def without_own_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` with the frames of rpremote's files left out (the others keep their order)."""
    kept: list[TracebackType] = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_OWN_DIR):
            kept.append(tb)
        tb = tb.tb_next
    head = None
    for entry in reversed(kept):
        entry.tb_next = head
        head = entry
    return head


def tidy(err: BaseException) -> None:
    """Cut rpremote's frames out of ``err`` (and of what it was raised from) when it is meant."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen and meant(err):
        seen.add(id(err))
        err.__traceback__ = without_own_frames(err.__traceback__)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def user_facing(fn: F) -> F:
    """Decorate a public entry point (function, generator, async function or async generator):
    what it raises on purpose leaves with the caller's frames only."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for value in fn(*args, **kwargs):
                    yield value
            except BaseException as e:
                if not isinstance(e, GeneratorExit):
                    tidy(e)
                raise
        return agen  # type: ignore[return-value]
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except BaseException as e:
                tidy(e)
                raise
        return coro  # type: ignore[return-value]
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return (yield from iterating(fn(*args, **kwargs)))
        return gen  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            tidy(e)
            raise
    return call  # type: ignore[return-value]


def iterating(it: Iterator[Any]) -> Iterator[Any]:
    """``it``, with what it raises on purpose tidied (for functions that return iterators)."""
    try:
        return (yield from it)
    except BaseException as e:
        if not isinstance(e, GeneratorExit):
            tidy(e)
        raise
