"""The emulator's API key: given, from the environment, or generated and kept with 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..private import tighten_file, write_private

KEY_ENV = "RPREMOTE_API_KEY"


def resolve_api_key(explicit: str | None, state_dir: Path) -> tuple[str, str]:
    """(key, where it came from). The key itself is never printed or logged."""
    if explicit:
        return explicit, "--api-key"
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV], f"${KEY_ENV}"
    path = state_dir / "api_key"
    if path.exists():
        tighten_file(path)
        return path.read_text().strip(), f"{path} (stored)"
    key = "rpa_" + secrets.token_urlsafe(32)
    write_private(path, key + "\n")
    return key, f"{path} (generated)"

