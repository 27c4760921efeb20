"""The emulator's API key: given, from the environment, or generated and kept with 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_ENV = "RPREMOTE_API_KEY"


def resolve_api_key(explicit: str | None, state_dir: Path) -> tuple[str, str]:
    """(key, where it came from). The key itself is never printed or logged."""
    if explicit:
        return explicit, "--api-key"
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV], f"${KEY_ENV}"
    path = state_dir / "api_key"
    if path.exists():
        return path.read_text().strip(), f"{path} (stored)"
    key = "rpa_" + secrets.token_urlsafe(32)
    write_private(path, key + "\n")
    return key, f"{path} (generated)"


def write_private(path: Path, text: str) -> None:
    """Write a file only the user can read, never letting it exist with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
