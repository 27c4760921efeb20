"""Rich outputs from a worker on the client: where they go and their text form.

A display event carries a Jupyter mime bundle (``protocol.display_event``). In a notebook
kernel, ``rpremote.notebook`` sets ``publisher`` (``%load_ext rpremote``) and the bundle is
shown in the cell's output; elsewhere the terminal reporter prints ``describe(data)``.
The core never imports the notebook side: it only calls what was put here.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

# publisher(data, metadata, display_id=None, update=False): shows a bundle where the user looks.
publisher: Callable[..., None] | None = None

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml",
                "application/pdf")


def describe(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    """One line (or the text) for a terminal: an image as ``<image/png 640x480, 23 KB>``,
    anything else as its ``text/plain`` form."""
    for mime in _IMAGE_TYPES:
        if mime in data:
            return _image_note(mime, data[mime], (metadata or {}).get(mime))
    text = data.get("text/plain")
    if isinstance(text, str):
        return text
    kinds = ", ".join(sorted(data)) or "empty"
    return f"<display: {kinds}>"


def _image_note(mime: str, value: Any, md: Any) -> str:
    size = len(value) if isinstance(value, str) else 0
    raw_head = b""
    if mime in ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf") \
            and isinstance(value, str):
        size = len(value) * 3 // 4 - value[-2:].count("=")  # base64 text -> bytes
        try:
            raw_head = base64.b64decode(value[:32])
        except (binascii.Error, ValueError):
            pass
    dims = ""
    if isinstance(md, dict) and md.get("width") and md.get("height"):
        dims = f" {md['width']}x{md['height']}"
    elif raw_head[:8] == b"\x89PNG\r\n\x1a\n" and len(raw_head) >= 24:
        dims = f" {int.from_bytes(raw_head[16:20], 'big')}x{int.from_bytes(raw_head[20:24], 'big')}"
    return f"<{mime}{dims}, {_size(size)}>"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
