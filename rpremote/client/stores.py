"""The offload store a user configured (``RPREMOTE_STORE``, ``configure(store=...)``), as the
client uses it: made once per process, checked once before the first job that needs it, and
swept of old pieces now and then in the background.

``None`` means the target's own store (the local emulator's). A configured store is an
``s3.S3Store`` (any S3-compatible bucket, or a RunPod network volume through its S3 API): the
client always speaks S3 to it; a worker with the volume mounted reads and writes the files.

The sweep runs at most once a day per store location (a timestamp file per location under the
data directory says when it last ran, in any process of the user), in a daemon thread that
never blocks or fails a call: a failure is a one-line warning.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from typing import Any

from .. import config
from ..errors import ConfigError
from ..paths import data_dir
from ..private import write_private

AUTO_SWEEP_EVERY_S = 24 * 3600.0
AUTO_SWEEP_OLDER_THAN_S = 7 * 24 * 3600.0  # s3.DEFAULT_SWEEP_AGE_S, as `rpremote store sweep`
SWEEP_DIR = "store-sweeps"

_lock = threading.Lock()
_checked: dict[str, Any] = {}  # canonical URL -> the store, checked in this process


def configured() -> Any | None:
    """The configured store, checked (once per process) before anything is sent to it; None
    for the target's own. A wrong setting raises ``ConfigError`` naming what to fix."""
    location, where = config.store_choice()
    if location is None:
        return None
    url = location.url()
    with _lock:
        store = _checked.get(url)
    if store is not None:
        return store
    try:
        store = make(location)
        store.check()
    except ConfigError as e:
        raise ConfigError(f"{e}; nothing was sent (the offload store is set by {where})") from None
    with _lock:
        store = _checked.setdefault(url, store)
    maybe_sweep(store)
    return store


def make(location: Any) -> Any:
    """An ``S3Store`` for ``location``: no network yet, but botocore is imported (a
    ``ConfigError`` says how to install it when it is missing)."""
    from ..s3 import S3Store

    return S3Store(location)


def forget() -> None:
    """Check again on next use (tests)."""
    with _lock:
        _checked.clear()


def stamp_path(url: str):
    return data_dir() / SWEEP_DIR / hashlib.sha256(url.encode()).hexdigest()[:16]


def maybe_sweep(store: Any, *, now: float | None = None) -> threading.Thread | None:
    """Start a background sweep of ``store`` unless one ran in the last day (in any process
    of this user); the thread, or None when it was not due."""
    url = store.location.url()
    path = stamp_path(url)
    now = time.time() if now is None else now
    try:
        if now - path.stat().st_mtime < AUTO_SWEEP_EVERY_S:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        # Claimed before the sweep: another process starting now sees it done.
        write_private(path, f"{url}\n{now:.0f}\n")
    except OSError as e:
        _warn(f"rpremote: the offload store's sweep was skipped (cannot write {path}: {e})")
        return None
    thread = threading.Thread(target=_sweep_quietly, args=(store,), daemon=True,
                              name="rpremote-store-sweep")
    thread.start()
    return thread


def _sweep_quietly(store: Any) -> None:
    try:
        store.sweep(AUTO_SWEEP_OLDER_THAN_S)
    except Exception as e:  # noqa: BLE001 -- never fails a call
        _warn(f"rpremote: sweeping old pieces from {store.location.url()} failed "
              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "`rpremote store sweep` does it by hand")


def _warn(line: str) -> None:
    if not config.settings().quiet:
        print(line, file=sys.stderr)
