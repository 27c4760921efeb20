"""Durations as people write them: ``90s``, ``30m``, ``2h``, ``7d``, ``2w`` or plain seconds.

Used by ``rpremote store sweep --older-than`` and a Pod's ``--idle-stop`` / ``--max-hours``.
Stdlib only (the emulator, which runs inside a Pod, uses it).
"""

from __future__ import annotations

import re

from .errors import ConfigError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def seconds(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or plain seconds -> seconds;
    ``ConfigError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text or ""))
    if not match:
        raise ConfigError(f"{text!r} is not a duration: a number with s, m, h, d or w "
                          "(90s, 30m, 12h, 7d)")
    return float(match[1]) * _UNITS[match[2]]
