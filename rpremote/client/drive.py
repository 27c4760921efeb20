"""Run sans-I/O logic blocking or on asyncio, from one definition.

The HTTP retry rules and the job-following logic are written once, as generators that
*yield the I/O they need* (``("sleep", 0.5)``, ``("status", endpoint, job_id)``, ...) and get
its result sent back, or its exception thrown in. ``drive`` performs each action blocking;
``adrive`` awaits it. Only ``Exception`` is thrown into the logic: ``KeyboardInterrupt`` and
``asyncio.CancelledError`` go straight up, so the caller decides what a stop means.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Generator

Action = tuple
Steps = Generator[Action, Any, Any]


def sleep(seconds: float) -> Action:
    return ("sleep", seconds)


def drive(steps: Steps, perform: Callable[[Action], Any]) -> Any:
    """Run ``steps`` to the end, performing each action blocking; return its value."""
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            action = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            if action[0] == "sleep":
                time.sleep(action[1])
            else:
                value = perform(action)
        except Exception as e:
            error = e


async def adrive(steps: Steps, perform: Callable[[Action], Awaitable[Any]]) -> Any:
    """``drive`` for asyncio: each action is awaited, so the event loop is never blocked."""
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            action = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            if action[0] == "sleep":
                await asyncio.sleep(action[1])
            else:
                value = await perform(action)
        except Exception as e:
            error = e
