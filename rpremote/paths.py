"""Where rpremote keeps per-user state."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$RPREMOTE_HOME``, else ``$XDG_DATA_HOME/rpremote``, else ``~/.local/share/rpremote``."""
    if os.environ.get("RPREMOTE_HOME"):
        return Path(os.environ["RPREMOTE_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rpremote"
