"""Which server runs the jobs, chosen once per process: ``local`` (default), ``runpod``
(``runpod.py``), ``pod``.

A target gives a queue client and turns a resource spec into an endpoint id. Asking for the
cloud never falls back to local: a target that cannot be used raises and says why.

The local target is kept while its emulator lives. When the emulator's process is gone
(killed, out of memory, its idle shutdown), the next ``current()`` connects again, as on first
use: a new emulator (new URL, key, pid, offload store; endpoints are ensured on it again).
The stopped one's queue client is left open for the threads still holding its jobs: their
next request fails at once with ``EmulatorStopped`` (``Job`` says the outcome is unknown),
since a job there is never silently followed, or sent again, on another emulator.

Big pieces go to the store the user configured (``RPREMOTE_STORE``: ``stores.py``) when there
is one, else to the emulator's own. The store is part of an endpoint's identity (its name and
its workers' environment), so workers started for another store, or for none, never get a
job whose pieces they would look for in the wrong place.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import ConfigError
from ..resources import Resources
from . import stores
from .local import LocalEmulator

if TYPE_CHECKING:
    from ..blobs import DirectoryStore, HttpStore, Shipper


class LocalTarget:
    name = "local"

    def __init__(self) -> None:
        # The queue client and the stores are imported after the emulator is found: when
        # one has to be started, they load while it starts (``local._load_the_client``).
        self.emulator = LocalEmulator.connect()
        from ..blobs import Shipper
        from .queue import QueueClient

        self.queue = QueueClient(self.emulator.url, self.emulator.key,
                                 where=f"the local emulator (pid {self.emulator.pid})",
                                 alive=self.emulator.alive, lean=True)
        self._own_blobs = Shipper(self._blob_store())
        self._shippers: dict[int, Shipper] = {}  # id(configured store) -> its shipper
        self._announced: set[str] = set()

    @property
    def blobs(self) -> Shipper:
        """Where this call's big pieces go and its results' come from: the configured store
        (checked before the first job; a wrong setting raises ``ConfigError``), else the
        emulator's."""
        store = stores.configured()
        if store is None:
            return self._own_blobs
        shipper = self._shippers.get(id(store))
        if shipper is None:
            from ..blobs import Shipper

            shipper = self._shippers.setdefault(id(store), Shipper(store))
        return shipper

    def _blob_store(self) -> DirectoryStore | HttpStore:
        """The emulator's offload store: its directory when this process can write it (the
        same machine; ~memory speed), else over HTTP (``RPREMOTE_BLOB_TRANSPORT=http`` forces)."""
        from ..blobs import DirectoryStore, HttpStore

        info = self.emulator.info()
        where = info.get("blobs") or {}
        directory = where.get("dir")
        if (directory and os.environ.get("RPREMOTE_BLOB_TRANSPORT") != "http"
                and os.access(directory, os.W_OK)):
            return DirectoryStore(directory)
        return HttpStore(self.emulator.url + where.get("url", "/rpremote/v1/blobs"), self.emulator.key)

    def endpoint_for(self, resources: Resources, image: str | None = None) -> str:
        """The emulator's endpoint for ``resources`` (made when missing). ``image`` is not
        used: local workers run this interpreter and its packages."""
        secret, secret_file = config.secret_source()
        private_env = ({"RPREMOTE_SECRET_FILE": str(secret_file)} if secret_file
                       else {"RPREMOTE_SECRET": secret.decode()})
        store = stores.configured()  # a wrong store setting stops here, before anything is sent
        if store is not None:
            # Where the store is (no secrets) joins the resources' env: the endpoint's name
            # hashes it, so each store has endpoints of its own. Credentials go only into the
            # workers' environment (the emulator's endpoint spec), never into a job's input.
            resources = dataclasses.replace(resources, env=tuple(sorted(
                {**dict(resources.env), **store.worker_env()}.items())))
            private_env.update(store.credential_env())
        name = self.emulator.ensure_endpoint(resources, private_env)
        if resources.gpu and name not in self._announced and not config.settings().quiet:
            self._announced.add(name)
            print(f"rpremote: {resources.describe()} requested; running on local workers "
                  "(this machine's CPU/GPU)", file=sys.stderr)
        return name

    def existing_endpoint(self, name: str) -> str:
        """``name``, once the emulator confirms it hosts that endpoint and that its workers use
        this process's offload store (nothing is sent otherwise)."""
        spec = self.emulator.endpoint(name)
        if spec is None:
            known = ", ".join(sorted(e["id"] for e in self.emulator.endpoints())) or "none yet"
            raise ConfigError(f"the local emulator has no endpoint {name!r} (it has: {known}); "
                              "nothing was sent. `rpremote endpoints` lists them; leave out "
                              "endpoint= to get one made for the function's resources")
        store = stores.configured()
        ours = store.location.url() if store is not None else None
        theirs = _store_of(spec)
        if theirs != ours:
            emulators = "the emulator's own"
            raise ConfigError(
                f"endpoint {name!r}'s workers use the offload store {theirs or emulators}, "
                f"and this process uses {ours or emulators} (RPREMOTE_STORE / "
                "configure(store=...)); big "
                "arguments and results would not be found. Nothing was sent: use the same "
                "store on both sides, or leave out endpoint= to get an endpoint for yours")
        return name

    def check_environment(self, python: str, client_env: dict) -> None:
        """Whether the workers can read what this client pickles: here they run this very
        interpreter, so always. (A RunPod target checks its image: ``parity.check_image``.)"""

    def watch(self, reporter: Any, endpoint_id: str) -> Any:
        """The reporter for a job on ``endpoint_id``: local workers start in a second, so there
        is nothing to add (the RunPod target watches cold starts)."""
        return reporter

    def alive(self) -> bool:
        """False once the emulator's process is gone (a pid check: microseconds)."""
        return self.emulator.alive()

    def close(self) -> None:
        self.queue.close()


def _store_of(spec: dict[str, Any]) -> str | None:
    """The offload store an endpoint's workers are given (its canonical URL), or None for the
    emulator's own."""
    url = ((spec.get("env") or {}).get("RPREMOTE_STORE") or "").strip()
    if url.lower() in config.NO_STORE:
        return None
    try:
        from ..s3 import parse_store

        return parse_store(url).url()
    except ConfigError:
        return url


_lock = threading.Lock()
_current: tuple[str, object] | None = None


def current() -> Any:
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
            target: Any = _cloud_target(name)  # no key, no Pod: raises, nothing made or sent
            if _current:
                _current[1].close()  # type: ignore[attr-defined]
            _current = (name, target)
            return target
        if stopped is not None and not config.settings().quiet:
            print(f"rpremote: {stopped.queue.where} has stopped; switching to a new one",
                  file=sys.stderr)
        target = LocalTarget()
        if _current and _current[1] is not stopped:
            _current[1].close()  # type: ignore[attr-defined]
        _current = (name, target)
        return target


def _cloud_target(name: str) -> Any:
    if name == "runpod":
        from .runpod import RunPodTarget

        return RunPodTarget()
    from .pod import PodTarget

    return PodTarget()


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
