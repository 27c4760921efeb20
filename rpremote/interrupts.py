"""Ctrl-C (or a notebook kernel interrupt) while a job is being submitted or cancelled.

An interrupt that lands while ``/run`` or ``/runsync`` is in flight would leave a job running
whose id we never read: nothing could cancel it, and it would keep billing. So SIGINT is
held for the duration of those requests (at most the one-second ``/runsync`` wait) and
delivered right after, once the job can be cancelled. Only the main thread receives SIGINT in
Python; other threads need no care.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Held:
    """Whether an interrupt arrived inside the block (``bool(held)``)."""

    def __init__(self) -> None:
        self.frames: list = []

    def __bool__(self) -> bool:
        return bool(self.frames)


@contextmanager
def held_interrupt() -> Iterator[Held]:
    """Hold SIGINT inside the block; deliver it to the previous handler when the block ends."""
    held = Held()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.frames.append(frame))
    except ValueError:  # not the main interpreter
        yield held
        return
    try:
        yield held
    finally:
        # None: a handler installed from C; Python's default is the closest we can restore.
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if held:
            if callable(previous):
                previous(signal.SIGINT, held.frames[-1])  # default: raises KeyboardInterrupt
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
