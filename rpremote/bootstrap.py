"""Bring rpremote to a bare worker, then start the executor: an official image's start command.

An official RunPod image has Python, pip and CUDA, and no rpremote. The client makes this
file the endpoint's start command (``python -c <this source>``, ``client/runpod_image.py``)
and says what to install in ``RPREMOTE_BOOTSTRAP`` (JSON, no secrets):
``{"version", "python", "requirements": [...], "wheel": {"name", "sha256"} | null}``, and
``"run"``: what to start once rpremote is there (``python`` arguments; default the executor,
a Serverless worker; a Pod starts ``rpremote serve``).

- ``requirements`` are rpremote's dependencies pinned to the client's own versions, so the
  worker unpickles with what the client pickled with (cloudpickle above all);
- ``wheel`` is the client's own build of rpremote, content-addressed (sha256) in the offload
  store the endpoint uses (``RPREMOTE_STORE``): read from the network volume when it is
  mounted, else fetched from S3 with boto3 (installed with the requirements: the runpod SDK
  needs it). Without a wheel, ``rpremote==<version>`` comes from the package index.

Everything goes into one directory keyed by the plan, the Python and the platform, put first
on ``PYTHONPATH``; the image's own packages are left alone. With a network volume mounted
(``RPREMOTE_VOLUME_MOUNT``, default ``/runpod-volume``) that directory is on the volume, next
to the executor's dependency cache (``<volume>/rpremote/deps``) and with its conventions: a
finished directory has a ``.complete`` marker and is reused as is, a file lock makes
concurrent workers install once, and a half-done install is built in a temporary directory
and renamed, so it never becomes visible. So the next cold worker installs nothing.

Stdlib only, one file, no import of rpremote: it runs before rpremote exists.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

SETTING = "RPREMOTE_BOOTSTRAP"
VOLUME_MOUNT_SETTING = "RPREMOTE_VOLUME_MOUNT"
NETWORK_VOLUME_DIR = "/runpod-volume"


def say(text):
    print(f"rpremote bootstrap: {text}", flush=True)


def fail(text):
    say(f"FAILED: {text}")
    sys.exit(3)


def volume_dir():
    mount = os.environ.get(VOLUME_MOUNT_SETTING) or NETWORK_VOLUME_DIR
    return mount if os.path.isdir(mount) else None


def install_root():
    volume = volume_dir()
    if volume:
        return os.path.join(volume, "rpremote", "deps"), "the network volume"
    return os.path.join(os.path.expanduser("~"), ".cache", "rpremote", "deps"), "the container disk"


def plan_key(plan):
    wheel = plan.get("wheel") or {}
    ident = [plan["version"], wheel.get("sha256"), sorted(plan.get("requirements") or []),
             sys.implementation.cache_tag, sysconfig.get_platform()]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def pip(args, target, constraints=None):
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--progress-bar", "off", "-q", "--target", target]
    if constraints:
        cmd += ["-c", constraints]
    result = subprocess.run(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        fail(f"pip install {' '.join(args)} exited with code {result.returncode}:\n{tail}")


def store_parts():
    """``(scheme, bucket, prefix, query)`` of ``RPREMOTE_STORE``."""
    url = (os.environ.get("RPREMOTE_STORE") or "").strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None, None, None, ""
    rest, _, query = rest.partition("?")
    bucket, _, prefix = rest.partition("/")
    return scheme.lower(), bucket, prefix.strip("/"), query


def fetch_wheel(wheel, site):
    """The wheel's bytes from the endpoint's store (checked against its sha256)."""
    digest = wheel["sha256"]
    scheme, bucket, prefix, query = store_parts()
    relative = f"{digest[:2]}/{digest}"
    key = f"{prefix}/{relative}" if prefix else relative
    volume = volume_dir()
    if scheme == "runpod-volume" and volume:
        where = os.path.join(volume, key)
        try:
            with open(where, "rb") as f:
                data = f.read()
        except OSError as e:
            fail(f"rpremote's wheel is not on the network volume at {where} ({e}); the client "
                 "uploads it before creating the endpoint: call again from the client")
    elif scheme in ("s3", "runpod-volume"):
        sys.path.insert(0, site)  # boto3 came with the requirements
        import boto3

        options = {}
        if scheme == "runpod-volume":
            dc = dict(p.partition("=")[::2] for p in query.split("&") if p).get("dc", "")
            # RPREMOTE_RUNPOD_S3_ENDPOINT: s3.RUNPOD_ENDPOINT_SETTING (a rehearsal's server)
            options = {"endpoint_url": os.environ.get("RPREMOTE_RUNPOD_S3_ENDPOINT")
                       or f"https://s3api-{dc.lower()}.runpod.io/",
                       "region_name": dc,
                       "aws_access_key_id": os.environ.get("RUNPOD_S3_ACCESS_KEY_ID"),
                       "aws_secret_access_key": os.environ.get("RUNPOD_S3_SECRET_ACCESS_KEY")}
        try:
            data = boto3.client("s3", **options).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001 -- said, with what to do
            fail(f"cannot fetch rpremote's wheel from {scheme}://{bucket}/{key}: "
                 f"{type(e).__name__}: {e}")
    else:
        fail("rpremote's wheel is to come from the offload store, and this endpoint has none "
             "(RPREMOTE_STORE)")
    if hashlib.sha256(data).hexdigest() != digest:
        fail(f"rpremote's wheel in the store does not match its sha256 {digest[:12]}...; "
             "it was changed after the client uploaded it")
    path = os.path.join(tempfile.mkdtemp(prefix="rpremote-wheel-"), wheel["name"])
    with open(path, "wb") as f:
        f.write(data)
    return path


def install(plan, target):
    """Build the site in a temporary directory next to ``target``, then rename it."""
    started = time.monotonic()
    version = plan["version"]
    requirements = plan.get("requirements") or []
    wheel = plan.get("wheel")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(target))
    try:
        constraints = os.path.join(tempfile.mkdtemp(prefix="rpremote-pins-"), "pins.txt")
        with open(constraints, "w") as f:
            f.write("\n".join(requirements) + "\n")
        if requirements:
            say(f"installing {len(requirements)} packages rpremote {version} needs, at the "
                "client's versions")
            pip(requirements, tmp, constraints)
        if wheel:
            say(f"installing rpremote {version} from the client's build ({wheel['name']}, "
                f"sha256 {wheel['sha256'][:12]}...)")
            pip(["--no-deps", fetch_wheel(wheel, tmp)], tmp)
        else:
            say(f"installing rpremote {version} from the package index")
            pip([f"rpremote=={version}"], tmp, constraints)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(os.path.join(target, ".complete"), "w") as f:
        json.dump({"rpremote": version, "requirements": requirements,
                   "seconds": round(time.monotonic() - started, 1)}, f)
    say(f"installed in {time.monotonic() - started:.1f} s")


def prepare(plan):
    """The directory with rpremote and its dependencies, installed now if needed."""
    root, where = install_root()
    target = os.path.join(root, f"rpremote-{plan['version']}-{plan_key(plan)}")
    if os.path.exists(os.path.join(target, ".complete")):
        say(f"rpremote {plan['version']} is installed on {where} already: nothing to install")
        return target
    os.makedirs(root, mode=0o700, exist_ok=True)
    with open(os.path.join(root, f"rpremote-{plan_key(plan)}.lock"), "w") as lock:
        waited = time.monotonic()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say("another worker is installing rpremote on the network volume; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
            say(f"waited {time.monotonic() - waited:.1f} s")
        if os.path.exists(os.path.join(target, ".complete")):
            return target
        say(f"installing on {where} ({target})")
        install(plan, target)
    return target


def main():
    try:
        plan = json.loads(os.environ[SETTING])
    except (KeyError, ValueError) as e:
        fail(f"{SETTING} is missing or not JSON ({e}); this start command is made by "
             "rpremote's client, which sets it in the endpoint's environment")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if plan.get("python") and plan["python"] != python:
        fail(f"this image runs Python {python} and the client Python {plan['python']}; "
             "functions travel by value and need the same minor version: choose an image "
             f"with Python {plan['python']} (image=...)")
    site = prepare(plan)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    run = plan.get("run") or ["-m", "rpremote.executor"]  # a Pod: ["-m", "rpremote", "serve", ...]
    say(f"starting {' '.join(run[1:3])} (rpremote {plan['version']}, Python {python})")
    os.execve(sys.executable, [sys.executable, *run], env)


if __name__ == "__main__":
    main()
