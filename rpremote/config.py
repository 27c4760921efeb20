"""User settings: which target, which signing secret, how chatty. ``rpremote.configure`` sets them.

Precedence: ``configure(...)`` > environment (``RPREMOTE_TARGET``, ``RPREMOTE_SECRET``) >
defaults. The signing secret defaults to one generated per user and kept 0600 in the data
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
    extra: dict[str, Any] = field(default_factory=dict)


_settings = Settings()


def configure(
    target: str | None = None,
    *,
    secret: str | None = None,
    quiet: bool | None = None,
    reporter: Any = None,
) -> None:
    """Choose the target and signing secret for this process.

    ``target``: ``"local"`` (default; the endpoint emulator on this machine), ``"runpod"``
    (RunPod Serverless) or ``"pod"`` (a RunPod Pod). ``quiet=True`` hides the status lines
    on stderr (remote output is still shown). ``reporter`` replaces the terminal reporter.
    """
    global _settings
    if target is not None:
        _check_target(target, "configure(target=...)")
    changes = {k: v for k, v in dict(target=target, secret=secret, quiet=quiet,
                                     reporter=reporter).items() if v is not None}
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
    if not path.exists():
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
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"the signing secret file {path} is empty; delete it to make a new one")
    return value.encode(), path
