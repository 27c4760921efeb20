"""The local target: find the user's emulator, start it when there is none, add endpoints.

One emulator serves every process of the user. It is found through the state file that
``rpremote serve`` writes (``<data dir>/emulator/server.json``: URL, pid, key file); one that
is gone or not answering is replaced. A server started here listens on a free loopback port
and exits on its own after ``IDLE_SHUTDOWN_S`` without requests or jobs. A file lock makes
concurrent first calls start one server, not several. An emulator can also stop under a
process that uses it (killed, out of memory, its idle shutdown): ``alive`` tells, from its pid,
and the target then connects again as on first use (``targets.current``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import RpremoteError
from ..paths import data_dir
from ..private import private_dir, private_file
from ..resources import Resources

IDLE_SHUTDOWN_S = 15 * 60
START_TIMEOUT_S = 60


class EmulatorUnavailable(RpremoteError):
    """The local emulator could not be found or started; the message says why."""


def state_dir() -> Path:
    return data_dir() / "emulator"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (microseconds, no request). A killed process whose parent
    has not reaped it yet (a zombie: the emulator is a child of the process that started it)
    still answers ``kill(pid, 0)``, so on Linux its state is read too."""
    if pid <= 0:  # kill(0, 0) would ask about our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no /proc (macOS), or it just went
        return False
    return stat[stat.rfind(b")") + 2:].startswith(b"Z")


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _key_for(info: dict[str, Any]) -> str | None:
    if info.get("key_file"):
        try:
            return Path(info["key_file"]).read_text().strip()
        except OSError:
            return None
    return os.environ.get("RPREMOTE_API_KEY")


def _answers(url: str, key: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        r = httpx.get(f"{url}/rpremote/v1/info", headers={"Authorization": f"Bearer {key}"},
                      timeout=timeout)
    except httpx.TransportError:
        return False
    return r.status_code == 200


def _load_the_client() -> None:
    """Import what talking to the emulator takes (httpx, the queue client, the offload
    stores), which ``import rpremote`` leaves out: done while a new emulator starts, it is off
    the first call's path."""
    import httpx  # noqa: F401

    from .. import blobs  # noqa: F401
    from . import queue  # noqa: F401


@contextmanager
def _start_lock(directory: Path) -> Iterator[None]:
    private_dir(directory, top=data_dir())  # 0700, whatever the user's umask
    with open(private_file(directory / "start.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LocalEmulator:
    """Where the emulator is (``url``, ``key``), and the endpoints this process ensured."""

    def __init__(self, url: str, key: str, pid: int, started_here: bool,
                 proc: subprocess.Popen | None = None):
        self.url = url
        self.key = key
        self.pid = pid
        self.started_here = started_here
        self._proc = proc  # when started here: polled, so a killed emulator is reaped
        self._ensured: dict[str, dict[str, Any]] = {}

    def alive(self) -> bool:
        """Whether the emulator's process is still there (microseconds: no request is made).

        A process that is gone never comes back: once this is False, this emulator is done
        with, and ``connect`` finds or starts another."""
        if self._proc is not None:  # our child: waitpid says it all (and reaps it)
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    @classmethod
    def connect(cls, directory: Path | None = None) -> "LocalEmulator":
        """The running emulator, or a new one when none answers."""
        directory = directory or state_dir()
        found = cls._find(directory)
        if found:
            return found
        with _start_lock(directory):
            found = cls._find(directory)  # someone else may have started it meanwhile
            if found:
                return found
            return cls._start(directory)

    @classmethod
    def running(cls, directory: Path | None = None) -> "LocalEmulator | None":
        """The running emulator, or None; never starts one (the CLI's look at old jobs)."""
        return cls._find(directory or state_dir())

    @classmethod
    def _find(cls, directory: Path) -> "LocalEmulator | None":
        info = _read_state(directory / "server.json")
        if not info or not _pid_alive(int(info.get("pid", 0))):
            return None
        key = _key_for(info)
        if key is None:
            return None
        for _ in range(3):  # it may be busy starting up or shutting down
            if _answers(info["url"], key):
                return cls(info["url"], key, int(info["pid"]), started_here=False)
            time.sleep(0.2)
            if not _pid_alive(int(info["pid"])):
                return None
        return None

    @classmethod
    def _start(cls, directory: Path) -> "LocalEmulator":
        state_file = directory / "server.json"
        stale = _read_state(state_file)
        if stale and not _pid_alive(int(stale.get("pid", 0))):
            state_file.unlink(missing_ok=True)
        elif stale:
            raise EmulatorUnavailable(
                f"an emulator (pid {stale.get('pid')}) owns {directory} but does not answer at "
                f"{stale.get('url')}; stop it (kill {stale.get('pid')}) and call again"
            )
        log_path = directory / "server.log"
        cmd = [sys.executable, "-m", "rpremote", "serve", "--port", "0", "--state", str(directory),
               "--idle-shutdown", str(IDLE_SHUTDOWN_S),
               "--no-resume-queue"]  # its callers gave the jobs left there up as unknown
        with open(private_file(log_path), "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this process; shared by the user's others
            )
        _load_the_client()  # while the emulator starts (~0.3 s): ~0.1 s less to wait after it
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmulatorUnavailable(
                    f"the local emulator exited with code {proc.returncode} while starting; "
                    f"its log is {log_path}:\n{_tail(log_path)}"
                )
            info = _read_state(state_file)
            if info and info.get("pid") == proc.pid:
                key = _key_for(info)
                if key and _answers(info["url"], key):
                    return cls(info["url"], key, proc.pid, started_here=True, proc=proc)
            time.sleep(0.01)
        raise EmulatorUnavailable(
            f"the local emulator did not answer within {START_TIMEOUT_S} s; log: {log_path}"
        )

    def info(self) -> dict[str, Any]:
        """The emulator's ``/rpremote/v1/info`` (version, state dir, offload store)."""
        import httpx

        try:
            r = httpx.get(f"{self.url}/rpremote/v1/info",
                          headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        except httpx.TransportError as e:
            raise EmulatorUnavailable(f"the local emulator at {self.url} stopped answering: {e}") from e
        if r.status_code != 200:
            raise EmulatorUnavailable(f"the local emulator answered /info with {r.status_code}: {r.text}")
        return r.json()

    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint the emulator hosts (its specs, as ``/rpremote/v1/endpoints`` lists them)."""
        return self._get("/rpremote/v1/endpoints")

    def endpoint(self, name: str) -> dict[str, Any] | None:
        """One endpoint's spec and workers, or None when the emulator has no such endpoint."""
        return self._get(f"/rpremote/v1/endpoints/{name}", missing_ok=True)

    def _get(self, path: str, missing_ok: bool = False) -> Any:
        import httpx

        try:
            r = httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.key}"},
                          timeout=30)
        except httpx.TransportError as e:
            raise EmulatorUnavailable(f"the local emulator at {self.url} stopped answering: {e}") from e
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code != 200:
            raise EmulatorUnavailable(f"the local emulator answered {path} with {r.status_code}: {r.text}")
        return r.json()

    def ensure_endpoint(self, resources: Resources, secret_env: dict[str, str], *,
                        worker_cmd: str | None = None, on_this_machine: bool = True) -> str:
        """Create the endpoint for ``resources`` (or find it unchanged) and return its id.

        ``secret_env`` (the signing secret, an offload store's credentials) goes only into the
        workers' environment, kept in the emulator's endpoint spec (its SQLite, 0600; masked
        when the spec is shown), never into a job's input. ``worker_cmd``: default this
        interpreter's executor; a server elsewhere (a Pod) runs its own ``python``.
        ``on_this_machine``: the workers run on the user's machine (the local target), so
        they check ``system_dependencies`` instead of installing them (a Pod installs them)."""
        name = resources.endpoint_name
        local = {"RPREMOTE_LOCAL_WORKER": "1"} if on_this_machine else {}
        spec = {
            "id": name,
            "workerCmd": worker_cmd or f"{shlex.quote(sys.executable)} -m rpremote.executor",
            "env": {**dict(resources.env), **secret_env, **local},
            "gpu": resources.describe(),
            "workersMin": resources.workers_min,
            "workersMax": resources.workers_max,
            "idleTimeout": resources.idle_timeout,
        }
        if self._ensured.get(name) == spec:
            return name
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            r = httpx.put(f"{self.url}/rpremote/v1/endpoints/{name}", json=spec, headers=headers,
                          timeout=30)
        except httpx.TransportError as e:
            raise EmulatorUnavailable(f"the local emulator at {self.url} stopped answering: {e}") from e
        if r.status_code != 200:
            raise EmulatorUnavailable(f"the local emulator refused endpoint {name}: {r.text}")
        self._ensured[name] = spec
        return name


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

