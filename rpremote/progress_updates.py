"""``rpremote.progress(done, total, message)``: a running function says how far it is.

On a worker, the executor routes each call to the job of the calling thread (as it does the
job's prints), and whoever follows the job sees it live: ``job.progress``, a ``progress``
event in ``job.events()``, a line in a terminal, a bar in a notebook's job view. Anywhere
else (``f.local``, the function run as plain Python) it does nothing, so a function that
reports progress runs unchanged everywhere. Calling it often is cheap: unsent updates are
replaced by newer ones, never queued up.

Stdlib only: the worker imports it without the client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable

MAX_MESSAGE_CHARS = 200
EVENT = "progress"  # the event's "t" (protocol.PROGRESS)


@dataclass(frozen=True)
class Progress:
    """How far a job is, as its function last said: ``done`` of ``total`` (when known)."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` clipped to 0..1; None when the total is not known."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def describe(self) -> str:
        """``3/10 (30%) epoch 3``."""
        text = f"{self.done:g}" + (f"/{self.total:g} ({self.fraction:.0%})" if self.total else "")
        return f"{text} {self.message}" if self.message else text

    def as_event(self) -> dict:
        return {"t": EVENT, "done": self.done, "total": self.total, "message": self.message}

    @classmethod
    def from_event(cls, event: dict) -> "Progress | None":
        """The event's progress, or None when it is malformed (it came over the network)."""
        try:
            return checked(event.get("done"), event.get("total"), event.get("message"))
        except (TypeError, ValueError):
            return None


def checked(done: object, total: object = None, message: object = None) -> Progress:
    """A ``Progress`` from what the user passed; a clear error for anything else."""
    if isinstance(done, bool) or not isinstance(done, Real) or not math.isfinite(done):
        raise TypeError(f"progress(done, ...): done must be a finite number (got {done!r})")
    if total is not None and (isinstance(total, bool) or not isinstance(total, Real)
                              or not math.isfinite(total) or total <= 0):
        raise ValueError(f"progress(done, total): total must be a positive number or None "
                         f"(got {total!r})")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress(..., message): message must be a string or None "
                        f"(got {type(message).__name__})")
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 1] + "…"
    return Progress(float(done), None if total is None else float(total), message or None)


# Set by the worker's executor (rpremote.executor.progress); None everywhere else.
route: Callable[[Progress], None] | None = None


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Tell whoever follows this job how far it is: ``progress(3, 10, "epoch 3")``.

    ``done`` and ``total`` are numbers in any unit (items, bytes, epochs); ``message`` is a
    short text (longer ones are cut at 200 characters). Outside a remote job: does nothing.
    """
    update = checked(done, total, message)
    if route is not None:
        route(update)
