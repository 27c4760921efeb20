"""Which server runs the jobs, chosen once per process: ``local`` (default), ``runpod``, ``pod``.

A target gives a queue client and turns a resource spec into an endpoint id. Asking for the
cloud never falls back to local: a target that cannot be used raises and says why.

The local target is kept while its emulator lives. When the emulator's process is gone
(killed, out of memory, its idle shutdown), the next ``current()`` connects again, as on first
use: a new emulator (new URL, key, pid, offload store; endpoints are ensured on it again).
The stopped one's queue client is left open for the threads still holding its jobs: their
next request fails at once with ``EmulatorStopped`` (``Job`` says the outcome is unknown),
since a job there is never silently followed, or sent again, on another emulator.
"""

from __future__ import annotations

import sys
import threading

import os

from .. import config
from ..blobs import DirectoryStore, HttpStore, Shipper
from ..errors import ConfigError, TargetNotAvailable
from ..resources import Resources
from .local import LocalEmulator
from .queue import QueueClient


class LocalTarget:
    name = "local"

    def __init__(self) -> None:
        self.emulator = LocalEmulator.connect()
        self.queue = QueueClient(self.emulator.url, self.emulator.key,
                                 where=f"the local emulator (pid {self.emulator.pid})",
                                 alive=self.emulator.alive)
        self.blobs = Shipper(self._blob_store())
        self._announced: set[str] = set()

    def _blob_store(self) -> DirectoryStore | HttpStore:
        """The emulator's offload store: its directory when this process can write it (the
        same machine; ~memory speed), else over HTTP (``RPREMOTE_BLOB_TRANSPORT=http`` forces)."""
        info = self.emulator.info()
        where = info.get("blobs") or {}
        directory = where.get("dir")
        if (directory and os.environ.get("RPREMOTE_BLOB_TRANSPORT") != "http"
                and os.access(directory, os.W_OK)):
            return DirectoryStore(directory)
        return HttpStore(self.emulator.url + where.get("url", "/rpremote/v1/blobs"), self.emulator.key)

    def endpoint_for(self, resources: Resources) -> str:
        secret, secret_file = config.secret_source()
        secret_env = ({"RPREMOTE_SECRET_FILE": str(secret_file)} if secret_file
                      else {"RPREMOTE_SECRET": secret.decode()})
        name = self.emulator.ensure_endpoint(resources, secret_env)
        if resources.gpu and name not in self._announced and not config.settings().quiet:
            self._announced.add(name)
            print(f"rpremote: {resources.describe()} requested; running on local workers "
                  "(this machine's CPU/GPU)", file=sys.stderr)
        return name

    def existing_endpoint(self, name: str) -> str:
        """``name``, once the emulator confirms it hosts that endpoint (nothing is sent otherwise)."""
        if self.emulator.endpoint(name) is None:
            known = ", ".join(sorted(e["id"] for e in self.emulator.endpoints())) or "none yet"
            raise ConfigError(f"the local emulator has no endpoint {name!r} (it has: {known}); "
                              "nothing was sent. `rpremote endpoints` lists them; leave out "
                              "endpoint= to get one made for the function's resources")
        return name

    def check_environment(self, python: str, client_env: dict) -> None:
        """Whether the workers can read what this client pickles: here they run this very
        interpreter, so always. (A RunPod target checks its image: ``parity.check_image``.)"""

    def alive(self) -> bool:
        """False once the emulator's process is gone (a pid check: microseconds)."""
        return self.emulator.alive()

    def close(self) -> None:
        self.queue.close()


_lock = threading.Lock()
_current: tuple[str, object] | None = None


def current() -> LocalTarget:
    """The target for this process, connected on first use."""
    global _current
    name = config.target_name()
    with _lock:
        stopped = None
        if _current and _current[0] == name:
            if _current[1].alive():  # type: ignore[attr-defined]
                return _current[1]  # type: ignore[return-value]
            stopped = _current[1]  # its emulator is gone: connect again, as on first use
        if name in ("runpod", "pod"):
            raise TargetNotAvailable(
                f"target {name!r} is not available yet in rpremote {_version()}: it needs the "
                "RunPod provisioning work that has not landed. Nothing was sent. Use the "
                "default local target (unset RPREMOTE_TARGET / configure(target='local'))."
            )
        if stopped is not None and not config.settings().quiet:
            print(f"rpremote: {stopped.queue.where} has stopped; switching to a new one",
                  file=sys.stderr)
        target = LocalTarget()
        if _current and _current[1] is not stopped:
            _current[1].close()  # type: ignore[attr-defined]
        _current = (name, target)
        return target


def forget() -> None:
    """Drop the cached target (tests; after the emulator was restarted)."""
    global _current
    with _lock:
        if _current:
            _current[1].close()  # type: ignore[attr-defined]
        _current = None


def _version() -> str:
    from .. import __version__
    return __version__
