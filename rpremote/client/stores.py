"""The offload store a user configured (``RPREMOTE_STORE``, ``configure(store=...)``), as the
client uses it: made once per process, checked once before the first job that needs it, and
swept of old pieces now and then in the background.

``None`` means the target's own store (the local emulator's). A configured store is an
``s3.S3Store`` (any S3-compatible bucket, or a RunPod network volume through its S3 API): the
client always speaks S3 to it; a worker with the volume mounted reads and writes the files.

A network volume given without ``?dc=`` (``runpod-volume://VOLUME_ID``) has its data center
looked up once per process through RunPod's control plane (``GET /v2/network-volumes/{id}``,
with the RunPod API key); the store, and so the workers' ``RPREMOTE_STORE``, carry the
``?dc=`` found: a worker never asks the control plane.

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
_data_centers: dict[tuple[str, str], str] = {}  # (control plane, volume id) -> data center


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
        store = make(location, where)
        store.check()
    except ConfigError as e:
        raise ConfigError(f"{e}; nothing was sent (the offload store is set by {where})") from None
    with _lock:
        store = _checked.setdefault(url, store)
    maybe_sweep(store)
    return store


def make(location: Any, where: str = "RPREMOTE_STORE") -> Any:
    """An ``S3Store`` for ``location``: no network yet (but for a volume's data center, looked
    up when ``?dc=`` is missing and a RunPod API key is set), and botocore is imported (a
    ``ConfigError`` says how to install it when it is missing). ``where`` names the setting."""
    from ..s3 import S3Store

    if location.scheme == "runpod-volume" and not location.dc:
        location = with_data_center(location, where)
    return S3Store(location)


def with_data_center(location: Any, where: str = "RPREMOTE_STORE") -> Any:
    """``location`` (a network volume without ``?dc=``) with its data center, asked of the
    control plane; unchanged when there is no RunPod API key (``S3Store`` then says to add
    ``?dc=`` or set one). ``ConfigError`` naming ``where`` and the volume for a volume that
    does not exist, or whose data center has no S3 API."""
    import dataclasses

    from .. import platform
    from ..errors import ControlPlaneError, ResourceNotFound
    from .control import ControlPlane, base_url_setting

    key, _ = config.runpod_api_key()
    if not key:
        return location
    volume = location.bucket
    base, _ = base_url_setting()
    with _lock:
        dc = _data_centers.get((base, volume))
    if dc is None:
        shown = location.url()
        try:
            with ControlPlane.from_settings() as plane:
                dc = plane.volumes.data_center(volume)
        except ResourceNotFound:
            raise ConfigError(f"{where}={shown!r}: RunPod has no network volume {volume!r} "
                              f"for this API key (GET {base}/v2/network-volumes/{volume} is "
                              "404); check the volume id in the console, or add "
                              "?dc=DATA_CENTER") from None
        except ControlPlaneError as e:
            raise ConfigError(f"{where}={shown!r} has no ?dc=, and looking the volume's data "
                              f"center up failed: {e}") from None
        if not dc:
            raise ConfigError(f"{where}={shown!r}: RunPod did not say which data center network "
                              f"volume {volume!r} is in; add ?dc=DATA_CENTER")
        dc = dc.strip().upper()
        if dc not in platform.S3_API_DATA_CENTERS:
            raise ConfigError(f"{where}={shown!r}: network volume {volume!r} is in {dc}, which "
                              "has no S3 API (RunPod has one in "
                              f"{', '.join(platform.S3_API_DATA_CENTERS)}); use a volume there "
                              "or an s3:// store")
        with _lock:
            _data_centers[(base, volume)] = dc
    return dataclasses.replace(location, dc=dc)


def forget() -> None:
    """Check again on next use (tests)."""
    with _lock:
        _checked.clear()
        _data_centers.clear()


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


def describe_choice() -> str:
    """The offload store this process is set to use, in words: where it is and where its
    credentials come from, never them (``%runpod config``, ``rpremote endpoints``)."""
    location, where = config.store_choice()
    if location is None:
        return "the target's own (the local emulator's)"
    try:
        return f"{make(location).describe()} (set by {where})"
    except ConfigError as e:
        return f"{location.url()} (set by {where}), not usable here: {e}"
