"""User settings: which target, which signing secret, which offload store, how chatty.
``rpremote.configure`` sets them.

Precedence: ``configure(...)`` > environment (``RPREMOTE_TARGET``, ``RPREMOTE_SECRET``,
``RPREMOTE_STORE``, ``RUNPOD_API_KEY``) > files (``~/.runpod/config.toml`` for the RunPod API
key) > defaults. The signing secret defaults to one generated per user and kept 0600 in the data
directory, so every process of the user (and the local workers) agree without setup.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import data_dir
from .private import private_dir

TARGETS = ("local", "runpod", "pod")
SECRET_FILE = "secret"


@dataclass(frozen=True)
class Settings:
    target: str | None = None
    secret: str | None = None
    quiet: bool | None = None
    reporter: Any = None
    # The offload store's canonical URL; "" = the target's own (beats RPREMOTE_STORE).
    store: str | None = None
    store_from: str = "configure(store=...)"  # the setting to name when the store is wrong
    # The RunPod API key; never shown (repr=False): only where it comes from is ever said.
    api_key: str | None = field(default=None, repr=False)
    image: str | None = None  # the worker image on RunPod (beats $RPREMOTE_IMAGE)
    extra: dict[str, Any] = field(default_factory=dict)


_settings = Settings()


def configure(
    target: str | None = None,
    *,
    secret: str | None = None,
    quiet: bool | None = None,
    reporter: Any = None,
    store: str | None = None,
    api_key: str | None = None,
    image: str | None = None,
) -> None:
    """Choose the target, signing secret and offload store for this process.

    ``target``: ``"local"`` (default; the endpoint emulator on this machine), ``"runpod"``
    (RunPod Serverless) or ``"pod"`` (a RunPod Pod). ``quiet=True`` hides the status lines
    on stderr (remote output is still shown). ``reporter`` replaces the terminal reporter.
    ``store``: where arguments and results of 1 MiB or more go: ``"s3://BUCKET[/PREFIX]"``,
    ``"runpod-volume://VOLUME_ID[/PREFIX]"``, or ``"none"`` for the target's own store (the
    local emulator's); checked here, and against the store itself before the first job.
    ``api_key``: the RunPod API key (beats ``$RUNPOD_API_KEY`` and ``~/.runpod/config.toml``);
    never shown, logged or sent to workers. ``image``: the container image of rpremote's
    RunPod endpoints (beats ``$RPREMOTE_IMAGE``; ``image=`` on ``@remote`` beats both).
    """
    global _settings
    if target is not None:
        _check_target(target, "configure(target=...)")
    if store is not None:
        set_store(store, "configure(store=...)")
    if image is not None and not image.strip():
        raise ConfigError("configure(image=...) is empty; give a container image like "
                          "'runpod/pytorch:...', or leave it out for the default")
    if api_key is not None and not api_key.strip():
        raise ConfigError("configure(api_key=...) is empty; give the RunPod API key (Settings > "
                          "API Keys in the console), or leave it out to use $RUNPOD_API_KEY")
    changes = {k: v for k, v in dict(target=target, secret=secret, quiet=quiet,
                                     reporter=reporter, image=image and image.strip(),
                                     api_key=api_key and api_key.strip()).items()
               if v is not None}
    _settings = replace(_settings, **changes)


def reset() -> None:
    """Back to defaults (tests)."""
    global _settings
    _settings = Settings()


def settings() -> Settings:
    return _settings


def target_name() -> str:
    if _settings.target:
        return _settings.target
    env = os.environ.get("RPREMOTE_TARGET", "").strip()
    if env:
        return _check_target(env, "RPREMOTE_TARGET")
    return "local"


NO_STORE = ("", "none", "default")  # spellings of "the target's own store"


def set_store(value: str, where: str) -> None:
    """Set the offload store from a setting named ``where`` (``configure(store=...)``,
    ``%runpod config store=...``); a URL that does not parse is refused here."""
    global _settings
    url = "" if value.strip().lower() in NO_STORE else _parse_store(value, where).url()
    _settings = replace(_settings, store=url, store_from=where)


def store_choice() -> tuple[Any | None, str]:
    """The configured offload store's location (``s3.StoreLocation``), or None for the
    target's own store; and the setting it comes from, for messages."""
    if _settings.store is not None:
        return (_parse_store(_settings.store, _settings.store_from) if _settings.store
                else None), _settings.store_from
    env = os.environ.get("RPREMOTE_STORE", "").strip()
    if env.lower() in NO_STORE:
        return None, "RPREMOTE_STORE"
    return _parse_store(env, "RPREMOTE_STORE"), "RPREMOTE_STORE"


def _parse_store(value: str, where: str) -> Any:
    from .s3 import parse_store  # parsing only: boto3 is imported when the store is used

    # A volume may leave out ?dc=: the client looks its data center up (client/stores.py).
    return parse_store(value.strip(), setting=where, require_dc=False)


RUNPOD_CONFIG_FILE = Path("~/.runpod/config.toml")  # what `runpodctl config` writes
API_KEY_HOW = ("set RUNPOD_API_KEY, call rpremote.configure(api_key=...), or run `runpodctl "
               "config --apiKey ...` (it writes ~/.runpod/config.toml); keys are made in the "
               "RunPod console under Settings > API Keys")


def runpod_api_key() -> tuple[str | None, str]:
    """The RunPod API key and where it comes from, for messages (never the key itself):
    ``configure(api_key=...)`` > ``$RUNPOD_API_KEY`` > ``~/.runpod/config.toml``.

    The file is runpodctl's (viper writes top-level ``apikey = '...'``; older versions
    ``apiKey``) or the runpod SDK's ``runpod config`` (``[default]`` ``api_key = "..."``).
    ``(None, "")`` when there is none.
    """
    if _settings.api_key:
        return _settings.api_key, "configure(api_key=...)"
    env = os.environ.get("RUNPOD_API_KEY", "").strip()
    if env:
        return env, "$RUNPOD_API_KEY"
    path = RUNPOD_CONFIG_FILE.expanduser()
    try:
        text = path.read_bytes()
    except OSError:
        return None, ""
    import tomllib

    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ConfigError(f"{RUNPOD_CONFIG_FILE} is not valid TOML; fix it or "
                          f"{API_KEY_HOW}") from None
    lowered = {str(k).lower(): v for k, v in data.items()}
    key = lowered.get("apikey")
    if not isinstance(key, str) or not key.strip():
        default = lowered.get("default")
        key = default.get("api_key") if isinstance(default, dict) else None
    if isinstance(key, str) and key.strip():
        return key.strip(), str(RUNPOD_CONFIG_FILE)
    return None, ""


def _check_target(value: str, where: str) -> str:
    if value not in TARGETS:
        raise ConfigError(f"{where}={value!r}: the target must be one of {', '.join(TARGETS)}")
    return value


def secret_source() -> tuple[bytes, Path | None]:
    """The signing secret, and the file it lives in when it comes from one.

    ``configure(secret=)`` or ``$RPREMOTE_SECRET`` win; otherwise a per-user secret is
    created once (0600) in the data directory.
    """
    if _settings.secret:
        return _settings.secret.encode(), None
    if os.environ.get("RPREMOTE_SECRET"):
        return os.environ["RPREMOTE_SECRET"].encode(), None
    path = data_dir() / SECRET_FILE
    try:
        return _read_secret(path), path
    except FileNotFoundError:
        private_dir(path.parent)  # 0700 (tightened if an older rpremote made it wider)
        # Write a private temp file, then link it into place: whoever links first wins and
        # nobody ever reads a half-written secret.
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return _read_secret(path), path


_secret_read: tuple[tuple, bytes] | None = None


def _read_secret(path: Path) -> bytes:
    """The secret in ``path``, read again only when the file changed (it is asked twice a
    call; a replaced or rewritten file has another inode, size or mtime)."""
    global _secret_read
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if _secret_read is not None and _secret_read[0] == key:
        return _secret_read[1]
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"the signing secret file {path} is empty; delete it to make a new one")
    _secret_read = (key, value.encode())
    return _secret_read[1]
