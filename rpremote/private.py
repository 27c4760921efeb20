"""State at rest is private: directories 0700, files 0600, whatever the umask.

What rpremote keeps on disk holds the user's code and data: the emulator's job store (every
job's pickled arguments and result), offload pieces, worker logs, keys, the journal. On a
shared host (a JupyterHub server, a lab machine) none of it may be readable by other users.
So every directory rpremote makes is created 0700 and every file 0600 with explicit modes,
never left to the user's umask; a directory of rpremote's that already exists with wider
modes (an older rpremote made them 0755) is tightened when it is next used, and one that
belongs to another user, or is a shared one like ``/tmp``, is refused with a message saying
why. The emulator and the workers it starts run with ``UMASK`` (077), which keeps private
what other code writes there too (SQLite's ``-wal``/``-shm``, pip's and uv's caches,
matplotlib's). The user's own process never has its umask changed.

Standard library only: the client, the emulator and the executor all import this.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import RpremoteError

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077  # the emulator's and its workers'


class NotPrivateError(RpremoteError, PermissionError):
    """A directory rpremote keeps private state in cannot be made private (it belongs to
    another user, is a shared directory, or refuses chmod); the message says which and why."""


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents, each 0700; directories that exist are left as
    they are (they are not rpremote's to change). Returns ``path``."""
    path = Path(path)
    missing = []
    level = path
    while not level.exists() and level != level.parent:
        missing.append(level)
        level = level.parent
    for level in reversed(missing):
        try:
            os.mkdir(level, DIR_MODE)
        except FileExistsError:  # made meanwhile by a concurrent process
            pass
    return path


def private_dir(path: str | os.PathLike[str], top: str | os.PathLike[str] | None = None) -> Path:
    """Make ``path`` a private directory of rpremote's and return it.

    ``top`` is the highest level rpremote owns above ``path`` (the data directory, say); when
    ``path`` lies under it, every level from ``top`` down to ``path`` is created 0700 or, if
    it exists, checked and tightened. Levels above ``top`` (``~/.local/share``, ``/dev/shm``)
    are only created (0700) when missing, never changed. Raises ``NotPrivateError`` for a
    level owned by another user (a name pre-created in a shared directory such as
    ``/dev/shm``), for a shared sticky directory like ``/tmp``, or when chmod fails.
    """
    path = Path(path)
    top_path = Path(top) if top is not None else path
    if not path.is_relative_to(top_path):
        top_path = path
    make_dirs(top_path.parent)
    level = top_path
    _own_dir(level)
    for part in path.relative_to(top_path).parts:
        level = level / part
        _own_dir(level)
    return path


def _own_dir(path: Path) -> None:
    created = False
    try:
        os.mkdir(path, DIR_MODE)
        created = True
    except FileExistsError:
        pass
    st = os.lstat(path)
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid != me:
            raise NotPrivateError(
                f"{path} is a symbolic link owned by {_owner(st.st_uid)}, not by you: rpremote "
                f"will not keep your jobs' data there. Remove it (or ask its owner to), or "
                f"point RPREMOTE_HOME elsewhere")
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotPrivateError(f"{path} is not a directory; rpremote needs a directory there "
                              f"for its private state: move that file away")
    if st.st_uid != me:
        raise NotPrivateError(
            f"{path} belongs to {_owner(st.st_uid)}, not to you: rpremote keeps jobs' "
            f"arguments, results and logs there, so it must be yours alone. Remove it (or ask "
            f"its owner to), or point RPREMOTE_HOME (or --state) at a directory of your own")
    if st.st_mode & stat.S_ISVTX:
        raise NotPrivateError(
            f"{path} is a shared directory (sticky bit, like /tmp): rpremote will not keep its "
            f"state there or change its modes; use a directory of its own, e.g. "
            f"{path / 'rpremote'}")
    mode = stat.S_IMODE(st.st_mode)
    wanted = DIR_MODE if created else mode & ~0o077
    if mode != wanted:
        try:
            os.chmod(path, wanted)
        except OSError as e:
            raise NotPrivateError(
                f"{path} is readable by other users (mode {mode:04o}) and could not be made "
                f"private (chmod 700: {e.strerror}); fix its modes or choose another "
                f"directory") from None


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` empty with mode 0600 if it is missing; tighten it if it is wider.
    For files others then open by name: locks, logs, SQLite databases. Returns ``path``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten_file(path)
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask took away
    finally:
        os.close(fd)
    return path


def tighten_file(path: str | os.PathLike[str]) -> None:
    """Take group and other bits off an existing file of ours; nothing if it is missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)


def private_sqlite(path: str | os.PathLike[str]) -> Path:
    """A SQLite database file made (or kept) 0600 before it is opened. SQLite gives the
    ``-wal``, ``-shm`` and ``-journal`` files it creates the database's own mode, so those
    are private too; old ones left with wider modes are tightened."""
    path = private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten_file(path.with_name(path.name + suffix))
    return path


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write a file only the user can read, never letting it exist with wider permissions
    (written beside it, then renamed into place). Missing directories are made 0700."""
    path = Path(path)
    make_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), FILE_MODE)  # a leftover .tmp may have had wider modes
        f.write(text)
    os.replace(tmp, path)
