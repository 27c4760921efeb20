"""The S3 offload store (rpremote/s3.py) against a real S3 server: moto's, on 127.0.0.1.

What moto checks and what it does not: by default it accepts any keys, so wrong keys are
tested on a second moto server with IAM authentication on (INITIAL_NO_AUTH_ACTION_COUNT),
which refuses unknown access key ids (InvalidAccessKeyId) and bad signatures
(SignatureDoesNotMatch) as AWS does. It does not enforce RunPod's limits (500 MB PUT, no
DeleteObjects): the store is written not to need them.

Throughput (this machine: 2 shared cores; loopback TCP itself ~1.1 GB/s in one Python
stream), MiB/s put / get:

                                          64 MiB        256 MiB
  moto, plain put_object/get_object       167 / 649     146 / 661
  moto, S3Store one request each          209 / 646     235 / 691
  moto, S3Store defaults (8|16 MiB x 8)   145 / 166     125 / 95
  minimal in-memory S3, plain boto3       538 / 1484    580 / 1241
  minimal in-memory S3, S3Store one req   844 / 1068    1183 / 1096
  minimal S3, 40 MB/s per connection:
    plain boto3 / S3Store one request     36 / 38       36 / 38
    S3Store defaults (parallel parts)     169 / 236     225 / 245

On loopback the parts cost more than they bring: moto is one Python process that copies every
part again to complete an upload and reads the whole object for each ranged GET. Over a real
network one stream carries tens of MB/s, and parallel parts are what makes a piece fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from rpremote import platform, protocol
from rpremote.blobs import DirectoryStore, OffloadError, Shipper
from rpremote.errors import ConfigError, SignatureError
from rpremote.s3 import MiB, S3Store, StoreLocation, age_seconds, parse_store

from conftest import start_s3_server, stop_pid

pytest.importorskip("boto3")
pytest.importorskip("moto")

# Recognisable fake secrets: they must never show in a message, a repr or a description.
FAKE_KEY_ID = "AKIAFAKEKEYID7Q3ZZ"
FAKE_SECRET = "fake-secret-9f8e7d6c5b4a"
RUNPOD_KEY_ID = "user_2fakeUserIdQ9"
RUNPOD_SECRET = "rps_fakeSecretValue8x7y6z"
SECRETS = (FAKE_KEY_ID, FAKE_SECRET, RUNPOD_KEY_ID, RUNPOD_SECRET)


def unique(stem: str = "rp") -> str:
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def make_store(s3_server, prefix: str = "pieces", bucket: str | None = None, env=None, **kw):
    bucket = bucket or unique()
    s3_server.client().create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return S3Store(parse_store(url), {**s3_server.env(), **(env or {})}, **kw)


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret shows in: {text}"


def quiet_env(tmp_path) -> dict[str, str]:
    """No credentials anywhere: empty AWS files, no metadata service."""
    return {"AWS_CONFIG_FILE": str(tmp_path / "none-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none-credentials")}


# -- parse_store --------------------------------------------------------------------------------


@pytest.mark.parametrize("url, scheme, bucket, prefix, dc, canonical", [
    ("s3://bkt", "s3", "bkt", "", None, "s3://bkt"),
    ("s3://bkt/", "s3", "bkt", "", None, "s3://bkt"),
    ("  s3://my.bucket-1/a/b/  ", "s3", "my.bucket-1", "a/b", None, "s3://my.bucket-1/a/b"),
    ("S3://Legacy_Bucket/x", "s3", "Legacy_Bucket", "x", None, "s3://Legacy_Bucket/x"),
    ("runpod-volume://agv6w2qcg7?dc=EU-RO-1", "runpod-volume", "agv6w2qcg7", "", "EU-RO-1",
     "runpod-volume://agv6w2qcg7?dc=EU-RO-1"),
    ("runpod-volume://agv6w2qcg7/rpremote/pieces?dc=eur-is-1", "runpod-volume", "agv6w2qcg7",
     "rpremote/pieces", "EUR-IS-1", "runpod-volume://agv6w2qcg7/rpremote/pieces?dc=EUR-IS-1"),
])
def test_parse_store_good(url, scheme, bucket, prefix, dc, canonical):
    location = parse_store(url)
    assert location == StoreLocation(scheme, bucket, prefix, dc)
    assert location.url() == canonical == str(location)
    assert parse_store(location.url()) == location  # the canonical form reads back the same


@pytest.mark.parametrize("url, says", [
    ("", "no scheme"),
    ("bkt/prefix", "no scheme"),
    ("gs://bkt", "unknown scheme 'gs'"),
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("s3://b", "not a valid bucket name"),
    ("s3://bad bucket", "not a valid bucket name"),
    ("s3://-bkt", "not a valid bucket name"),
    ("s3://a..b", "not a valid bucket name"),
    ("s3://bkt:9000/x", "a port belongs to the endpoint"),
    ("s3://bkt/a//b", "prefix"),
    ("s3://bkt/a/../b", "prefix"),
    ("s3://bkt/a b", "prefix"),
    ("s3://bkt/x#frag", "fragment"),
    ("s3://bkt?region=us-east-1", "unknown setting region"),
    ("runpod-volume://agv6w2qcg7", "needs its data center"),
    ("runpod-volume://agv6w2qcg7?dc=", "needs its data center"),
    ("runpod-volume://agv6w2qcg7?dc=MARS-1", "no S3 API in data center 'MARS-1'"),
    ("runpod-volume://agv6w2qcg7?dc=EU-RO-1&dc=EU-RO-1", "given twice"),
    ("runpod-volume://agv6w2qcg7?dc=EU-RO-1&size=10", "unknown setting size"),
    ("runpod-volume://vol.with.dots?dc=EU-RO-1", "not a network volume id"),
])
def test_parse_store_bad(url, says):
    with pytest.raises(ConfigError) as e:
        parse_store(url)
    assert str(e.value).startswith("RPREMOTE_STORE=") and says in str(e.value)
    with pytest.raises(ConfigError, match=r"^store_url="):
        parse_store(url, setting="store_url")  # the setting the user wrote is the one named


def test_parse_store_keeps_credentials_out_of_its_message():
    for url in (f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@bkt/p",
                f"runpod-volume://{RUNPOD_KEY_ID}:{RUNPOD_SECRET}@agv6w2qcg7?dc=EU-RO-1"):
        with pytest.raises(ConfigError, match="credentials do not go in RPREMOTE_STORE") as e:
            parse_store(url)
        no_secret_in(str(e.value))


def test_every_data_center_has_an_endpoint_and_a_region():
    for dc in platform.S3_API_DATA_CENTERS:
        store = S3Store(parse_store(f"runpod-volume://agv6w2qcg7?dc={dc}"),
                        {"RUNPOD_S3_ACCESS_KEY_ID": RUNPOD_KEY_ID,
                         "RUNPOD_S3_SECRET_ACCESS_KEY": RUNPOD_SECRET})
        assert store.endpoint == f"https://s3api-{dc.lower()}.runpod.io/"
        assert store.region == dc


def test_age_seconds():
    assert age_seconds("7d") == 7 * 86400 and age_seconds("12h") == 43200
    assert age_seconds("90") == 90 and age_seconds("1.5m") == 90 and age_seconds("2w") == 14 * 86400
    with pytest.raises(ConfigError, match="not a duration"):
        age_seconds("soon")


# -- import weight ------------------------------------------------------------------------------


def test_boto_is_imported_only_by_a_store():
    code = ("import sys, rpremote, rpremote.blobs, rpremote.s3; "
            "loc = rpremote.s3.parse_store('s3://bkt/p'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', "
            "'s3transfer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    timed = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rpremote"],
                           capture_output=True, text=True, check=True)
    assert "boto" not in timed.stderr


# -- put, has, get ------------------------------------------------------------------------------


def test_round_trip_and_key_layout(s3_server, tmp_path):
    store = make_store(s3_server, prefix="team/pieces")
    data = os.urandom(3 * MiB)
    key = protocol.digest(data)
    assert not store.has(key)
    store.put(key, memoryview(data))
    assert store.has(key)
    got = store.get(key, len(data))
    assert isinstance(got, bytearray) and got == data
    got[0] ^= 0xFF  # writable, and the caller's own copy
    assert store.get(key, len(data)) == data
    assert (store.uploads, store.uploaded_bytes) == (1, len(data))

    # The same key as DirectoryStore's file below the prefix: a mounted volume reads it.
    local = DirectoryStore(tmp_path / "mount" / "team" / "pieces")
    relative = local._path(key).relative_to(tmp_path / "mount").as_posix()
    assert store.location.key(key) == relative == f"team/pieces/{key[:2]}/{key}"
    head = s3_server.client().head_object(Bucket=store.location.bucket, Key=relative)
    assert head["ContentLength"] == len(data)

    with pytest.raises(OffloadError, match="not a content address"):
        store.has("../../etc/passwd")


def test_an_mmap_goes_up_without_a_copy(s3_server, tmp_path):
    import mmap

    path = tmp_path / "piece"
    path.write_bytes(os.urandom(2 * MiB))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        store = make_store(s3_server)
        key = protocol.digest(mapped)
        store.put(key, mapped)
        assert store.get(key, len(mapped)) == path.read_bytes()


def test_a_piece_already_there_is_not_sent_again(s3_server):
    store = make_store(s3_server)
    raw = os.urandom(2 * MiB)
    envelope = {"args": protocol.encode_blob(raw)}
    assert Shipper(store).ship(envelope) == len(raw)

    again = {"args": protocol.encode_blob(raw)}
    s3_server.record()
    assert Shipper(store).ship(again) == 0  # a new client: it asks the store, once
    requests = s3_server.requests()
    assert [method for method, _ in requests] == ["HEAD"]
    assert requests[0][1].endswith(store.location.key(protocol.digest(raw)))
    assert store.uploads == 1


def test_has_refreshes_an_old_piece_so_sweep_keeps_it(s3_server):
    store = make_store(s3_server)
    data = os.urandom(MiB)
    key = protocol.digest(data)
    store.put(key, data)
    client, bucket, name = s3_server.client(), store.location.bucket, store.location.key(key)
    before = client.head_object(Bucket=bucket, Key=name)["LastModified"]
    time.sleep(2.1)  # LastModified counts whole seconds

    s3_server.record()
    assert store.has(key)  # younger than a day: only looked at
    assert [m for m, _ in s3_server.requests()] == ["HEAD"]
    assert client.head_object(Bucket=bucket, Key=name)["LastModified"] == before

    ageing = S3Store(store.location, s3_server.env(), refresh_age_s=1)
    s3_server.record()
    assert ageing.has(key)  # older than its refresh age: rewritten in place, not uploaded
    ageing.settle(30)
    assert [m for m, _ in s3_server.requests()] == ["HEAD", "PUT"]
    assert client.head_object(Bucket=bucket, Key=name)["LastModified"] > before
    assert ageing.uploads == 0 and store.get(key, len(data)) == data
    assert store.sweep(1.5) == (0, 0)  # just refreshed: kept


def test_big_piece_multipart_up_and_ranged_parallel_down(s3_server):
    store = make_store(s3_server)
    data = bytearray(os.urandom(MiB)) * 100
    key = protocol.digest(data)
    ranges, threads = [], set()

    def seen(params, **_):
        ranges.append(params.get("Range"))
        threads.add(threading.current_thread().name)

    store._client.meta.events.register("provide-client-params.s3.GetObject", seen)
    store.put(key, data)
    head = s3_server.client().head_object(Bucket=store.location.bucket,
                                          Key=store.location.key(key))
    parts = int(head["ETag"].strip('"').rpartition("-")[2])  # a multipart ETag ends "-<parts>"
    assert parts == 13  # 100 MiB in 8 MiB parts (about two per thread, at least 8 MiB)

    got = store.get(key, len(data))
    assert got == data
    assert len(ranges) == 13 and all(r and r.startswith("bytes=") for r in ranges)
    assert len(threads) > 1
    blob = protocol.encode_blob(data)
    assert blob["b3"] == key and protocol.decode_parts(blob, store.get)[0] == data


def test_multipart_on_a_smaller_threshold_is_seen_by_the_server(s3_server):
    # One thread: moto's recorder writes concurrent big requests into each other's lines.
    store = make_store(s3_server, part_size=5 * MiB, multipart_threshold=6 * MiB,
                       ranged_threshold=6 * MiB, threads=1)
    data = os.urandom(12 * MiB)
    key = protocol.digest(data)
    s3_server.record()
    store.put(key, data)
    calls = s3_server.requests()
    name = store.location.key(key)
    assert [(m, u.split(name, 1)[1]) for m, u in calls if name in u][:1] == [("POST", "?uploads")]
    assert sum(1 for m, u in calls if m == "PUT" and "partNumber=" in u) == 3  # 5 + 5 + 2 MiB
    assert sum(1 for m, u in calls if m == "POST" and "uploadId=" in u) == 1
    assert not [u for m, u in calls if m == "PUT" and "partNumber=" not in u]  # no plain PUT
    assert store.get(key, len(data)) == data


def test_a_failed_part_aborts_the_upload(s3_server):
    store = make_store(s3_server, part_size=5 * MiB, multipart_threshold=6 * MiB, threads=2)
    real = store._client.upload_part
    count = []

    def flaky(**kw):
        count.append(1)
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("the network went away")
        return real(**kw)

    store._client.upload_part = flaky
    data = os.urandom(12 * MiB)
    with pytest.raises(OffloadError, match="could not store a 12,582,912-byte piece"):
        store.put(protocol.digest(data), data)
    uploads = s3_server.client().list_multipart_uploads(Bucket=store.location.bucket)
    assert not uploads.get("Uploads")
    assert store.uploads == 0


def test_a_missing_piece_says_so(s3_server):
    store = make_store(s3_server)
    key = protocol.digest(b"never stored")
    with pytest.raises(OffloadError, match=r"is not in the offload store s3://.*swept"):
        store.get(key, 12)
    big = S3Store(store.location, s3_server.env(), ranged_threshold=1)
    with pytest.raises(OffloadError, match="is not in the offload store"):
        big.get(key, 20 * MiB)


def test_a_tampered_piece_is_refused(s3_server):
    store = make_store(s3_server)
    raw = os.urandom(2 * MiB)
    blob = protocol.encode_blob(raw)
    assert blob.get("ref") == 1
    Shipper(store).ship({"v": blob})
    assert protocol.decode_parts(blob, store.get)[0] == raw

    client, bucket, name = s3_server.client(), store.location.bucket, store.location.key(blob["b3"])
    changed = bytearray(raw)
    changed[MiB] ^= 1
    client.put_object(Bucket=bucket, Key=name, Body=bytes(changed))  # same size, other bytes
    with pytest.raises(SignatureError, match="does not match its signed digest"):
        protocol.decode_parts(blob, store.get)

    client.put_object(Bucket=bucket, Key=name, Body=raw + b"x")  # another size
    with pytest.raises(OffloadError, match="it was changed"):
        store.get(blob["b3"], blob["size"])
    ranged = S3Store(store.location, s3_server.env(), ranged_threshold=1, part_size=5 * MiB)
    client.put_object(Bucket=bucket, Key=name, Body=raw[:-1])
    with pytest.raises(OffloadError, match="it was changed"):
        ranged.get(blob["b3"], blob["size"])


# -- check --------------------------------------------------------------------------------------


def test_check_passes_with_two_cheap_requests(s3_server):
    store = make_store(s3_server)
    s3_server.record()
    store.check()
    assert [m for m, _ in s3_server.requests()] == ["HEAD", "HEAD"]


def test_check_names_a_missing_bucket(s3_server):
    env = {**s3_server.env(), "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    store = S3Store(parse_store(f"s3://{unique('missing')}/p"), env)
    with pytest.raises(ConfigError, match=r"no bucket 'missing-\w+' at http://127.0.0.1:\d+ "
                                          r"\(endpoint from \$AWS_ENDPOINT_URL_S3\): fix the "
                                          r"bucket in RPREMOTE_STORE") as e:
        store.check()
    no_secret_in(str(e.value), repr(store), store.describe())


def test_check_names_an_endpoint_that_does_not_answer():
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed_port()}",
           "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    store = S3Store(parse_store("s3://bkt/p"), env)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot reach the S3 endpoint http://127.0.0.1:\d+ "
                                          r"\(from \$AWS_ENDPOINT_URL_S3\).*fix "
                                          r"AWS_ENDPOINT_URL_S3$") as e:
        store.check()
    assert time.monotonic() - started < 15  # two tries, not RunPod's ten
    no_secret_in(str(e.value))
    with pytest.raises(OffloadError, match="could not store") as e2:
        S3Store(store.location, {**env, "AWS_MAX_ATTEMPTS": "1"}).put(
            protocol.digest(b"x"), b"x")
    no_secret_in(str(e2.value))


def test_check_without_credentials_says_how_to_set_them(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    env = {"AWS_ENDPOINT_URL_S3": s3_server.url, **quiet_env(tmp_path)}
    store = S3Store(parse_store("s3://bkt/p"), env)
    assert "at first use" in store.describe() and store.credential_env() == {}
    with pytest.raises(ConfigError, match="no credentials for the offload store s3://bkt/p: set "
                                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        store.check()
    volume = S3Store(parse_store("runpod-volume://agv6w2qcg7?dc=EU-RO-1"),
                     {**env, "RPREMOTE_RUNPOD_S3_ENDPOINT": s3_server.url})
    with pytest.raises(ConfigError, match="set RUNPOD_S3_ACCESS_KEY_ID and "
                                          "RUNPOD_S3_SECRET_ACCESS_KEY: RunPod S3 API keys"):
        volume.check()


def test_half_a_key_pair_is_refused_at_once():
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY "
                                          "is not") as e:
        S3Store(parse_store("s3://bkt"), {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID})
    with pytest.raises(ConfigError, match="RUNPOD_S3_SECRET_ACCESS_KEY is set but "
                                          "RUNPOD_S3_ACCESS_KEY_ID is not") as e2:
        S3Store(parse_store("runpod-volume://agv6w2qcg7?dc=EU-RO-1"),
                {"RUNPOD_S3_SECRET_ACCESS_KEY": RUNPOD_SECRET})
    no_secret_in(str(e.value), str(e2.value))


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A second moto server that checks credentials (IAM authentication on after the first
    four requests, which make a user, its key, its policy and a bucket)."""
    import boto3

    server = start_s3_server(tmp_path_factory.mktemp("s3auth") / "moto.log",
                             env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="rpremote")
        key = iam.create_access_key(UserName="rpremote")["AccessKey"]
        iam.put_user_policy(UserName="rpremote", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        server.client().create_bucket(Bucket="authed")
        server.keys = (key["AccessKeyId"], key["SecretAccessKey"])  # type: ignore[attr-defined]
        yield server
    finally:
        stop_pid(server.pid)


def test_wrong_keys_name_their_source(auth_server):
    key_id, secret = auth_server.keys
    base = {"AWS_ENDPOINT_URL_S3": auth_server.url, "AWS_REGION": "us-east-1"}
    good = S3Store(parse_store("s3://authed/p"),
                   {**base, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
    good.check()
    data = os.urandom(MiB)
    good.put(protocol.digest(data), data)  # signatures with unsigned payloads are accepted
    assert good.get(protocol.digest(data), MiB) == data

    unknown = S3Store(parse_store("s3://authed/p"), {**base, "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
                                                     "AWS_SECRET_ACCESS_KEY": FAKE_SECRET})
    with pytest.raises(ConfigError, match=r"refused the credentials from \$AWS_ACCESS_KEY_ID "
                                          r"\(InvalidAccessKeyId: the access key id is not "
                                          r"known there\); set AWS_ACCESS_KEY_ID") as e:
        unknown.check()
    bad_secret = S3Store(parse_store("s3://authed/p"), {**base, "AWS_ACCESS_KEY_ID": key_id,
                                                        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET})
    with pytest.raises(ConfigError, match=r"\(SignatureDoesNotMatch: the secret key does not "
                                          r"match the access key id\)") as e2:
        bad_secret.check()
    with pytest.raises(OffloadError, match="could not look for piece") as e3:
        unknown.has(protocol.digest(data))

    volume = S3Store(parse_store("runpod-volume://authed?dc=US-KS-2"),
                     {"RPREMOTE_RUNPOD_S3_ENDPOINT": auth_server.url,
                      "RUNPOD_S3_ACCESS_KEY_ID": RUNPOD_KEY_ID,
                      "RUNPOD_S3_SECRET_ACCESS_KEY": RUNPOD_SECRET})
    with pytest.raises(ConfigError, match=r"refused the credentials from "
                                          r"\$RUNPOD_S3_ACCESS_KEY_ID .*RunPod S3 API keys .*not "
                                          r"the RunPod API key") as e4:
        volume.check()
    no_secret_in(*(str(x.value) for x in (e, e2, e3, e4)), repr(unknown), unknown.describe(),
                 volume.describe(), repr(volume))


# -- sweep --------------------------------------------------------------------------------------


def test_sweep_takes_old_pieces_under_the_prefix_and_nothing_else(s3_server):
    store = make_store(s3_server, prefix="rp")
    client, bucket = s3_server.client(), store.location.bucket
    old = [os.urandom(1000 + i) for i in range(3)]
    for data in old:
        store.put(protocol.digest(data), data)
    d = protocol.digest(b"bystander")
    bystanders = [
        f"other/{d[:2]}/{d}",          # a piece's name outside the prefix
        f"rp2/{d[:2]}/{d}",            # a sibling prefix that starts the same
        f"{d[:2]}/{d}",                # the bucket's root
        "rp/notes.txt",                # not a piece's name, under the prefix
        f"rp/{d[:2]}/{d}.tmp",
        f"rp/zz/{d}",
        f"rp/{d[2:4]}/{d}" if d[2:4] != d[:2] else f"rp/00/{d}",  # directory does not match
        f"rp/sub/{d[:2]}/{d}",         # deeper
        f"rp/{d[:2]}/{d.upper()}",
    ]
    for name in bystanders:
        client.put_object(Bucket=bucket, Key=name, Body=b"keep me")
    stale = client.create_multipart_upload(Bucket=bucket, Key=store.location.key(d))["UploadId"]
    foreign = client.create_multipart_upload(Bucket=bucket, Key=f"other/{d[:2]}/{d}")["UploadId"]
    time.sleep(2.1)
    fresh = os.urandom(500)
    store.put(protocol.digest(fresh), fresh)

    assert store.sweep(1.0, dry_run=True) == (3, sum(map(len, old)))
    assert store.last_sweep_aborted_uploads == 1
    assert all(store.has(protocol.digest(x)) for x in old)  # a dry run removes nothing
    assert store.sweep(1.0) == (3, sum(map(len, old)))
    assert not any(store.has(protocol.digest(x)) for x in old)
    assert store.has(protocol.digest(fresh))
    left = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert left == set(bystanders) | {store.location.key(protocol.digest(fresh))}
    listed = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    uploads = {u["UploadId"] for u in listed}
    assert stale not in uploads and foreign in uploads
    assert store.sweep(1.0) == (0, 0)


def test_sweep_without_a_prefix_keeps_everything_that_is_not_a_piece(s3_server):
    store = make_store(s3_server, prefix="")
    client, bucket = s3_server.client(), store.location.bucket
    data = os.urandom(100)
    key = protocol.digest(data)
    store.put(key, data)
    assert store.location.key(key) == f"{key[:2]}/{key}"
    client.put_object(Bucket=bucket, Key=f"models/{key[:2]}/{key}", Body=b"keep")
    client.put_object(Bucket=bucket, Key="README", Body=b"keep")
    time.sleep(1.1)
    s3_server.record()
    assert store.sweep(0) == (1, 100)
    assert [m for m, _ in s3_server.requests()].count("DELETE") == 1  # DeleteObject, one each
    left = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert left == {f"models/{key[:2]}/{key}", "README"}


# -- RunPod network volumes ---------------------------------------------------------------------


def test_runpod_volume_through_its_s3_api(s3_server):
    volume_id = uuid.uuid4().hex[:10]  # like agv6w2qcg7
    s3_server.client().create_bucket(Bucket=volume_id)
    env = {"RPREMOTE_RUNPOD_S3_ENDPOINT": s3_server.url,
           "RUNPOD_S3_ACCESS_KEY_ID": RUNPOD_KEY_ID, "RUNPOD_S3_SECRET_ACCESS_KEY": RUNPOD_SECRET,
           # AWS keys of the user's own: the volume's keys win, and they are left alone
           "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    store = S3Store(parse_store(f"runpod-volume://{volume_id}/rpremote?dc=EU-RO-1"), env)
    assert store.endpoint == s3_server.url and store.region == "EU-RO-1"
    assert store.describe() == (f"runpod-volume://{volume_id}/rpremote?dc=EU-RO-1 at "
                                f"{s3_server.url} (region EU-RO-1), credentials from "
                                "$RUNPOD_S3_ACCESS_KEY_ID")
    store.check()
    data = os.urandom(2 * MiB)
    key = protocol.digest(data)
    store.put(key, data)
    assert store.has(key) and store.get(key, len(data)) == data
    assert s3_server.client().head_object(Bucket=volume_id, Key=f"rpremote/{key[:2]}/{key}")

    assert store.worker_env() == {
        "RPREMOTE_STORE": f"runpod-volume://{volume_id}/rpremote?dc=EU-RO-1",
        "RPREMOTE_RUNPOD_S3_ENDPOINT": s3_server.url}
    assert store.credential_env() == {"RUNPOD_S3_ACCESS_KEY_ID": RUNPOD_KEY_ID,
                                      "RUNPOD_S3_SECRET_ACCESS_KEY": RUNPOD_SECRET}
    # What a worker builds from them reaches the same pieces.
    worker = S3Store(parse_store(store.worker_env()["RPREMOTE_STORE"]),
                     {**store.worker_env(), **store.credential_env()})
    assert worker.get(key, len(data)) == data

    missing = uuid.uuid4().hex[:10]
    nowhere = S3Store(parse_store(f"runpod-volume://{missing}?dc=EU-RO-1"), env)
    with pytest.raises(ConfigError, match=f"no network volume {missing} in EU-RO-1") as e:
        nowhere.check()
    no_secret_in(str(e.value), store.describe(), repr(store), json.dumps(store.worker_env()))


def test_runpod_volume_endpoint_follows_the_data_center():
    store = S3Store(parse_store("runpod-volume://agv6w2qcg7/p?dc=US-KS-2"),
                    {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET})
    assert store.endpoint == "https://s3api-us-ks-2.runpod.io/" and store.region == "US-KS-2"
    assert "credentials from $AWS_ACCESS_KEY_ID" in store.describe()
    assert store.worker_env() == {"RPREMOTE_STORE": "runpod-volume://agv6w2qcg7/p?dc=US-KS-2"}
    assert store.credential_env() == {"RUNPOD_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
                                      "RUNPOD_S3_SECRET_ACCESS_KEY": FAKE_SECRET}


# -- where settings come from -------------------------------------------------------------------


def test_settings_from_a_profile(s3_server, tmp_path):
    (tmp_path / "credentials").write_text(
        f"[lab]\naws_access_key_id = {FAKE_KEY_ID}\naws_secret_access_key = {FAKE_SECRET}\n")
    (tmp_path / "config").write_text(
        f"[profile lab]\nregion = eu-central-1\nendpoint_url = {s3_server.url}\n")
    env = {"AWS_PROFILE": "lab", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    bucket = unique()
    s3_server.client().create_bucket(Bucket=bucket)
    store = S3Store(parse_store(f"s3://{bucket}/p"), env)
    assert store.describe() == (f"s3://{bucket}/p at {s3_server.url} (region eu-central-1), "
                                "credentials from profile 'lab' (~/.aws/credentials)")
    store.check()
    data = os.urandom(1000)
    store.put(protocol.digest(data), data)
    assert store.worker_env() == {"RPREMOTE_STORE": f"s3://{bucket}/p",
                                  "AWS_ENDPOINT_URL_S3": s3_server.url,
                                  "AWS_REGION": "eu-central-1"}
    # A worker has no ~/.aws: static keys from the profile travel in the endpoint's env.
    assert store.credential_env() == {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
                                      "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    no_secret_in(store.describe(), repr(store), json.dumps(store.worker_env()))

    with pytest.raises(ConfigError, match="AWS_PROFILE='nope': no such profile"):
        S3Store(parse_store("s3://bkt"), {**env, "AWS_PROFILE": "nope"})


def test_the_environment_given_wins_over_the_process(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    store = make_store(s3_server)  # s3_server.env(): its endpoint and keys, not these
    assert store.endpoint == s3_server.url
    assert "$AWS_ACCESS_KEY_ID" in store.describe()
    store.check()
    assert store.credential_env()["AWS_ACCESS_KEY_ID"] == s3_server.env()["AWS_ACCESS_KEY_ID"]
    from_process = S3Store(parse_store("s3://bkt"))  # env=None: os.environ
    assert from_process.endpoint == os.environ["AWS_ENDPOINT_URL_S3"]


def test_a_bad_endpoint_url_is_refused_at_once():
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_S3='127.0.0.1:9000' is not an "
                                          r"http\(s\)://"):
        S3Store(parse_store("s3://bkt"), {"AWS_ENDPOINT_URL_S3": "127.0.0.1:9000"})
    with pytest.raises(ConfigError, match="RPREMOTE_RUNPOD_S3_ENDPOINT='ftp://x' is not"):
        S3Store(parse_store("runpod-volume://agv6w2qcg7?dc=EU-RO-1"),
                {"RPREMOTE_RUNPOD_S3_ENDPOINT": "ftp://x"})


def test_worker_env_and_describe_hold_no_secret(s3_server):
    env = {**s3_server.env(), "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": FAKE_SECRET, "AWS_SESSION_TOKEN": "tok-" + FAKE_SECRET}
    store = S3Store(parse_store("s3://bkt/p"), env)
    no_secret_in(repr(store), store.describe(), str(store.location), json.dumps(store.worker_env()))
    assert store.credential_env() == {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
                                      "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                                      "AWS_SESSION_TOKEN": "tok-" + FAKE_SECRET}
    assert store.worker_env() == {"RPREMOTE_STORE": "s3://bkt/p",
                                  "AWS_ENDPOINT_URL_S3": s3_server.url, "AWS_REGION": "us-east-1"}

