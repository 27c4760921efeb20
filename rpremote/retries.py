"""When a failed call is tried again: ``@remote(retries=3)`` or ``@remote(retries=Retries(...))``.

A lost worker (killed, out of memory, machine gone) is always worth another try; an ordinary
exception from the user's code is not, unless the user names it (``on=``), since running the
same code on the same input usually fails the same way and costs money each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, RemoteError, WorkerLost

MAX_RETRIES = 100


@dataclass(frozen=True)
class Retries:
    """Retry a call up to ``max_retries`` times, waiting ``backoff`` s, then ``factor`` times longer.

    ``on``: exception classes (or their names, e.g. ``"OutOfMemoryError"``) that also earn a
    retry, besides a lost worker. A retry is a new job with the same signed request.
    """

    max_retries: int
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 60.0
    on: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) \
                or not 0 <= self.max_retries <= MAX_RETRIES:
            raise ConfigError(f"retries is a whole number from 0 to {MAX_RETRIES} "
                              f"(got {self.max_retries!r})")
        for name in ("backoff", "factor", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"Retries.{name} is a number of seconds >= 0 (got {value!r})")
        if self.factor < 1:
            raise ConfigError(f"Retries.factor must be at least 1 (got {self.factor!r})")
        on = (self.on,) if isinstance(self.on, (str, type)) else tuple(self.on)
        for kind in on:
            if not (isinstance(kind, str) or (isinstance(kind, type) and issubclass(kind, BaseException))):
                raise ConfigError(f"Retries.on takes exception classes or their names (got {kind!r})")
        object.__setattr__(self, "on", on)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        return min(self.max_backoff, self.backoff * self.factor ** (retry - 1))

    def applies(self, exc: BaseException) -> bool:
        """Does this failure earn a retry? (The count is the caller's business.)"""
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit: the user wants to stop
        if isinstance(exc, WorkerLost):
            return True
        names = {type(exc).__name__, f"{type(exc).__module__}.{type(exc).__qualname__}"}
        if isinstance(exc, RemoteError):  # a remote exception that could not be re-created here
            names |= {exc.type_name, f"{exc.module}.{exc.type_name}"}
        for kind in self.on:
            if isinstance(kind, str):
                if kind in names:
                    return True
            elif isinstance(exc, kind):
                return True
        return False


def as_retries(value: Any) -> Retries | None:
    """``retries=`` as given to ``@remote``: ``None``/``0``, a count, or a ``Retries``."""
    if value is None:
        return None
    if isinstance(value, Retries):
        return value if value.max_retries else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"retries is a count or rpremote.Retries(...) (got {value!r})")
    return Retries(value) if value else None
