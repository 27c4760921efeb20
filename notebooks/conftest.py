"""The example notebooks run (under ``pytest --nbval``) against an emulator of their own.

Their kernels inherit ``RPREMOTE_HOME`` from here, so the first call starts a throw-away local
emulator instead of touching the user's; it is stopped by its PID when the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

_home: Path | None = None
_previous: str | None = None


def pytest_configure(config):
    global _home, _previous
    _previous = os.environ.get("RPREMOTE_HOME")
    _home = Path(tempfile.mkdtemp(prefix="rpremote-notebooks-"))
    os.environ["RPREMOTE_HOME"] = str(_home)


def pytest_unconfigure(config):
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
