"""A worker started ahead of time: the next executor worker, its imports done, waiting for a job.

A new executor worker spends most of its start importing: rpremote's executor, then ``runpod``
and what it imports (aiohttp, requests, paramiko, ...: ~0.4 s here, 1.5 s before
``executor/sdk_fixes.py``). The emulator keeps one *spare* per state directory: the usual
worker process chain (``reaper`` -> this module), started with the environment every executor
worker of this emulator shares, which imports everything a worker imports *except the
``runpod`` package itself* (its modules read the worker's own environment at import: job
URLs, worker id) and then waits on its stdin. ``Supervisor.spawn`` hands it a worker: it
renames the spare's log to the worker's, writes one JSON line (the command, environment and
directory the worker would have been started with) and closes the pipe. The spare then
becomes that worker in place: it takes the worker's environment, argv and a fresh
``__main__`` and runs ``python -m rpremote.executor`` as the interpreter would (runpy), so
``import runpod`` reads the worker's environment and takes ~10 ms.

It is used only where that is the same as starting the command: the default executor
command (``<python> -m rpremote.executor``, that ``python`` being this interpreter), no clean
image environment, the emulator's directory, and an environment that differs from the
spare's only in ``RUNPOD_*`` / ``RPREMOTE_*`` variables nothing read while the spare imported
(they are recorded). Anything else, checked in the spare itself, makes it ``exec`` the
command as given, which is exactly the usual start (the same process tree, session, log,
descriptors and umask; only later). The spare's process is the worker's reaper, the
supervisor's child as always: stopped by its pid, reaped with the worker's exit code, and
it dies with the emulator (parent-death signal). ``RPREMOTE_WORKER_TEMPLATE=0`` in the
emulator's environment turns spares off.

Run as ``python -m rpremote.local.worker_template`` (by the reaper). The emulator's side
(``TemplatePool``) imports only the standard library.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

EXECUTOR_MODULE = "rpremote.executor"
EXEMPT_PREFIXES = ("RUNPOD_", "RPREMOTE_")
REFILL_DELAY_S = 1.0  # a new spare starts this long after one was taken, not during its start
SETTING = "RPREMOTE_WORKER_TEMPLATE"


def enabled() -> bool:
    return os.environ.get(SETTING, "1") != "0"


def is_executor_command(command: list[str]) -> bool:
    """``<python> -m rpremote.executor``: the command a spare may stand in for."""
    return len(command) == 3 and command[1:] == ["-m", EXECUTOR_MODULE]


# -- the emulator's side --------------------------------------------------------------------


class Spare:
    def __init__(self, proc: subprocess.Popen, log_path: Path, env: dict[str, str], grace: float):
        self.proc = proc
        self.log_path = log_path
        self.env = env
        self.grace = grace

    def assign(self, log_path: Path, command: list[str], env: dict[str, str],
               cwd: str | None) -> None:
        """Make this spare the worker: ``OSError`` when it is gone (then it is stopped)."""
        try:
            os.rename(self.log_path, log_path)
            line = json.dumps({"argv": command, "env": env, "cwd": cwd}).encode() + b"\n"
            assert self.proc.stdin is not None
            self.proc.stdin.write(line)
            self.proc.stdin.close()
        except (OSError, ValueError):
            self.stop()
            raise OSError("the spare worker is gone")

    def stop(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class TemplatePool:
    """One spare worker for the executor workers of one emulator (one state directory)."""

    def __init__(self, spare_dir: Path, env: dict[str, str], grace: float, umask: int):
        self.spare_dir = spare_dir
        self.env = env
        self.grace = grace
        self.umask = umask
        self.spare: Spare | None = None
        self.next_start_at = 0.0
        self.deaths = 0  # spares that died before they were taken, in a row
        self.closed = False
        self._lock = threading.Lock()
        for left in spare_dir.glob("spare-*.log"):  # of an emulator that was killed
            left.unlink(missing_ok=True)

    def ensure(self, now: float | None = None) -> None:
        """Start a spare if there is none (not within REFILL_DELAY_S of the last take)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.closed or now < self.next_start_at:
                return
            if self.spare is not None:
                if self.spare.proc.poll() is None:
                    return
                # It died waiting (a broken import?): workers start the usual way meanwhile.
                self.spare.stop()
                self.spare = None
                self.deaths += 1
                self.next_start_at = now + min(300.0, REFILL_DELAY_S * 4 ** self.deaths)
                return
            self.spare = self._start()

    def take(self, env: dict[str, str], grace: float) -> Spare | None:
        """The spare, for a worker of this environment and stop grace; None when there is none."""
        with self._lock:
            spare = self.spare
            if spare is None or grace != spare.grace or not _same_base(env, spare.env):
                return None  # (kept for a worker it can be)
            self.spare = None
            if spare.proc.poll() is not None:
                spare.stop()
                return None
            self.deaths = 0
            self.next_start_at = time.monotonic() + REFILL_DELAY_S
            return spare

    def close(self) -> None:
        with self._lock:
            self.closed = True
            spare, self.spare = self.spare, None
        if spare is not None:
            spare.stop()
            try:
                spare.proc.wait(5)
            except subprocess.TimeoutExpired:
                spare.proc.kill()
                spare.proc.wait()

    def _start(self) -> Spare | None:
        self.spare_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = self.spare_dir / f"spare-{secrets.token_hex(6)}.log"
        cmd = [sys.executable, "-m", "rpremote.local.reaper", str(self.grace), "--",
               sys.executable, "-m", __name__]
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.PIPE, stdout=fd,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    umask=self.umask)
        except OSError:
            return None
        finally:
            os.close(fd)
        return Spare(proc, log_path, self.env, self.grace)


def _same_base(worker_env: dict[str, str], spare_env: dict[str, str]) -> bool:
    """A cheap first look (the spare checks for itself): the non-exempt variables agree."""
    keys = {k for k in (*worker_env, *spare_env) if not k.startswith(EXEMPT_PREFIXES)}
    return all(worker_env.get(k) == spare_env.get(k) for k in keys)


_pools: dict[Path, TemplatePool] = {}
_pools_lock = threading.Lock()


def pool_for(state_dir: Path, env: dict[str, str], grace: float, umask: int) -> TemplatePool | None:
    """The state directory's pool (made, and its first spare started, on the first ask)."""
    if not enabled():
        return None
    with _pools_lock:
        pool = _pools.get(state_dir)
        if pool is None or pool.closed:
            pool = _pools[state_dir] = TemplatePool(state_dir / "logs" / "spares", env, grace, umask)
    pool.ensure()
    return pool


def close_pools(state_dir: Path | None = None) -> None:
    with _pools_lock:
        pools = [p for d, p in _pools.items() if state_dir is None or d == state_dir]
    for pool in pools:
        pool.close()


atexit.register(close_pools)


# -- the spare's side -----------------------------------------------------------------------


class _RecordingEnviron(type(os.environ)):  # type: ignore[misc]
    """``os.environ`` that notes which variables' values are read (while the spare imports).

    Iterating over the names is not noted: libraries do it to copy the environment for a
    subprocess (``platform.architecture`` in py-cpuinfo) or to find their own variables
    (tqdm's ``TQDM_*``, reading each value, which is noted); none but runpod's and ours look
    for ``RUNPOD_*`` / ``RPREMOTE_*`` names."""

    read: set[str] = set()

    def __getitem__(self, key):
        _RecordingEnviron.read.add(key)
        return super().__getitem__(key)


def _preload() -> None:
    """Import what a worker imports before it reaches ``import runpod``, and runpod's own
    dependencies (never runpod: it reads the worker's environment at import)."""
    import importlib
    import importlib.metadata

    import rpremote.executor.worker  # noqa: F401  what `-m rpremote.executor` imports first
    from rpremote.executor import streams
    from rpremote.executor.sdk_fixes import sdk_dependencies

    streams.install()  # worker.main does this first: what is imported next sees the routers
    try:
        version = importlib.metadata.version("runpod")
    except importlib.metadata.PackageNotFoundError:
        return
    for name in sdk_dependencies(version):
        try:
            importlib.import_module(name)
        except Exception:  # not installed here, or broken: the worker's own import says so
            pass


def _read_assignment() -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return None
        data += chunk
    null = os.open(os.devnull, os.O_RDONLY)  # as a worker started with stdin=DEVNULL
    os.dup2(null, 0)
    os.close(null)
    return json.loads(data)


def why_not_here(argv: list[str], env: dict[str, str], cwd: str | None,
                 read: set[str], own_env: dict[str, str]) -> str | None:
    """Why this process cannot become the worker ``argv`` in place (None: it can)."""
    if not is_executor_command(argv):
        return "not the executor command"
    python = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
    try:
        same = bool(python) and os.path.samefile(python, sys.executable) and \
            os.path.dirname(os.path.abspath(python)) == os.path.dirname(sys.executable)
    except OSError:
        same = False
    if not same:  # (a venv's python is another environment than the interpreter it links to)
        return f"{argv[0]} is not this interpreter ({sys.executable})"
    if cwd and os.path.realpath(cwd) != os.path.realpath(os.getcwd()):
        return f"the worker runs in {cwd}"
    for key in {*env, *own_env}:
        if env.get(key) != own_env.get(key) and (not key.startswith(EXEMPT_PREFIXES) or key in read):
            return f"its environment differs in {key}"
    return None


def _become(argv: list[str], env: dict[str, str], changed: dict[str, str | None]) -> None:
    """Go on as ``argv`` (``python -m rpremote.executor``) would have started. ``changed``:
    what the spare's imports set in the environment, which they would have set there too."""
    import runpy
    import types

    os.environ.clear()
    os.environ.update(env)
    for key, value in changed.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    sys.orig_argv = list(argv)
    sys.argv = [argv[0]]  # runpy puts the module's path here, as -m does
    for name in [m for m in sys.modules if m == "rpremote.local" or m.startswith("rpremote.local.")]:
        del sys.modules[name]
    package = sys.modules.get("rpremote")
    if package is not None and hasattr(package, "local"):
        delattr(package, "local")
    sys.modules["__main__"] = types.ModuleType("__main__")
    runpy._run_module_as_main(EXECUTOR_MODULE)  # type: ignore[attr-defined]


def main() -> int:
    own_env = dict(os.environ)
    environ_class = type(os.environ)
    os.environ.__class__ = _RecordingEnviron
    try:
        _preload()
    finally:
        os.environ.__class__ = environ_class
    changed = {k: os.environ.get(k) for k in {*own_env, *os.environ}
               if own_env.get(k) != os.environ.get(k)}
    sys.stdout.flush()
    sys.stderr.flush()
    job = _read_assignment()
    if job is None:  # the emulator let this spare go
        return 0
    argv, env, cwd = job["argv"], job["env"], job.get("cwd")
    why = why_not_here(argv, env, cwd, _RecordingEnviron.read, own_env)
    if why is None:
        _become(argv, env, changed)
        return 0
    print(f"[rpremote] a spare worker cannot stand in ({why}); starting "
          f"`{shlex.join(argv)}`", file=sys.stderr, flush=True)
    if cwd:
        os.chdir(cwd)
    os.execvpe(argv[0], argv, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
