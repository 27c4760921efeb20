"""The example notebooks run (under ``pytest --nbval``) against an emulator of their own.

Their kernels inherit ``RPREMOTE_HOME`` from here, so the first call starts a throw-away local
emulator instead of touching the user's; it is stopped by its PID when the run ends.

The notebooks in ``rehearsal.NOTEBOOKS`` (``06-runpod.ipynb``) use the runpod target instead:
before their first cell is set up (nbval starts the kernel then, and the kernel inherits
``os.environ``), one ``rpremote serve`` plays RunPod and ``os.environ`` points at it; after
their last cell (the kernel stopped) the server is stopped by its PID and ``os.environ`` put
back as it was. The other notebooks never see it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

from .rehearsal import NOTEBOOKS, rehearsal

_home: Path | None = None
_previous: str | None = None
_rehearsal: ExitStack | None = None  # open while a rehearsed notebook runs
_rehearsed: Path | None = None  # that notebook


def pytest_configure(config):
    global _home, _previous
    _previous = os.environ.get("RPREMOTE_HOME")
    _home = Path(tempfile.mkdtemp(prefix="rpremote-notebooks-"))
    os.environ["RPREMOTE_HOME"] = str(_home)


def _notebook(item) -> Path:
    return Path(item.path)


def _stop_rehearsal() -> None:
    global _rehearsal, _rehearsed
    stack, _rehearsal, _rehearsed = _rehearsal, None, None
    if stack is not None:
        stack.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval's file setup starts the kernel of a rehearsed notebook's first cell."""
    global _rehearsal, _rehearsed
    path = _notebook(item)
    if _rehearsal is not None or path.name not in NOTEBOOKS:
        return
    stack = ExitStack()
    stack.enter_context(rehearsal())
    _rehearsal, _rehearsed = stack, path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the rehearsed notebook's last cell, once pytest has torn its kernel down."""
    yield
    if _rehearsal is not None and (nextitem is None or _notebook(nextitem) != _rehearsed):
        _stop_rehearsal()


def pytest_unconfigure(config):
    _stop_rehearsal()  # a run interrupted inside the rehearsed notebook
    if _home is None:
        return
    state = _home / "emulator" / "server.json"
    if state.exists():
        try:
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
        except (ProcessLookupError, ValueError, KeyError):
            pass
    if _previous is None:
        os.environ.pop("RPREMOTE_HOME", None)
    else:
        os.environ["RPREMOTE_HOME"] = _previous
    shutil.rmtree(_home, ignore_errors=True)
