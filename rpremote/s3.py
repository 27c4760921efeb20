"""The offload store in an S3 bucket: any S3-compatible service, or a RunPod network volume.

``RPREMOTE_STORE=s3://BUCKET[/PREFIX]`` takes the endpoint, region and credentials from boto3's
own sources (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and ``~/.aws/config``), so
AWS S3, Cloudflare R2, Backblaze B2, MinIO and RunPod's S3 API are all spoken the same way.
``RPREMOTE_STORE=runpod-volume://VOLUME_ID[/PREFIX]?dc=EU-RO-1`` is a RunPod network volume:
the bucket is the volume id, the endpoint and region follow from its data center
(``platform.s3_api_endpoint``; ``RPREMOTE_RUNPOD_S3_ENDPOINT`` replaces it for a rehearsal
against a local S3 server), the keys are RunPod's S3 API keys (``RUNPOD_S3_ACCESS_KEY_ID`` /
``RUNPOD_S3_SECRET_ACCESS_KEY``, else the AWS ones).

Why it is built the way it is:

- Pieces live at ``<prefix>/<digest[:2]>/<digest>``: ``blobs.DirectoryStore``'s layout, so a
  worker that has the volume mounted reads the same pieces as files, no keys needed.
- Only what RunPod's S3 API has: no presigned URLs (a worker gets the keys in its endpoint's
  environment, ``credential_env``), no DeleteObjects (``sweep`` deletes one object at a time),
  no lifecycle rules (``sweep`` is the expiry), single PUTs and parts at most 500 MB (multipart
  from ``MULTIPART_THRESHOLD`` on, parts of at most ``PART_SIZE``).
- No copies of a whole piece: an upload is sent from the caller's buffer (a pickle-5 buffer, an
  mmap) through a reader that hands out slices of it; a download is one ``bytearray`` that
  ranged GETs, in parallel, read straight into. No base64, no per-request checksums beyond
  what a service requires, unsigned payloads: the receiver checks every piece's BLAKE3 digest
  (``protocol.decode_parts``), and TLS guards the wire, so a SHA-256 or CRC pass over every
  byte before sending would only cost time (and RunPod's S3 API is not known to accept
  botocore's new default of aws-chunked CRC trailers).
- Nothing here does network I/O until asked: constructing a store resolves the endpoint,
  region and where the credentials come from; ``check`` is the one place that asks the
  service whether the settings work, and says which setting to fix when they do not.
- Secrets never leave: ``repr``, ``describe`` and every message say where the credentials come
  from (``$AWS_ACCESS_KEY_ID``, ``profile 'x'``), never their values; text a service sends
  back is scrubbed of them before it is shown.

Stdlib at import; botocore (``pip install 'rpremote[s3]'``) is imported by ``S3Store``.
"""

from __future__ import annotations

import math
import os
import re
import threading
import urllib.parse
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Mapping

from . import platform
from .durations import seconds
from .errors import ConfigError, OffloadError

MiB = 1024 * 1024

SETTING = "RPREMOTE_STORE"
RUNPOD_ENDPOINT_SETTING = "RPREMOTE_RUNPOD_S3_ENDPOINT"
SCHEMES = ("s3", "runpod-volume")

# Transfers. What makes a big piece move fast over a real network is the number of streams
# in flight (one TCP stream to a distant S3 service carries some tens of MB/s), so a piece
# from MULTIPART_THRESHOLD (RANGED_THRESHOLD for downloads) on is split into about 2 x THREADS
# parts, each at least MIN_PART_SIZE and at most PART_SIZE, that go THREADS at a time.
# Measured on loopback against a server that carries 40 MB/s per connection: a 256 MiB piece
# goes up at 37 MiB/s in one PUT, 225 MiB/s in 16 MiB parts x 8 threads (the tests' module
# docstring has the numbers, moto's included).
MIN_PART_SIZE = 8 * MiB
PART_SIZE = 64 * MiB
MULTIPART_THRESHOLD = 16 * MiB
RANGED_THRESHOLD = 16 * MiB
THREADS = 8
MAX_PARTS = 10_000  # S3's limit on parts per upload
_READ_CHUNK = 1 * MiB  # each readinto() of a response body
_GET_ATTEMPTS = 3  # a body that breaks off mid-stream is read on from where it stopped

# A piece seen by ``has`` that was last written longer ago than this is rewritten in place
# (CopyObject onto itself), so that ``sweep`` removes only pieces nobody asked for lately.
# A sweep age shorter than this can remove a piece a queued job still needs.
REFRESH_AGE_S = 24 * 3600.0
DEFAULT_SWEEP_AGE_S = 7 * 24 * 3600.0

_PIECE_NAME = re.compile(r"([0-9a-f]{2})/([0-9a-f]{64})")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Lenient enough for legacy AWS names and B2's mixed case, strict enough to catch typos.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,62}")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")
_FORM = ("s3://BUCKET[/PREFIX] or runpod-volume://VOLUME_ID[/PREFIX]?dc=DATA_CENTER")
NO_DC = ("a network volume needs its data center, e.g. ?dc=EU-RO-1 (the volume's dataCenter "
         "in the console or GET /v2/network-volumes); one of {known}")


# -- where the store is ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreLocation:
    """Where pieces go: a bucket (or a RunPod network volume) and a prefix inside it."""

    scheme: str  # "s3" | "runpod-volume"
    bucket: str  # the bucket, or the volume id
    prefix: str = ""  # "" or "a/b": no leading or trailing slash
    dc: str | None = None  # a volume's data center (EU-RO-1), else None

    def url(self) -> str:
        """The canonical form (``s3://b/p``, ``runpod-volume://vol/p?dc=EU-RO-1``); no secret."""
        text = f"{self.scheme}://{self.bucket}"
        if self.prefix:
            text += f"/{self.prefix}"
        if self.dc:
            text += f"?dc={self.dc}"
        return text

    def key(self, digest: str) -> str:
        """The object key of a piece: ``<prefix>/<digest[:2]>/<digest>``."""
        if not _DIGEST.fullmatch(digest or ""):
            raise OffloadError(f"not a content address: {digest!r}")
        name = f"{digest[:2]}/{digest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return self.url()


def _redacted(url: str) -> str:
    """``url`` with anything that looks like credentials in it (``user:secret@``) hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def parse_store(url: str, setting: str = SETTING, *, require_dc: bool = True) -> StoreLocation:
    """``s3://BUCKET[/PREFIX]`` or ``runpod-volume://VOLUME_ID[/PREFIX]?dc=DATA_CENTER`` ->
    a ``StoreLocation``; ``ConfigError`` naming ``setting`` when it is not one.

    ``require_dc=False`` (the client's settings) lets a volume come without ``?dc=``: its
    ``dc`` is None until the client looks it up (``client/stores.py``, with a RunPod API key);
    ``S3Store`` refuses a volume whose data center is still unknown. A worker's setting
    always carries it."""
    text = (url or "").strip()
    shown = _redacted(text)

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{setting}={shown!r} is not an offload store: {why} (the form is "
                           f"{_FORM})")

    scheme, sep, _ = text.partition("://")
    if not sep:
        raise bad("no scheme")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme!r}, expected s3 or runpod-volume")
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as e:
        raise bad(str(e)) from None
    netloc = parts.netloc
    what = "bucket" if scheme == "s3" else "network volume id"
    if "@" in netloc:
        keys = ("RUNPOD_S3_ACCESS_KEY_ID and RUNPOD_S3_SECRET_ACCESS_KEY"
                if scheme == "runpod-volume" else "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        raise bad(f"credentials do not go in {setting}: set {keys} (or an AWS profile) instead")
    if ":" in netloc:
        raise bad("a port belongs to the endpoint (AWS_ENDPOINT_URL_S3=http://HOST:PORT), not "
                  f"to the {what}")
    if not netloc:
        raise bad(f"no {what}")
    if scheme == "s3" and (not _BUCKET.fullmatch(netloc) or ".." in netloc):
        raise bad(f"{netloc!r} is not a valid bucket name (3-63 letters, digits, '.', '-', "
                  "'_'; starting and ending with a letter or digit)")
    if scheme == "runpod-volume" and not _VOLUME_ID.fullmatch(netloc):
        raise bad(f"{netloc!r} is not a network volume id (like agv6w2qcg7)")
    if parts.fragment:
        raise bad("a '#' fragment has no meaning here")
    prefix = parts.path.strip("/")
    if prefix:
        for part in prefix.split("/"):
            if not _PREFIX_PART.fullmatch(part) or part in (".", ".."):
                raise bad(f"the prefix {prefix!r} must be names of letters, digits, '.', '_' and "
                          "'-' joined by single '/' (no '.' or '..')")
    query: dict[str, str] = {}
    if parts.query:
        for pair in parts.query.split("&"):
            name, eq, value = pair.partition("=")
            if name in query:
                raise bad(f"{name!r} is given twice")
            query[name] = urllib.parse.unquote(value) if eq else ""
    allowed = ("dc",) if scheme == "runpod-volume" else ()
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise bad(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
                  f"the query" + (" (only ?dc=DATA_CENTER)" if allowed else
                                  " (an s3:// store takes none: the endpoint and region come "
                                  "from AWS_ENDPOINT_URL_S3 and AWS_REGION)"))
    dc = None
    if scheme == "runpod-volume":
        dc = query.get("dc", "").strip().upper()
        known = ", ".join(platform.S3_API_DATA_CENTERS)
        if not dc and not require_dc:
            return StoreLocation(scheme, netloc, prefix, None)
        if not dc:
            raise bad(NO_DC.format(known=known))
        if dc not in platform.S3_API_DATA_CENTERS:
            raise bad(f"RunPod has no S3 API in data center {dc!r}; it has one in {known}")
    return StoreLocation(scheme, netloc, prefix, dc)


# -- the store -------------------------------------------------------------------------------


class _ViewReader:
    """A file-like view of a buffer for botocore: ``read`` hands out slices of it, not copies,
    and ``seek`` lets botocore rewind it to retry a request."""

    def __init__(self, view: memoryview):
        self._view = view
        self._pos = 0

    def read(self, n: int = -1) -> memoryview:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        chunk = self._view[self._pos:end]
        self._pos = end
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, min(len(self._view), base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view) - self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def _run_parallel(pool_size: int, calls: Iterable[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on ``pool_size`` threads; their results in order. On the first failure
    (or an interrupt) what has not started is cancelled, what runs is waited for, and the
    failure is raised."""
    calls = list(calls)
    if len(calls) <= 1 or pool_size <= 1:
        return [call() for call in calls]
    pool = ThreadPoolExecutor(max_workers=min(pool_size, len(calls)),
                              thread_name_prefix="rpremote-s3")
    futures: list[Future] = []
    try:
        futures = [pool.submit(call) for call in calls]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)


def _import_botocore() -> Any:
    try:
        import botocore.session  # noqa: F401  (boto3's core; boto3 brings it)
        import botocore.config  # noqa: F401
        import botocore.credentials  # noqa: F401
        import botocore.exceptions  # noqa: F401
    except ImportError:
        raise ConfigError(f"an S3 offload store ({SETTING}=s3://... or runpod-volume://...) "
                          "needs boto3: pip install 'rpremote[s3]'") from None
    import botocore

    return botocore


_LOADER: Any = None


def _shared_loader(botocore: Any) -> Any:
    """One loader of botocore's service models for every store in the process: its cache
    makes a second store's client cost ~5 ms instead of ~100 ms."""
    global _LOADER
    if _LOADER is None:
        import botocore.loaders

        _LOADER = botocore.loaders.create_loader()
    return _LOADER


def _server_now(response: Mapping[str, Any]) -> datetime:
    """The service's clock (its Date header), so ages do not depend on this machine's."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass
    return datetime.now(timezone.utc)


class S3Store:
    """Pieces in an S3 bucket under a prefix, by content address; see the module docstring.

    ``env`` (default ``os.environ``) is where ``RUNPOD_S3_*``, ``AWS_*`` and
    ``RPREMOTE_RUNPOD_S3_ENDPOINT`` are read from; profiles and ``~/.aws`` files (and a
    container's or instance's role, at first use) are boto3's as usual. The keyword
    arguments tune transfers (tests and benchmarks use them).
    """

    kind = "s3"

    def __init__(self, location: StoreLocation, env: Mapping[str, str] | None = None, *,
                 part_size: int = PART_SIZE, threads: int = THREADS,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 ranged_threshold: int = RANGED_THRESHOLD,
                 refresh_age_s: float = REFRESH_AGE_S):
        env = os.environ if env is None else env
        if location.scheme == "runpod-volume" and not location.dc:
            known = ", ".join(platform.S3_API_DATA_CENTERS)
            raise ConfigError(f"{SETTING}={location.url()!r}: " + NO_DC.format(known=known)
                              + ", or set RUNPOD_API_KEY so rpremote can look it up")
        botocore = _import_botocore()
        self._botocore = botocore
        self.location = location
        self.part_size = min(max(part_size, 5 * MiB), platform.S3_API_MAX_PART_BYTES)
        self.min_part_size = min(MIN_PART_SIZE, self.part_size)
        self.threads = max(1, threads)
        self.multipart_threshold = min(multipart_threshold, platform.S3_API_MAX_PUT_BYTES)
        self.ranged_threshold = ranged_threshold
        self.refresh_age_s = refresh_age_s
        self.uploaded_bytes = 0
        self.uploads = 0
        self.downloaded_bytes = 0
        self.downloads = 0
        self.last_sweep_aborted_uploads = 0
        self._lock = threading.Lock()
        self._refreshing: dict[str, threading.Thread] = {}

        session = botocore.session.Session()
        session.register_component("data_loader", _shared_loader(botocore))
        # The endpoint is resolved here, from ``env`` and the config file, and given to the
        # client; without this botocore would also read os.environ's AWS_ENDPOINT_URL*.
        session.set_config_variable("ignore_configured_endpoint_urls", True)
        for name, var in (("profile", "AWS_PROFILE"), ("profile", "AWS_DEFAULT_PROFILE"),
                          ("config_file", "AWS_CONFIG_FILE"),
                          ("credentials_file", "AWS_SHARED_CREDENTIALS_FILE")):
            if env.get(var) and session.get_config_variable(name) != env[var]:
                session.set_config_variable(name, env[var])
        self._profile = session.get_config_variable("profile")
        try:
            scoped = session.get_scoped_config()
            full = session.full_config
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS_PROFILE={self._profile!r}: no such profile in "
                              f"{session.get_config_variable('config_file')} or "
                              f"{session.get_config_variable('credentials_file')}") from None

        self._resolve_endpoint(env, scoped, full)
        self._resolve_credentials(env, session, scoped)
        self._secrets = tuple(s for s in (self._keys or ()) if s and len(s) >= 4)

        checksums = dict(request_checksum_calculation="when_required",
                         response_checksum_validation="when_required")
        if "request_checksum_calculation" not in getattr(botocore.config.Config,
                                                         "OPTION_DEFAULTS", {}):
            checksums = {}  # botocore < 1.36 adds no checksums of its own anyway
        attempts = (env.get("AWS_MAX_ATTEMPTS") or "").strip()
        if attempts and not attempts.isdigit():
            raise ConfigError(f"AWS_MAX_ATTEMPTS={attempts!r} is not a number of attempts")
        config = botocore.config.Config(
            region_name=self.region,
            retries={"total_max_attempts": int(attempts or platform.S3_API_MAX_ATTEMPTS),
                     "mode": env.get("AWS_RETRY_MODE") or "standard"},
            connect_timeout=10, read_timeout=120,
            max_pool_connections=self.threads * 2 + 4,
            s3={"addressing_style": "path" if self.endpoint else "auto",
                "payload_signing_enabled": False},
            user_agent_extra="rpremote",
            **checksums,
        )
        self._session = session
        self._client = self._make_client(config)
        self._check_config = config.merge(botocore.config.Config(
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=5, read_timeout=20))
        self._checker: Any = None

    def _resolve_endpoint(self, env: Mapping[str, str], scoped: Mapping[str, Any],
                          full: Mapping[str, Any]) -> None:
        """``endpoint`` and ``region``, and the settings they came from."""
        volume = self.location.scheme == "runpod-volume"
        location = self.location
        self.endpoint: str | None
        self.region: str | None
        self._endpoint_setting: str | None  # the variable to fix when it does not answer
        if volume:
            override = (env.get(RUNPOD_ENDPOINT_SETTING) or "").strip()
            self.endpoint = override or platform.s3_api_endpoint(location.dc or "")
            self._endpoint_source = (f"${RUNPOD_ENDPOINT_SETTING}" if override
                                     else f"the data center {location.dc}")
            self._endpoint_setting = RUNPOD_ENDPOINT_SETTING if override else None
            self.region = location.dc
            self._region_source = "the data center"
        else:
            self.endpoint, self._endpoint_source = None, "AWS"
            self._endpoint_setting = None
            for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
                if (env.get(var) or "").strip():
                    self.endpoint, self._endpoint_source = env[var].strip(), f"${var}"
                    self._endpoint_setting = var
                    break
            else:
                services = full.get("services", {}).get(scoped.get("services") or "", {})
                configured = ((services.get("s3") or {}).get("endpoint_url")
                              or services.get("endpoint_url") or scoped.get("endpoint_url"))
                if configured:
                    self.endpoint = configured
                    self._endpoint_source = (f"profile {self._profile or 'default'!r} "
                                             "(endpoint_url)")
                    self._endpoint_setting = "AWS_ENDPOINT_URL_S3"
            self.region, self._region_source = None, None
            for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
                if (env.get(var) or "").strip():
                    self.region, self._region_source = env[var].strip(), f"${var}"
                    break
            else:
                if scoped.get("region"):
                    self.region = scoped["region"]
                    self._region_source = f"profile {self._profile or 'default'!r}"
            if self.region is None:
                self.region = "us-east-1"  # what S3-compatible services accept; AWS redirects
        if self.endpoint is not None:
            parsed = urllib.parse.urlsplit(self.endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                where = self._endpoint_setting or "the endpoint"
                raise ConfigError(f"{where}={_redacted(self.endpoint)!r} is not an http(s):// URL "
                                  "of an S3 endpoint")

    def _resolve_credentials(self, env: Mapping[str, str], session: Any,
                             scoped: Mapping[str, Any]) -> None:
        """The keys (when they are known without asking anyone) and where they come from:
        the variables in ``env`` first, then boto3's files; roles are left for first use."""
        botocore = self._botocore
        volume = self.location.scheme == "runpod-volume"
        self._keys: tuple[str, str, str | None] | None = None
        self._static = False
        self._credential_source: str
        pairs = [("RUNPOD_S3_ACCESS_KEY_ID", "RUNPOD_S3_SECRET_ACCESS_KEY")] if volume else []
        pairs.append(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
        for key_var, secret_var in pairs:
            key, secret = (env.get(key_var) or "").strip(), (env.get(secret_var) or "").strip()
            if key and secret:
                token = (env.get("AWS_SESSION_TOKEN") or "").strip() or None
                self._keys = (key, secret, token if key_var.startswith("AWS") else None)
                self._static = True
                self._credential_source = f"${key_var}"
                break
            if key or secret:
                have, missing = (key_var, secret_var) if key else (secret_var, key_var)
                raise ConfigError(f"{have} is set but {missing} is not: set both (the "
                                  f"{'RunPod S3 API key' if volume else 'access key'} pair)")
        resolver = session.get_component("credential_provider")
        resolver.remove("env")  # read from ``env`` above, not from os.environ behind its back
        if self._keys is None and scoped.get("credential_process"):
            self._credential_source = (f"the credential_process of profile "
                                       f"{self._profile or 'default'!r}, at first use")
        elif self._keys is None:
            # Files and deferred roles only, in boto3's order: no process is run and no
            # metadata service asked here (those come at first use, if nothing else has keys).
            quiet = botocore.credentials.CredentialResolver(
                [p for p in resolver.providers if p.METHOD in (
                    "assume-role", "assume-role-with-web-identity", "sso",
                    "shared-credentials-file", "config-file", "ec2-credentials-file",
                    "boto-config")])
            try:
                found = quiet.load_credentials()
            except botocore.exceptions.BotoCoreError as e:
                raise ConfigError(f"AWS profile {self._profile or 'default'!r}: "
                                  f"{self._scrub(str(e))}") from None
            if found is not None:
                self._static = not isinstance(found, botocore.credentials.RefreshableCredentials)
                if self._static:
                    frozen = found.get_frozen_credentials()
                    self._keys = (frozen.access_key, frozen.secret_key, frozen.token)
                self._credential_source = {
                    "shared-credentials-file": f"profile {self._profile or 'default'!r} "
                                               "(~/.aws/credentials)",
                    "config-file": f"profile {self._profile or 'default'!r} (~/.aws/config)",
                }.get(found.method, f"profile {self._profile or 'default'!r} ({found.method})")
            else:
                self._credential_source = ("boto3's default chain (a container's or instance's "
                                           "role), at first use")

    def _make_client(self, config: Any) -> Any:
        keys = {}
        if self._keys is not None:
            keys = dict(aws_access_key_id=self._keys[0], aws_secret_access_key=self._keys[1],
                        aws_session_token=self._keys[2])
        return self._session.create_client("s3", endpoint_url=self.endpoint,
                                           region_name=self.region, config=config, **keys)

    # -- what it is ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"S3Store({self.location.url()!r})"

    def describe(self) -> str:
        """Where the store is and where its credentials come from (never their values)."""
        where = _redacted(self.endpoint) if self.endpoint else "AWS S3"
        return (f"{self.location.url()} at {where} (region {self.region}), credentials from "
                f"{self._credential_source}")

    def worker_env(self) -> dict[str, str]:
        """What a worker's environment needs to reach this store, secrets aside:
        ``RPREMOTE_STORE`` and the endpoint and region when settings chose them here.

        The credentials are ``credential_env()``: the caller puts them in the endpoint's (or
        the Pod's) environment, never in a job's input, and only when this store's keys are
        meant for the worker (a worker with the volume mounted reads it without keys).
        """
        env = {SETTING: self.location.url()}
        if self.location.scheme == "runpod-volume":
            if self._endpoint_setting == RUNPOD_ENDPOINT_SETTING and self.endpoint:
                env[RUNPOD_ENDPOINT_SETTING] = self.endpoint
            return env
        if self.endpoint:
            env["AWS_ENDPOINT_URL_S3"] = self.endpoint
        if self._region_source or self.endpoint:
            env["AWS_REGION"] = self.region or "us-east-1"
        return env

    def credential_env(self) -> dict[str, str]:
        """The credential variables and their values for a worker's environment: RunPod's
        S3 API keys as ``RUNPOD_S3_ACCESS_KEY_ID`` / ``RUNPOD_S3_SECRET_ACCESS_KEY`` (so they
        do not shadow AWS keys the user's own code may use), others as ``AWS_ACCESS_KEY_ID`` /
        ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``). Static keys from a profile file
        are passed too, since a RunPod worker has no ``~/.aws``. Empty when the credentials
        are temporary ones boto3 refreshes (a role, SSO, a credential_process): the worker
        must then have its own way (a profile or role), as the keys would expire there.
        """
        if self._keys is None or not self._static:
            return {}
        key, secret, token = self._keys
        if self.location.scheme == "runpod-volume":
            return {"RUNPOD_S3_ACCESS_KEY_ID": key, "RUNPOD_S3_SECRET_ACCESS_KEY": secret}
        env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        if token:
            env["AWS_SESSION_TOKEN"] = token
        return env

    # -- errors -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in getattr(self, "_secrets", ()):
            text = text.replace(secret, "***")
        return text

    def _error_code(self, e: BaseException) -> tuple[str, int]:
        response = getattr(e, "response", None) or {}
        code = str(response.get("Error", {}).get("Code") or "")
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code, status

    def _unreachable(self, e: BaseException) -> bool:
        exc = self._botocore.exceptions
        return isinstance(e, (exc.EndpointConnectionError, exc.ConnectTimeoutError,
                              exc.ConnectionClosedError, exc.SSLError, exc.ReadTimeoutError,
                              exc.ProxyConnectionError))

    def _keys_hint(self) -> str:
        if self.location.scheme == "runpod-volume":
            return ("RUNPOD_S3_ACCESS_KEY_ID and RUNPOD_S3_SECRET_ACCESS_KEY: RunPod S3 API keys "
                    "(console -> Settings -> S3 API Keys: the access key id is your user id, "
                    "user_..., the secret starts rps_...), not the RunPod API key")
        return ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the keys the S3 service gave "
                "you), or AWS_PROFILE naming a profile in ~/.aws/credentials")

    def _where(self) -> str:
        """Which setting to fix when the endpoint does not answer."""
        if self.location.scheme == "runpod-volume":
            if self._endpoint_setting:
                return f"{self._endpoint_setting} (it replaces RunPod's endpoint)"
            return (f"the data center in {SETTING} (?dc={self.location.dc}: the volume's own "
                    "data center)")
        if self._endpoint_setting:
            return self._endpoint_setting
        return ("AWS_ENDPOINT_URL_S3 (for an S3-compatible service) or your network (for AWS "
                "S3)")

    def _config_error(self, e: BaseException) -> ConfigError:
        """What ``check`` says for a failed request: which setting to fix."""
        exc = self._botocore.exceptions
        url = self.location.url()
        volume = self.location.scheme == "runpod-volume"
        if isinstance(e, exc.NoCredentialsError):
            return ConfigError(f"no credentials for the offload store {url}: set "
                               f"{self._keys_hint()}")
        if self._unreachable(e) or isinstance(e, exc.EndpointResolutionError):
            reason = self._scrub(str(e))
            return ConfigError(f"cannot reach the S3 endpoint {self.endpoint or 'of AWS S3'} "
                               f"(from {self._endpoint_source}) for the offload store {url}: "
                               f"{reason}; fix {self._where()}")
        code, status = self._error_code(e)
        if status == 404 or code in ("NoSuchBucket", "404"):
            if volume:
                return ConfigError(
                    f"no network volume {self.location.bucket} in {self.location.dc} (RunPod's "
                    f"S3 API at {self.endpoint} has no such bucket): fix the volume id or "
                    f"?dc= in {SETTING} (the volume's id and data center are in the console "
                    "or GET /v2/network-volumes)")
            return ConfigError(f"no bucket {self.location.bucket!r} at "
                               f"{self.endpoint or 'AWS S3'} (endpoint from "
                               f"{self._endpoint_source}): fix the bucket in {SETTING} or the "
                               f"endpoint ({self._where()})")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken", "TokenRefreshRequired", "InvalidClientTokenId"):
            what = {"InvalidAccessKeyId": "the access key id is not known there",
                    "SignatureDoesNotMatch": "the secret key does not match the access key id",
                    }.get(code, "the session token is not valid (expired?)")
            return ConfigError(f"the offload store {url} refused the credentials from "
                               f"{self._credential_source} ({code}: {what}); set "
                               f"{self._keys_hint()}")
        if status == 403 or code in ("AccessDenied", "403", "AllAccessDisabled"):
            return ConfigError(f"the offload store {url} refused access with the credentials "
                               f"from {self._credential_source} ({code or status}): they are "
                               f"wrong, or not allowed to read and write this "
                               f"{'volume' if volume else 'bucket'} (rpremote needs Get, Put, "
                               f"List and DeleteObject under the prefix); set "
                               f"{self._keys_hint()}")
        if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed",
                                     "IllegalLocationConstraintException", "301"):
            return ConfigError(f"the bucket of {url} is in another region than "
                               f"{self.region} ({code or status}): set AWS_REGION to its region")
        message = self._scrub(str(e))
        return ConfigError(f"the offload store {url} at {self.endpoint or 'AWS S3'} answered "
                           f"{code or status or type(e).__name__}: {message}")

    def _offload_error(self, e: BaseException, doing: str) -> OffloadError:
        """What a failed transfer says (the settings were checked; say what happened)."""
        exc = self._botocore.exceptions
        if isinstance(e, OffloadError):
            return e
        if isinstance(e, (exc.NoCredentialsError, exc.PartialCredentialsError)) \
                or self._unreachable(e):
            return OffloadError(f"could not {doing}: {self._config_error(e)}")
        code, status = self._error_code(e)
        if code or status:
            text = self._config_error(e) if status in (301, 403, 404) else \
                f"{code or status}: {self._scrub(str(e))}"
            return OffloadError(f"could not {doing} ({self.describe()}): {text}")
        return OffloadError(f"could not {doing} ({self.describe()}): "
                            f"{type(e).__name__}: {self._scrub(str(e))}")

    # -- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        """Ask the service whether these settings work, before anything is sent: HeadBucket,
        then a HEAD under the prefix (a GET, whose error has a code, when the bucket said
        403). ``ConfigError`` naming the setting to fix."""
        if self._checker is None:
            self._checker = self._make_client(self._check_config)
        client = self._checker
        bucket = self.location.bucket
        probe = (f"{self.location.prefix}/" if self.location.prefix else "") + \
            ".rpremote-check"
        exc = self._botocore.exceptions
        try:
            client.head_bucket(Bucket=bucket)
        except exc.ClientError as e:
            code, status = self._error_code(e)
            if status not in (400, 403):
                raise self._config_error(e) from None
            try:  # HEAD answers carry no error code: a GET of a missing key says which
                client.get_object(Bucket=bucket, Key=probe)
            except exc.ClientError as e2:
                code2, _ = self._error_code(e2)
                if code2 != "NoSuchKey":
                    raise self._config_error(e2) from None
            raise self._config_error(e) from None
        except Exception as e:  # noqa: BLE001 -- each botocore failure says what to fix
            raise self._config_error(e) from None
        try:
            client.head_object(Bucket=bucket, Key=probe)
        except exc.ClientError as e:
            if self._error_code(e)[1] != 404:
                raise self._config_error(e) from None
        except Exception as e:  # noqa: BLE001
            raise self._config_error(e) from None

    # -- the store interface (blobs.DirectoryStore's) -----------------------------------------

    def has(self, key: str) -> bool:
        """Whether the piece is there (a HEAD). One last written more than ``refresh_age_s``
        ago is rewritten in place (CopyObject onto itself, on a thread of its own: a big
        piece's copy takes a while and the answer does not wait for it), so that ``sweep``
        never takes a piece that is still being used."""
        name = self.location.key(key)
        exc = self._botocore.exceptions
        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=name)
        except exc.ClientError as e:
            if self._error_code(e)[1] == 404:
                return False
            raise self._offload_error(e, f"look for piece {key[:12]}...") from None
        except Exception as e:  # noqa: BLE001
            raise self._offload_error(e, f"look for piece {key[:12]}...") from None
        modified = head.get("LastModified")
        if modified is not None and \
                (_server_now(head) - modified).total_seconds() > self.refresh_age_s:
            self._refresh(name)
        return True

    def _refresh(self, name: str) -> None:
        with self._lock:
            if name in self._refreshing:
                return
            thread = threading.Thread(target=self._copy_onto_itself, args=(name,),
                                      name="rpremote-s3-refresh", daemon=True)
            self._refreshing[name] = thread
        thread.start()

    def _copy_onto_itself(self, name: str) -> None:
        try:
            self._client.copy_object(
                Bucket=self.location.bucket, Key=name,
                CopySource={"Bucket": self.location.bucket, "Key": name},
                MetadataDirective="REPLACE", Metadata={"rpremote": "piece"},
                ContentType="application/octet-stream")
        except Exception:  # noqa: BLE001 -- best effort: a piece CopyObject cannot take (AWS:
            pass  # over 5 GB) keeps its age; a sweep may take it, and it is uploaded again
        finally:
            with self._lock:
                self._refreshing.pop(name, None)

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the refreshes ``has`` began (a command that exits right after, tests)."""
        with self._lock:
            threads = list(self._refreshing.values())
        for thread in threads:
            thread.join(timeout)

    def put(self, key: str, data: Any) -> None:
        """Store ``data`` (any contiguous buffer, not copied) under ``key``: one PUT below
        ``multipart_threshold``, else a multipart upload of about ``threads`` parts (within
        [``min_part_size``, ``part_size``]) sent in parallel, aborted if any part fails."""
        name = self.location.key(key)
        view = memoryview(data).cast("B")
        size = view.nbytes
        try:
            part = self._split(size, self.multipart_threshold)
            if part is None:
                self._client.put_object(Bucket=self.location.bucket, Key=name,
                                        Body=_ViewReader(view),
                                        ContentType="application/octet-stream")
            else:
                self._put_multipart(name, view, part)
        except Exception as e:  # noqa: BLE001
            raise self._offload_error(e, f"store a {size:,}-byte piece") from None
        with self._lock:
            self.uploaded_bytes += size
            self.uploads += 1

    def _split(self, size: int, threshold: int) -> int | None:
        """The part size a piece of ``size`` bytes moves in, None for one request: about two
        parts per thread (a slow part does not hold up the rest), whole MiB, within
        [min_part_size, part_size] and S3's 10,000 parts."""
        if size < threshold:
            return None
        per_thread = math.ceil(size / (2 * self.threads))
        part = min(self.part_size, max(self.min_part_size, per_thread))
        part = max(math.ceil(part / MiB) * MiB, math.ceil(size / MAX_PARTS))
        return part if part < size else None

    def _put_multipart(self, name: str, view: memoryview, part: int) -> None:
        client, bucket = self._client, self.location.bucket
        if part > platform.S3_API_MAX_PART_BYTES:
            raise OffloadError(f"a {view.nbytes:,}-byte piece is too big for the store (at most "
                               f"{MAX_PARTS:,} parts of {platform.S3_API_MAX_PART_BYTES:,} bytes)")
        upload = client.create_multipart_upload(Bucket=bucket, Key=name,
                                                ContentType="application/octet-stream")
        upload_id = upload["UploadId"]

        def send(number: int, start: int) -> dict[str, Any]:
            answer = client.upload_part(Bucket=bucket, Key=name, UploadId=upload_id,
                                        PartNumber=number,
                                        Body=_ViewReader(view[start:start + part]))
            return {"PartNumber": number, "ETag": answer["ETag"]}

        try:
            parts = _run_parallel(self.threads, [
                (lambda n=n, s=s: send(n, s))
                for n, s in enumerate(range(0, view.nbytes, part), start=1)])
            client.complete_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            except Exception:  # noqa: BLE001 -- the first failure is the one to tell; sweep
                pass  # aborts what is left
            raise

    def get(self, key: str, size: int) -> bytearray:
        """The piece as a new writable ``bytearray`` of ``size`` bytes: from
        ``ranged_threshold`` on, ranged GETs in parallel (parts as for ``put``), each read
        straight into its slice. ``OffloadError`` when it is missing or not ``size`` bytes
        long; the caller checks its digest (``protocol.decode_parts``)."""
        name = self.location.key(key)
        buf = bytearray(size)
        view = memoryview(buf)
        try:
            part = self._split(size, self.ranged_threshold)
            if part is None:
                self._read(name, view, 0, size, ranged=False)
            else:
                _run_parallel(self.threads, [
                    (lambda s=s: self._read(name, view[s:s + part], s, size, ranged=True))
                    for s in range(0, size, part)])
        except Exception as e:  # noqa: BLE001
            code, status = self._error_code(e)
            if code in ("NoSuchKey", "404") or status == 404:
                raise OffloadError(
                    f"piece {key[:12]}... ({size:,} bytes) is not in the offload store "
                    f"{self.location.url()} (swept after it went unused, or removed)") from None
            if code == "InvalidRange" or status == 416:
                e = OffloadError(f"piece {key[:12]}... in {self.location.url()} is shorter than "
                                 f"its {size:,} bytes: it was changed")
            raise self._offload_error(e, f"fetch piece {key[:12]}... ({size:,} bytes)") from None
        with self._lock:
            self.downloaded_bytes += size
            self.downloads += 1
        return buf

    def _read(self, name: str, target: memoryview, start: int, total: int, *,
              ranged: bool) -> None:
        """Fill ``target`` with the object's bytes from ``start``; a body that breaks off is
        read on from where it stopped (botocore retries requests, not bodies)."""
        exc = self._botocore.exceptions
        got, attempt = 0, 0
        while True:
            kwargs = {}
            if ranged or got:
                kwargs["Range"] = f"bytes={start + got}-{start + len(target) - 1}"
            answer = self._client.get_object(Bucket=self.location.bucket, Key=name, **kwargs)
            length = int(answer.get("ContentLength", -1))
            whole = answer.get("ContentRange", "").rpartition("/")[2] if kwargs else length
            if str(whole) != str(total) or length != len(target) - got:
                answer["Body"].close()
                raise OffloadError(f"{name} in {self.location.url()} is not the {total:,} "
                                   f"bytes its piece is ({whole} bytes): it was changed")
            body = answer["Body"]
            try:
                while got < len(target):
                    n = body.readinto(target[got:got + _READ_CHUNK])
                    if not n:
                        break
                    got += n
            except (exc.ResponseStreamingError, exc.ReadTimeoutError,
                    exc.IncompleteReadError, ConnectionError):
                if attempt + 1 >= _GET_ATTEMPTS:
                    raise
            finally:
                body.close()
            if got == len(target):
                return
            attempt += 1
            if attempt >= _GET_ATTEMPTS:
                raise OffloadError(f"{name} in {self.location.url()} ended after "
                                   f"{start + got:,} of {total:,} bytes")

    # -- expiry -------------------------------------------------------------------------------

    def _piece_objects(self) -> Iterable[tuple[str, int, float]]:
        """``(key, size, age in seconds)`` of each piece under the prefix; nothing else."""
        root = f"{self.location.prefix}/" if self.location.prefix else ""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=root)
        for page in pages:
            now = _server_now(page)
            for item in page.get("Contents") or ():
                key = item["Key"]
                if not key.startswith(root):
                    continue  # a service that ignored Prefix: never touch what is outside
                match = _PIECE_NAME.fullmatch(key[len(root):])
                if not match or match[2][:2] != match[1]:
                    continue
                yield key, int(item.get("Size", 0)), (now - item["LastModified"]).total_seconds()

    def sweep(self, older_than_s: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove the pieces under the prefix last written (or refreshed by ``has``) more than
        ``older_than_s`` ago; returns ``(pieces, bytes)`` removed (with ``dry_run``: would be).
        Only objects named like pieces (``<2 hex>/<64 hex>``) directly under the prefix, one
        DeleteObject each (RunPod has no DeleteObjects). Multipart uploads of pieces begun
        that long ago are aborted too (``last_sweep_aborted_uploads``)."""
        try:
            doomed = [(key, size) for key, size, age in self._piece_objects()
                      if age > older_than_s]
            if not dry_run:
                _run_parallel(self.threads, [(lambda key=key: self._delete(key))
                                             for key, _ in doomed])
            self.last_sweep_aborted_uploads = self._sweep_uploads(older_than_s, dry_run)
        except Exception as e:  # noqa: BLE001
            raise self._offload_error(e, f"sweep {self.location.url()}") from None
        return len(doomed), sum(size for _, size in doomed)

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=key)
        except self._botocore.exceptions.ClientError as e:
            if self._error_code(e)[1] != 404:  # gone meanwhile (another sweep): fine
                raise

    def _sweep_uploads(self, older_than_s: float, dry_run: bool) -> int:
        client, bucket = self._client, self.location.bucket
        exc = self._botocore.exceptions
        root = f"{self.location.prefix}/" if self.location.prefix else ""
        stale = []
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=bucket, Prefix=root):
                now = _server_now(page)
                for upload in page.get("Uploads") or ():
                    key = upload.get("Key", "")
                    match = _PIECE_NAME.fullmatch(key[len(root):]) if key.startswith(root) \
                        else None
                    if match and (now - upload["Initiated"]).total_seconds() > older_than_s:
                        stale.append((key, upload["UploadId"]))
        except exc.ClientError as e:
            if self._error_code(e)[0] in ("NotImplemented", "501"):
                return 0  # a service without ListMultipartUploads
            raise
        if not dry_run:
            for key, upload_id in stale:
                try:
                    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                except exc.ClientError as e:
                    if self._error_code(e)[0] != "NoSuchUpload":  # finished meanwhile
                        raise
        return len(stale)


def age_seconds(text: str) -> float:
    """An age for ``rpremote store sweep --older-than`` (``durations.seconds``)."""
    return seconds(text)


__all__ = ["StoreLocation", "parse_store", "S3Store", "age_seconds", "DEFAULT_SWEEP_AGE_S",
           "REFRESH_AGE_S", "OffloadError"]
