"""State at rest is private: every directory rpremote makes is 0700 and every file 0600,
whatever the umask (real emulator, real SDK workers, under umask 000), and directories an
older rpremote left wider are tightened, while one that belongs to someone else is refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rpremote import config, journal, remote
from rpremote.client import targets
from rpremote.private import NotPrivateError, make_dirs, private_dir, private_file

from conftest import gone, stop_autostarted

BIG = 2 * 1024 * 1024  # over protocol.OFFLOAD_MIN_BYTES: goes through the offload store


@remote(workers=(0, 1), idle_timeout=60)
def shout(word):
    print(f"said {word}", flush=True)  # a log-producing job
    return word.upper()


@remote(workers=(0, 1), idle_timeout=60)
def square(x):
    return x * x


@remote(workers=(0, 1), idle_timeout=60)
def fails(n):
    raise ValueError(f"bad input number {n}")


@remote(workers=(0, 1), idle_timeout=60)
def echo_size(data):
    return len(data), bytes(len(data))  # a big argument out, a big result back


@remote(workers=(0, 1), idle_timeout=60)
def draws():
    import matplotlib.pyplot as plt  # its cache goes into the worker's home

    plt.plot([1, 2, 3])
    plt.show()
    return "drawn"


def modes_not_private(*roots: Path) -> list[str]:
    """Every directory not 0700 and every file not 0600 under ``roots`` (the roots included)."""
    bad = []
    for root in roots:
        if not root.exists():
            continue
        for where, dirs, files in os.walk(root):
            for path in [Path(where)] * (Path(where) == root) + [Path(where) / d for d in dirs]:
                mode = stat.S_IMODE(path.lstat().st_mode)
                if mode != 0o700:
                    bad.append(f"{path}/ {mode:04o}")
            for name in files:
                path = Path(where) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:  # an .incoming- piece renamed meanwhile
                    continue
                if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600:
                    bad.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    return bad


@pytest.fixture
def permissive_home(fresh_home):
    """A fresh RPREMOTE_HOME (not yet made) under umask 000; its emulator stopped by PID."""
    config.configure(quiet=True)
    old_umask = os.umask(0)
    try:
        yield fresh_home
    finally:
        os.umask(old_umask)


def test_everything_rpremote_leaves_on_disk_is_private_under_umask_000(permissive_home):
    home = permissive_home
    assert shout("quietly") == "QUIETLY"
    assert list(square.map(range(6))) == [x * x for x in range(6)]
    with pytest.raises(Exception, match="bad input number 3"):
        fails(3)
    size, back = echo_size(b"\x01" * BIG)
    assert size == BIG and len(back) == BIG
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert draws() == "drawn"

    emulator = targets.current().emulator
    info = emulator.info()
    blob_dir = Path(info["blobs"]["dir"])
    stats = httpx.get(f"{emulator.url}/rpremote/v1/blobs",
                      headers={"Authorization": f"Bearer {emulator.key}"}).json()
    assert stats["pieces"] >= 2, stats  # the big argument and the big result went through it
    state = home / "emulator"
    for expected in (home / "jobs.sqlite3", home / "secret", state / "emulator.sqlite3",
                     state / "emulator.sqlite3-wal", state / "server.json", state / "api_key",
                     state / "server.log", state / "start.lock", state / "worker-home"):
        assert expected.exists(), f"{expected} was not made: the walk below would miss it"
    assert list((state / "logs").rglob("*.log")), "no worker log"

    roots = [home, blob_dir]
    if blob_dir.parent.name == f"rpremote-{os.getuid()}":
        assert stat.S_IMODE(blob_dir.parent.stat().st_mode) == 0o700
        assert blob_dir.parent.stat().st_uid == os.getuid()
    bad = modes_not_private(*roots)
    assert not bad, "not private (want dirs 0700, files 0600):\n" + "\n".join(bad)

    pid = json.loads((state / "server.json").read_text())["pid"]
    targets.forget()
    stop_autostarted(home)  # what it and its workers write on the way out is private too
    assert gone(pid)
    bad = modes_not_private(home)
    assert not bad, "not private after shutdown:\n" + "\n".join(bad)


def test_an_older_wider_data_dir_is_tightened_when_next_used(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "emulator").mkdir(parents=True)
    os.chmod(home, 0o755)  # as an older rpremote left them
    os.chmod(home / "emulator", 0o755)
    old_db = home / "jobs.sqlite3"
    for path in (old_db, old_db.with_name("jobs.sqlite3-wal")):
        path.write_bytes(b"")
        os.chmod(path, 0o644)
    old_db.unlink()  # a journal is rebuilt if need be; keep only the stray -wal
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("RPREMOTE_HOME", str(home))
    config.reset()
    try:
        config.secret_source()  # the signing secret is made: the data dir is tightened
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "secret").stat().st_mode) == 0o600
        jr = journal.journal(tmp_path / "home" / "jobs.sqlite3")
        assert jr.record("job-1", "ep", name="f")
        assert stat.S_IMODE(old_db.stat().st_mode) == 0o600
        assert stat.S_IMODE(old_db.with_name("jobs.sqlite3-wal").stat().st_mode) == 0o600
        from rpremote.client import local
        with local._start_lock(local.state_dir()):
            pass
        assert stat.S_IMODE((home / "emulator").stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "emulator" / "start.lock").stat().st_mode) == 0o600
        assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # above the data dir: not ours
    finally:
        config.reset()


def test_private_dir_creates_0700_under_any_umask_and_leaves_levels_above_its_top(tmp_path):
    os.chmod(tmp_path, 0o755)
    old = os.umask(0)
    try:
        made = private_dir(tmp_path / "share" / "rpremote" / "emulator" / "logs",
                           top=tmp_path / "share" / "rpremote")
        lock = private_file(made / "x.lock")
        assert [stat.S_IMODE(p.stat().st_mode) for p in
                (tmp_path / "share", made.parent.parent, made.parent, made)] == [0o700] * 4
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        os.chmod(tmp_path / "share", 0o755)  # not rpremote's: left alone
        private_dir(made, top=tmp_path / "share" / "rpremote")
        assert stat.S_IMODE((tmp_path / "share").stat().st_mode) == 0o755
        make_dirs(tmp_path / "share" / "deps" / "x")  # a cache root: made 0700, not tightened
        assert stat.S_IMODE((tmp_path / "share" / "deps").stat().st_mode) == 0o700
        assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_a_directory_of_someone_else_or_a_shared_one_is_refused_with_the_reason(tmp_path):
    theirs = tmp_path / "rpremote-1000"  # as if pre-created in /dev/shm by another user
    theirs.mkdir()
    os.chmod(theirs, 0o777)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(NotPrivateError, match=r"belongs to uid 12345, not to you"):
        private_dir(theirs / "tag", top=theirs)
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o777  # not changed
    assert not (theirs / "tag").exists()

    link = tmp_path / "rpremote-link"  # a symlink planted by another user
    link.symlink_to(tmp_path)
    os.lchown(link, 12345, 12345)
    with pytest.raises(NotPrivateError, match="symbolic link owned by uid 12345"):
        private_dir(link)

    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(NotPrivateError, match="shared directory"):
        private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777

    # The emulator says so and exits, instead of keeping jobs there.
    done = subprocess.run([sys.executable, "-m", "rpremote", "serve", "--port", "0",
                           "--state", str(theirs)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RPREMOTE_HOME": str(tmp_path / "home")})
    assert done.returncode == 2, done.stderr
    assert "belongs to uid 12345, not to you" in done.stderr
