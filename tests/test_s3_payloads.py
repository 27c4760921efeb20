"""Big payloads through an S3 store (issue 14), end to end on the local target.

moto's S3 server on 127.0.0.1 (the ``s3_server`` fixture) stands for the bucket; the workers
are the emulator's real SDK worker processes. Each test has an RPREMOTE_HOME of its own (so an
emulator of its own) and a bucket of its own. The store itself (``rpremote/s3.py``) is tested
on its own in ``test_s3_store.py``; here: the settings, the client's and the workers' wiring,
the CLI, and what must never leak.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from rpremote import config, protocol, remote
from rpremote.client import stores, targets
from rpremote.errors import ConfigError, RemoteError, SignatureError

from conftest import start_s3_server, stop_pid

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@remote(workers=(0, 1), idle_timeout=30)
def negate(a):
    return -a


@remote(workers=(0, 1), idle_timeout=30)
def checksum(a):
    return float(a[::4096].sum())


@remote(workers=(0, 1), idle_timeout=30)
def made_on_the_worker(n, value):
    import numpy as np

    return np.full(n, value)


@remote(workers=(0, 1), idle_timeout=30)
def worker_view(a):
    """What the worker runs with: its pid, its store setting, the store it made, and ``a * 2``."""
    import os

    from rpremote.blobs import store_from_env

    return os.getpid(), os.environ.get("RPREMOTE_STORE"), repr(store_from_env()), a * 2


def _unique(prefix: str = "rpremote") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _key(prefix: str, data) -> str:
    digest = protocol.digest(memoryview(data).cast("B"))
    return f"{prefix}/{digest[:2]}/{digest}"


def _keys(client, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object in ``bucket`` under ``prefix``: key -> size."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
    return out


@pytest.fixture
def s3_env(fresh_home, s3_server, monkeypatch):
    """An RPREMOTE_HOME of this test's own, boto3's settings pointed at moto, a new bucket.
    Nothing sets RPREMOTE_STORE: each test says which store it uses."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RPREMOTE_STORE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(fresh_home.parent / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(fresh_home.parent / "no-aws-credentials"))
    stores.forget()
    bucket = _unique()
    s3_server.client().create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        stores.forget()


def _journal_ids() -> list[str]:
    from rpremote import journal

    return [e.id for e in journal.recent(limit=100)]


def _emulator_jobs(home: Path) -> list[tuple[str, str]]:
    """``(id, input)`` of every job the home's emulator stored (none when it never started)."""
    db = home / "emulator" / "emulator.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, input FROM jobs").fetchall()


# -- settings ---------------------------------------------------------------------------------


def test_store_settings_are_checked_when_given_and_none_means_the_targets_own(monkeypatch):
    monkeypatch.delenv("RPREMOTE_STORE", raising=False)
    config.reset()
    try:
        assert config.store_choice() == (None, "RPREMOTE_STORE")
        with pytest.raises(ConfigError, match=r"configure\(store=\.\.\.\)"):
            config.configure(store="ftp://somewhere")
        config.configure(store="s3://my-bucket/some/prefix")
        location, where = config.store_choice()
        assert (location.scheme, location.bucket, location.prefix) == ("s3", "my-bucket", "some/prefix")
        assert where == "configure(store=...)"
        monkeypatch.setenv("RPREMOTE_STORE", "s3://other-bucket")
        assert config.store_choice()[0].bucket == "my-bucket"  # configure() wins over the env
        config.configure(store="none")  # the target's own, even with RPREMOTE_STORE set
        assert config.store_choice()[0] is None
        config.reset()
        assert config.store_choice()[0].bucket == "other-bucket"
        monkeypatch.setenv("RPREMOTE_STORE", "s3://")
        with pytest.raises(ConfigError, match="RPREMOTE_STORE"):
            config.store_choice()
        from rpremote.notebook.magics import RunpodMagics

        magics = RunpodMagics(shell=None)
        with pytest.raises(ConfigError, match=r"%runpod config store=\.\.\."):
            magics._line_config(["store=s3://a"])
        magics._line_config(["store=s3://notebook-bucket/n"])
        location, where = config.store_choice()
        assert location.bucket == "notebook-bucket" and where == "%runpod config store=..."
        magics._line_config(["store=none"])
        assert config.store_choice()[0] is None
    finally:
        config.reset()


def test_the_worker_picks_its_store_from_its_environment(tmp_path, s3_server):
    from rpremote.blobs import DirectoryStore, HttpStore, UnavailableStore, store_from_env

    emulator = {"RPREMOTE_BLOB_DIR": str(tmp_path), "RPREMOTE_BLOB_URL": "http://127.0.0.1:9/b",
                "RPREMOTE_BLOB_KEY": "k"}
    assert isinstance(store_from_env(emulator), DirectoryStore)
    assert isinstance(store_from_env({**emulator, "RPREMOTE_BLOB_TRANSPORT": "http"}), HttpStore)
    assert isinstance(store_from_env({**emulator, "RPREMOTE_STORE": "none"}), DirectoryStore)
    on_s3 = store_from_env({**emulator, **s3_server.env(), "RPREMOTE_STORE": "s3://b-ucket/p"})
    assert on_s3.kind == "s3" and on_s3.location.bucket == "b-ucket"
    mount = tmp_path / "runpod-volume"
    volume = {**s3_server.env(), "RPREMOTE_STORE": "runpod-volume://abcdef1234/pieces?dc=EU-RO-1",
              "RPREMOTE_VOLUME_MOUNT": str(mount), "RPREMOTE_RUNPOD_S3_ENDPOINT": s3_server.url}
    assert store_from_env(volume).kind == "s3"  # not mounted here: through its S3 API
    mount.mkdir()
    direct = store_from_env(volume)  # mounted: the files, no keys
    assert isinstance(direct, DirectoryStore) and direct.root == mount / "pieces"
    broken = store_from_env({"RPREMOTE_STORE": "s3://"})
    assert isinstance(broken, UnavailableStore)
    with pytest.raises(Exception, match="RPREMOTE_STORE=s3://"):
        broken.get("0" * 64, 1)


def test_import_rpremote_does_not_import_boto3():
    code = ("import sys, rpremote, rpremote.blobs, rpremote.config, rpremote.client.targets, "
            "rpremote.executor.core, rpremote.cli.store, rpremote.cli.endpoints; "
            "rpremote.config.configure(store='s3://a-bucket/p'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the round trips --------------------------------------------------------------------------


def test_a_200_mb_array_goes_out_and_comes_back_through_s3(s3_env, s3_server, monkeypatch):
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/rp")
    a = np.arange(25_000_000, dtype=np.float64)  # 200 MB
    b = negate(a)
    assert b.shape == a.shape and b.dtype == a.dtype
    assert np.array_equal(b, -a)
    keys = _keys(s3_server.client(), s3_env)
    assert keys[_key("rp", a)] == a.nbytes  # the argument, as the client put it
    assert keys[_key("rp", b)] == b.nbytes  # the result, as the worker put it
    assert all(k.startswith("rp/") for k in keys)
    # The emulator's own store was not used.
    emulator = targets.current().emulator
    stats = httpx.get(f"{emulator.url}/rpremote/v1/blobs",
                      headers={"Authorization": f"Bearer {emulator.key}"}).json()
    assert stats["pieces"] == 0, stats


def test_a_repeated_50_mb_argument_is_uploaded_once(s3_env, s3_server, monkeypatch):
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}")
    weights = np.random.default_rng(7).random(50 * 1024 * 1024 // 8)  # 50 MiB
    first = checksum(weights)
    key = _key("", weights).lstrip("/")
    assert _keys(s3_server.client(), s3_env) == {key: weights.nbytes}
    for _ in range(2):  # this process knows the piece is there: not even asked again
        assert checksum(weights) == first
    # As another process would: nothing known yet, the bucket is asked, nothing uploaded.
    targets.forget()
    stores.forget()
    s3_server.record()
    assert checksum(weights) == first
    received = s3_server.requests()
    assert ("HEAD", f"{s3_server.url}/{s3_env}/{key}") in received, received
    assert not [r for r in received if r[0] in ("PUT", "POST")], received
    assert _keys(s3_server.client(), s3_env) == {key: weights.nbytes}


def test_a_result_written_by_the_worker_is_read_by_the_client(s3_env, s3_server, monkeypatch):
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/results")
    value = made_on_the_worker(3 * 1024 * 1024, 2.5)  # 24 MiB made there, nothing sent
    assert value.shape == (3 * 1024 * 1024,) and (value == 2.5).all()
    assert _keys(s3_server.client(), s3_env) == {_key("results", value): value.nbytes}


def test_a_tampered_piece_is_refused_by_its_digest(s3_env, s3_server, monkeypatch):
    """Both ways: an argument the worker reads, a result the client reads."""
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/t")
    client = s3_server.client()
    # An object under the argument's address that is not its content: the client's HEAD
    # finds it (so it is not uploaded), the worker reads it and refuses it.
    a = np.arange(400_000, dtype=np.float64)  # 3.2 MB
    client.put_object(Bucket=s3_env, Key=_key("t", a), Body=bytes(a.nbytes))
    with pytest.raises(SignatureError, match="does not match its signed digest"):
        checksum(a)
    # A result piece changed in the bucket after the worker wrote it.
    job = made_on_the_worker.spawn(300_000, 1.0)
    job.wait(timeout=120)
    expected = _key("t", np.full(300_000, 1.0))
    body = bytearray(client.get_object(Bucket=s3_env, Key=expected)["Body"].read())
    body[100] ^= 1
    client.put_object(Bucket=s3_env, Key=expected, Body=bytes(body))
    with pytest.raises(SignatureError, match="does not match its signed digest"):
        job.result()


# -- wrong settings fail before anything is sent ----------------------------------------------


def _refused_before_sending(home: Path, fn, *args) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        fn(*args)
    assert _journal_ids() == []
    assert _emulator_jobs(home) == []
    emulator = targets.current().emulator
    assert [e for e in emulator.endpoints() if e["id"].startswith("rpremote-")] == []
    return caught.value


@pytest.mark.parametrize("url", ["s3://{missing}/p", "runpod-volume://{volume}/p?dc=EU-RO-1"])
def test_a_missing_bucket_or_volume_is_refused_before_sending(s3_env, s3_server, fresh_home,
                                                              monkeypatch, url):
    missing = _unique("missing")
    url = url.format(missing=missing, volume=uuid.uuid4().hex[:10])
    monkeypatch.setenv("RPREMOTE_RUNPOD_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("RPREMOTE_STORE", url)
    err = _refused_before_sending(fresh_home, checksum, np.ones(300_000))
    assert "RPREMOTE_STORE" in str(err) and url.split("//")[1].split("/")[0] in str(err)
    assert "nothing was sent" in str(err)
    # A fixed setting works in the same process (a failed check is not remembered).
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/p")
    assert checksum(np.ones(300_000)) == 74.0


@pytest.fixture
def s3_with_keys(tmp_path):
    """A moto server of its own that checks credentials (after the first 4 requests, which
    make a user with a key and a policy, and a bucket); yields (server, key id, secret,
    bucket)."""
    server = start_s3_server(tmp_path / "moto-auth.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        import boto3

        anyone = dict(endpoint_url=server.url, region_name="us-east-1",
                      aws_access_key_id="setup", aws_secret_access_key="setup")
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName="rpremote")
        key = iam.create_access_key(UserName="rpremote")["AccessKey"]
        iam.put_user_policy(UserName="rpremote", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        bucket = _unique()
        boto3.client("s3", **anyone).create_bucket(Bucket=bucket)
        yield server, key["AccessKeyId"], key["SecretAccessKey"], bucket
    finally:
        stop_pid(server.pid)


@pytest.mark.parametrize("wrong", ["secret", "key id"])
def test_wrong_credentials_are_refused_before_sending(s3_with_keys, fresh_home, monkeypatch, wrong):
    server, key_id, secret, bucket = s3_with_keys
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000" if wrong == "key id" else key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret" if wrong == "secret" else secret)
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{bucket}/p")
    stores.forget()
    err = _refused_before_sending(fresh_home, checksum, np.ones(300_000))
    text = str(err)
    assert "RPREMOTE_STORE" in text and "credential" in text.lower()
    assert "AWS_ACCESS_KEY_ID" in text or "AWS_SECRET_ACCESS_KEY" in text, text
    assert "not-the-secret" not in text and secret not in text
    # The right ones are taken (the refusal was the credentials' doing).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert checksum(np.ones(300_000)) == 74.0


# -- which workers use which store ------------------------------------------------------------


def test_workers_of_another_store_never_get_the_job(s3_env, s3_server, fresh_home, monkeypatch):
    """The store is part of the endpoint's identity: configuring one (or going back to none)
    moves to other endpoints and workers, and the emulator's own environment (inherited from
    whoever started it) never decides a worker's store."""
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/w")  # the emulator inherits this
    a = np.arange(300_000, dtype=np.float64)
    pid_s3, seen, store, doubled = worker_view(a)
    assert seen == f"s3://{s3_env}/w" and "S3Store" in store
    assert np.array_equal(doubled, a * 2)
    assert _key("w", a) in _keys(s3_server.client(), s3_env)
    config.configure(store="none")
    pid_own, seen, store, doubled = worker_view(a)
    assert pid_own != pid_s3 and seen is None and "DirectoryStore" in store
    assert np.array_equal(doubled, a * 2)
    endpoints = {e["id"]: e for e in targets.current().emulator.endpoints()}
    assert len(endpoints) == 2
    own = next(i for i, e in endpoints.items() if "RPREMOTE_STORE" not in e["env"])
    on_s3 = next(i for i in endpoints if i != own)
    # An endpoint named with endpoint= must use this process's store.
    with pytest.raises(ConfigError, match="offload store"):
        remote(endpoint=on_s3)(checksum.fn)(a)
    assert remote(endpoint=own)(checksum.fn)(a) == checksum.fn(a)
    config.configure(store=f"s3://{s3_env}/w")
    assert worker_view(a)[0] == pid_s3  # back on the S3 endpoint's warm worker


# -- the sweep --------------------------------------------------------------------------------


def _piece_name(prefix: str, seed: int) -> str:
    digest = protocol.digest(seed.to_bytes(8, "big"))
    return f"{prefix}{digest[:2]}/{digest}"


def _rpremote(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpremote", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_the_sweep_removes_old_pieces_and_only_under_the_prefix(s3_env, s3_server):
    client = s3_server.client()
    old = [_piece_name("rp/", i) for i in range(3)]
    for name in old:
        client.put_object(Bucket=s3_env, Key=name, Body=b"o" * 1000)
    outside = [_piece_name("", 10), _piece_name("other/", 11), _piece_name("rp-other/", 12),
               _piece_name("r/", 13)]
    not_pieces = ["rp/notes.txt", "rp/ab/not-a-digest", "rp/" + "0" * 64]
    for name in outside + not_pieces:
        client.put_object(Bucket=s3_env, Key=name, Body=b"x" * 10)
    # Ages are whole seconds on the server's clock (its Date header): margins of 2 s.
    time.sleep(8)
    new = _piece_name("rp/", 20)
    client.put_object(Bucket=s3_env, Key=new, Body=b"n" * 10)
    url = f"s3://{s3_env}/rp"

    dry = _rpremote("store", "sweep", "--older-than", "6s", "--dry-run", "--store", url)
    assert dry.returncode == 0, dry.stderr
    assert "would remove 3 pieces" in dry.stdout and url in dry.stdout
    assert len(_keys(client, s3_env)) == len(old + outside + not_pieces) + 1

    client.put_object(Bucket=s3_env, Key=new, Body=b"n" * 10)  # young again, however slow
    done = _rpremote("store", "sweep", "--older-than", "6s", "--store", url)
    assert done.returncode == 0, done.stderr
    assert "removed 3 pieces (2.9 KiB)" in done.stdout and url in done.stdout
    assert sorted(_keys(client, s3_env)) == sorted(outside + not_pieces + [new])
    for secret in ("rpremote-test-secret", "rpremote-test-key"):
        assert secret not in dry.stdout + dry.stderr + done.stdout + done.stderr


def test_store_info_says_where_it_is_and_whether_it_answers(s3_env, s3_server):
    ok = _rpremote("store", "info", env={"RPREMOTE_STORE": f"s3://{s3_env}/p"})
    assert ok.returncode == 0, ok.stderr
    assert s3_env in ok.stdout and "answers: yes" in ok.stdout
    assert "AWS_ACCESS_KEY_ID" in ok.stdout  # where the credentials come from, not what
    assert "rpremote-test-secret" not in ok.stdout + ok.stderr
    missing = _rpremote("store", "info", "--store", "s3://no-such-bucket-here/p")
    assert missing.returncode == 1 and "no-such-bucket-here" in missing.stderr
    unset = _rpremote("store", "sweep", env={"RPREMOTE_STORE": ""})
    assert unset.returncode == 1 and "no offload store is configured" in unset.stderr
    bad_age = _rpremote("store", "sweep", "--older-than", "a week", "--store", f"s3://{s3_env}")
    assert bad_age.returncode == 1 and "--older-than" in bad_age.stderr and "7d" in bad_age.stderr


def test_the_client_sweeps_now_and_then(s3_env, s3_server, fresh_home, monkeypatch, capsys):
    client = s3_server.client()
    old = _piece_name("auto/", 1)
    client.put_object(Bucket=s3_env, Key=old, Body=b"o" * 100)
    time.sleep(4)  # ages are whole seconds on the server's clock
    monkeypatch.setattr(stores, "AUTO_SWEEP_OLDER_THAN_S", 2.0)
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/auto")
    assert checksum(np.ones(300_000)) == 74.0  # the first use of the store starts a sweep
    stamp = stores.stamp_path(f"s3://{s3_env}/auto")
    assert stamp.exists() and stat.S_IMODE(stamp.stat().st_mode) == 0o600
    from conftest import wait_for

    wait_for(lambda: old not in _keys(client, s3_env), timeout=30, what="the background sweep")
    store = stores.configured()
    assert stores.maybe_sweep(store) is None  # not again within a day (any process)
    assert stores.maybe_sweep(store, now=time.time() + 25 * 3600) is not None
    # A failing sweep is one line on stderr, never an error.
    class Failing:
        location = store.location

        def sweep(self, *a, **kw):
            raise OSError("the bucket went away")

    thread = stores.maybe_sweep(Failing(), now=time.time() + 50 * 3600)
    thread.join(10)
    err = capsys.readouterr().err
    assert "sweeping old pieces" in err and "the bucket went away" in err


# -- a RunPod network volume, mounted on the worker --------------------------------------------


def test_a_worker_reads_and_writes_a_mounted_volume_directly(s3_env, s3_server, tmp_path,
                                                              monkeypatch):
    """``runpod-volume://VOLUME/PREFIX``: the client speaks S3 (moto, through
    ``RPREMOTE_RUNPOD_S3_ENDPOINT``, the bucket named by the volume id); the worker has the
    volume mounted (a directory, through ``RPREMOTE_VOLUME_MOUNT``) and uses the files.

    On RunPod the volume's S3 API and its mount are one storage. Here they are two (moto keeps
    objects in memory), so the test joins them where the client touches the store: what the
    client puts in the bucket is also written into the directory (as the volume would show
    it), and a piece the client reads that is in the directory but not in the bucket is copied
    into the bucket first.

    What this proves: the worker, given the mount, reads the client's pieces from
    ``<mount>/<prefix>/<digest[:2]>/<digest>`` and writes its result there (it never asks S3:
    no GET of the argument reaches the server, and the result is not in the bucket until the
    bridge copies it from the directory); the key layout is the same on both sides, so a piece
    put through S3 is found by its path and the other way round; digests are checked on both
    ends. What it does not prove: that RunPod's S3 API and the mount agree (timing, consistency
    of a just-written file), nor anything about a real network filesystem's speed.
    """
    from rpremote import s3

    volume = uuid.uuid4().hex[:10]
    s3_server.client().create_bucket(Bucket=volume)
    mount = tmp_path / "runpod-volume"
    mount.mkdir()
    monkeypatch.setenv("RPREMOTE_RUNPOD_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("RPREMOTE_STORE", f"runpod-volume://{volume}/rp?dc=EU-RO-1")
    on_volume = mount / "rp"
    copied_from_volume = []
    put, get = s3.S3Store.put, s3.S3Store.get

    def put_on_both(self, key, data):
        put(self, key, data)
        path = on_volume / key[:2] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(memoryview(data).cast("B"))

    def get_from_either(self, key, size):
        path = on_volume / key[:2] / key
        if path.exists() and not self.has(key):
            put(self, key, path.read_bytes())
            copied_from_volume.append(key)
        return get(self, key, size)

    monkeypatch.setattr(s3.S3Store, "put", put_on_both)
    monkeypatch.setattr(s3.S3Store, "get", get_from_either)
    on_mount = remote(workers=(0, 1), idle_timeout=30,
                      env={"RPREMOTE_VOLUME_MOUNT": str(mount)})(worker_view.fn)
    a = np.arange(300_000, dtype=np.float64)  # 2.4 MB: by reference
    on_mount(np.zeros(3))  # the worker is up, and the store checked
    arg_key, result_key = _key("rp", a), _key("rp", a * 2)
    s3_server.record()
    _, seen, store, doubled = on_mount(a)
    received = s3_server.requests()
    assert seen == f"runpod-volume://{volume}/rp?dc=EU-RO-1"
    assert store == f"DirectoryStore({str(on_volume)!r})"
    assert np.array_equal(doubled, a * 2)
    assert ("PUT", f"{s3_server.url}/{volume}/{arg_key}") in received  # the client's upload
    assert not [r for r in received if r[0] == "GET" and r[1].endswith(arg_key)], received
    assert copied_from_volume == [result_key.split("/")[-1]]  # the worker wrote it there only
    written = mount / result_key
    assert written.read_bytes() == (a * 2).tobytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert result_key in _keys(s3_server.client(), volume)


# -- credentials never appear -----------------------------------------------------------------


FAKE_KEY_ID = "AKIARPREMOTEFAKE7Q2Z"
FAKE_SECRET = "rpremote-FAKE-secret-never-shown-9c41"


def test_credentials_never_appear_outside_the_workers_environment(s3_env, s3_server, fresh_home,
                                                                  monkeypatch, capsys):
    """Where they live: the emulator's endpoint spec (its SQLite, 0600), which it hands to the
    workers as their environment. Nowhere else: not in job inputs, the journal, logs, the
    CLI's output, ``%runpod config``. The emulator is started before the keys are set, so the
    workers can only have them from the endpoint's spec (and the call works: they did)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    emulator = targets.current().emulator  # started without any keys in its environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("RPREMOTE_STORE", f"s3://{s3_env}/c")
    a = np.arange(300_000, dtype=np.float64)
    assert np.array_equal(negate(a), -a)
    assert np.array_equal(made_on_the_worker(300_000, 3.0), np.full(300_000, 3.0))

    from rpremote.notebook.magics import RunpodMagics

    RunpodMagics(shell=None)._line_config([])
    shown = capsys.readouterr()
    assert f"s3://{s3_env}/c" in shown.out and "credentials from $AWS_ACCESS_KEY_ID" in shown.out
    outputs = {"%runpod config": shown.out + shown.err}
    for args in (["endpoints"], ["endpoints", "--json"], ["jobs", "--json"], ["store", "info"]):
        done = _rpremote(*args)
        assert done.returncode == 0, done.stderr
        outputs[" ".join(args)] = done.stdout + done.stderr
    assert f"s3://{s3_env}/c" in outputs["endpoints"]
    for where, text in outputs.items():
        for secret in (FAKE_KEY_ID, FAKE_SECRET):
            assert secret not in text, where
    inputs = _emulator_jobs(fresh_home)
    assert len(inputs) == 2
    files = [p for p in fresh_home.rglob("*") if p.is_file() and "emulator.sqlite3" not in p.name]
    assert any(p.name == "jobs.sqlite3" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (FAKE_KEY_ID, FAKE_SECRET):
            assert secret.encode() not in data, path
    with sqlite3.connect(fresh_home / "emulator" / "emulator.sqlite3") as conn:
        for table, column in (("jobs", "input"), ("jobs", "output"), ("chunks", "data")):
            for (value,) in conn.execute(f"SELECT {column} FROM {table}"):
                assert FAKE_SECRET not in (value or "") and FAKE_KEY_ID not in (value or "")
        specs = [json.loads(s) for (s,) in conn.execute("SELECT spec FROM endpoints")]
    assert [s["env"]["AWS_SECRET_ACCESS_KEY"] for s in specs] == [FAKE_SECRET]
    assert stat.S_IMODE((fresh_home / "emulator" / "emulator.sqlite3").stat().st_mode) == 0o600
    assert all(json.dumps(e).find(FAKE_SECRET) < 0 for e in emulator.endpoints())
