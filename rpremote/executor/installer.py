"""Install what a request needs — pip requirements, Debian packages — before it is unpickled.

Requirements the worker already meets are left alone (``versions.satisfies``: a pin is met by
the same major.minor), so the image's torch or numpy is never reinstalled. The rest go into a
directory keyed by the set, the Python minor and the platform, under ``RPREMOTE_DEPS_DIR``, or
the network volume (``/runpod-volume/rpremote/deps``, shared by every worker of the endpoint),
or ``~/.cache/rpremote/deps``; it is put first on ``sys.path``. A finished directory has a
``.complete`` marker and is reused as is; a file lock makes concurrent workers install a set
once (the others wait, then reuse it); a half-done install never becomes visible (it is built
in a temporary directory and renamed). The installer's output goes to the caller line by line.

System packages: ``apt-get install`` on RunPod workers (archives cached under the same root).
A local emulator's worker (``RPREMOTE_LOCAL_WORKER=1``) runs on the user's own machine, so it
installs nothing there: it only checks that the packages are present.

Stdlib only: runs in the worker image.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import importlib
import importlib.metadata as md
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import platform as rp
from ..errors import DependencyInstallError
from ..private import make_dirs, private_file, write_private
from ..versions import Requirement, check_system_packages, parse_requirement, satisfies

Log = Callable[[str], None]

DEPS_DIR_ENV = "RPREMOTE_DEPS_DIR"
LOCAL_WORKER_ENV = "RPREMOTE_LOCAL_WORKER"
INSTALLER_ENV = "RPREMOTE_INSTALLER"  # "pip" or "uv"; default: uv when on PATH, else pip
APT_LISTS = Path("/var/lib/apt/lists")
_ERROR_TAIL_LINES = 40
_UV_FROM_PIP = {"PIP_NO_INDEX": "UV_NO_INDEX", "PIP_FIND_LINKS": "UV_FIND_LINKS",
                "PIP_INDEX_URL": "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL"}


def deps_root() -> Path:
    if os.environ.get(DEPS_DIR_ENV):
        return Path(os.environ[DEPS_DIR_ENV])
    volume = os.environ.get("RPREMOTE_VOLUME_MOUNT") or rp.NETWORK_VOLUME_DIR
    if os.path.isdir(volume):
        return Path(volume) / "rpremote" / "deps"
    return Path.home() / ".cache" / "rpremote" / "deps"


def platform_tag() -> str:
    """``cpython-311-linux-x86_64``: what decides whether installed wheels fit."""
    return f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"


class Installer:
    """Prepares each distinct (requirements, system packages) set once per worker process."""

    def __init__(self) -> None:
        self._ready: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def prepare(self, request: dict[str, Any], log: Log) -> None:
        """Install what ``request`` asks for; ``ValueError`` for a malformed list,
        ``DependencyInstallError`` when an install fails or a package is missing."""
        reqs = request.get("requirements") or []
        system = request.get("system") or []
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise ValueError("request 'requirements' must be a list of requirement strings")
        key = (tuple(reqs), tuple(system) if isinstance(system, list) else ())
        if key in self._ready:
            return
        parsed = [parse_requirement(r) for r in reqs]  # ValueError: refused as bad input
        packages = check_system_packages(system)
        with self._lock:
            if key in self._ready:
                return
            if packages:
                ensure_system_packages(packages, log)
            if parsed:
                ensure_requirements(parsed, log)
            self._ready.add(key)


# -- pip requirements -------------------------------------------------------------------------


def _installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def ensure_requirements(reqs: list[Requirement], log: Log) -> Path | None:
    """Make ``reqs`` importable; returns the directory put on ``sys.path``, if one was."""
    needed, kept = [], []
    for req in reqs:
        have = _installed_version(req.name)
        if have is not None and satisfies(have, req):
            kept.append(f"{req.name} {have}")
        else:
            needed.append(req)
    if not needed:
        return None  # the usual case: nothing to say on every call's log
    if kept:
        log(f"rpremote: already on this worker: {', '.join(kept)}\n")
    wanted = sorted({str(r) for r in needed}, key=str.lower)
    digest = hashlib.sha256(json.dumps(
        {"requirements": wanted, "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
         "platform": platform_tag()}, sort_keys=True).encode()).hexdigest()[:32]
    root = deps_root()
    target = root / digest
    what = ", ".join(wanted)
    if (target / ".complete").exists():
        log(f"rpremote: using cached install of {what} ({target})\n")
        return _activate(target)
    try:
        make_dirs(root)  # missing levels 0700; an existing (maybe shared) root is left as is
    except OSError as e:
        raise DependencyInstallError(f"cannot create the dependency cache {root}: {e}; set "
                                     f"{DEPS_DIR_ENV} (env=) to a writable directory") from None
    with _file_lock(root / f"{digest}.lock", log, what):
        if (target / ".complete").exists():  # another worker installed it while we waited
            log(f"rpremote: using cached install of {what} ({target})\n")
            return _activate(target)
        _install(wanted, target, log)
    return _activate(target)


@contextmanager
def _file_lock(path: Path, log: Log, what: str) -> Iterator[None]:
    """An exclusive ``flock``, polled so that a stopped job can still be interrupted."""
    with open(private_file(path), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"rpremote: another worker is installing {what}; waiting for it\n")
            while True:
                time.sleep(0.1)
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _installer_command(target: str, wanted: list[str]) -> tuple[str, list[str], dict[str, str]]:
    env = dict(os.environ)
    choice = os.environ.get(INSTALLER_ENV, "")
    uv = shutil.which("uv") if choice in ("", "uv") else None
    if uv:
        for pip_key, uv_key in _UV_FROM_PIP.items():  # the same settings reach uv
            if pip_key in env and uv_key not in env:
                env[uv_key] = "true" if uv_key == "UV_NO_INDEX" else env[pip_key]
        return "uv", [uv, "pip", "install", "--no-progress", "--python", sys.executable,
                      "--target", target, *wanted], env
    return "pip", [sys.executable, "-m", "pip", "install", "--target", target, "--no-input",
                   "--disable-pip-version-check", "--progress-bar", "off",
                   "--no-warn-script-location", *wanted], env


def _install(wanted: list[str], target: Path, log: Log) -> None:
    tmp = tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        tool, cmd, env = _installer_command(tmp, wanted)
        log(f"rpremote: installing {', '.join(wanted)} with {tool} into {target}\n")
        started = time.monotonic()
        rc, tail = _run_streamed(cmd, env, log)
        if rc != 0:
            raise DependencyInstallError(
                f"{tool} could not install {', '.join(wanted)} (exit code {rc}):\n"
                f"{_error_text(tail)}")
        if target.exists():  # left by an install that died before its marker
            shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        write_private(target / ".complete", json.dumps({"requirements": wanted,
                                                        "seconds": time.monotonic() - started}))
        log(f"rpremote: installed {', '.join(wanted)} in {time.monotonic() - started:.1f} s\n")
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _activate(target: Path) -> Path:
    """Put ``target`` first on ``sys.path`` (its ``.pth`` files processed), once."""
    path = str(target)
    if path not in sys.path:
        sys.path.insert(0, path)
        site.addsitedir(path)  # already known, so not appended again; runs its .pth files
        importlib.invalidate_caches()
    return target


def _run_streamed(cmd: list[str], env: dict[str, str], log: Log) -> tuple[int, list[str]]:
    """Run ``cmd``, sending each output line to ``log``; ``(exit code, last lines)``.

    A stopped job (``JobStopped`` raised in this thread) kills the installer on its way out.
    """
    tail: collections.deque[str] = collections.deque(maxlen=_ERROR_TAIL_LINES)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, text=True, errors="replace",
                                bufsize=1)
    except OSError as e:
        return 127, [f"cannot run {cmd[0]}: {e}\n"]
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(line)
            tail.append(line)
        return proc.wait(), list(tail)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _error_text(tail: list[str]) -> str:
    """The installer's own error lines (pip's ``ERROR: ...``, apt's ``E: ...``), else its tail."""
    errors = [line for line in tail if line.lstrip().startswith(("ERROR", "error", "E:", "×"))]
    lines = errors or tail[-15:]
    return "".join(lines).rstrip() or "(no output)"


# -- system packages --------------------------------------------------------------------------


def _deb_present(name: str) -> bool:
    if shutil.which("dpkg-query"):
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if done.returncode == 0 and "install ok installed" in done.stdout:
            return True
    return shutil.which(name) is not None


def ensure_system_packages(names: tuple[str, ...] | list[str], log: Log) -> None:
    missing = [n for n in names if not _deb_present(n)]
    present = [n for n in names if n not in missing]
    if os.environ.get(LOCAL_WORKER_ENV) == "1":
        log(f"rpremote: local worker: system packages are checked, not installed, on this "
            f"machine (RunPod workers would apt-get install {' '.join(names)}); present: "
            f"{', '.join(present) or 'none'}\n")
        if missing:
            raise DependencyInstallError(
                f"system package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'are' if len(missing) > 1 else 'is'} not installed on this machine, and the "
                f"local target never installs system packages (it runs on your own machine): "
                f"install {'them' if len(missing) > 1 else 'it'} yourself, e.g. "
                f"sudo apt-get install -y {' '.join(missing)}, then call again")
        return
    if not missing:
        log(f"rpremote: system packages already installed: {', '.join(present)}\n")
        return
    if not shutil.which("apt-get"):
        raise DependencyInstallError(
            f"system_dependencies {', '.join(missing)} cannot be installed: this worker has no "
            f"apt-get (not a Debian/Ubuntu image); use rpremote's worker image")
    archives = deps_root() / "apt-archives"
    make_dirs(archives / "partial")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not any(APT_LISTS.glob("*Packages*")):  # slim images ship without package lists
        log("rpremote: apt-get update (no package lists in this image)\n")
        rc, tail = _run_streamed(["apt-get", "update", "-q"], env, log)
        if rc != 0:
            raise DependencyInstallError(
                f"apt-get update failed (exit code {rc}):\n{_error_text(tail)}")
    log(f"rpremote: installing system packages {' '.join(missing)} with apt-get\n")
    rc, tail = _run_streamed(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                              "-o", f"dir::cache::archives={archives}", *missing], env, log)
    if rc != 0:
        raise DependencyInstallError(
            f"apt-get could not install {' '.join(missing)} (exit code {rc}):\n{_error_text(tail)}")
