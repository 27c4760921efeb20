"""What a RunPod endpoint's workers run: the image, its start command, and what it installs.

The default is an official RunPod image whose Python matches the client's (``platform.
OFFICIAL_IMAGES``): nothing to build or publish. Its start command is ``bootstrap.py``, which
installs rpremote at the client's exact version, with its dependencies at the client's own
versions, before starting the executor. rpremote itself comes from the package index when
this version was installed from one, else from the client: a wheel built here from the
installed package (deterministic, so each version is one content address) and put in the
offload store once. An image with rpremote baked in (``docker/Dockerfile``, or
``rpremote/worker:pyX.Y``) starts the executor directly.

``image=`` on ``@remote``, ``configure(image=...)`` and ``RPREMOTE_IMAGE`` choose another.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from .. import platform as rp
from ..errors import ConfigError, VersionMismatch
from ..versions import normalize_name

IMAGE_SETTING = "RPREMOTE_IMAGE"
BOOTSTRAP_SETTING = "RPREMOTE_BOOTSTRAP"  # bootstrap.SETTING (that file imports nothing)
# Where rpremote comes from on a bare image: "store" (the client's build), "index", or "auto"
# (the index when this version was installed from one, else the store).
SOURCE_SETTING = "RPREMOTE_BOOTSTRAP_FROM"
_WHEEL_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", "labextension"}
_WORKER_TAG = re.compile(rf"^{re.escape(rp.WORKER_IMAGE_REPO)}:py(\d+\.\d+)")


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class ImageChoice:
    image: str
    source: str  # where the choice comes from, for messages
    python: str | None  # the image's Python minor when known
    bootstraps: bool  # True: a bare image whose start command installs rpremote


def choose(image: str | None) -> ImageChoice:
    """The image for an endpoint: ``image`` (from ``@remote``), else ``configure(image=)``,
    else ``$RPREMOTE_IMAGE``, else the official image for this Python. Raises
    ``VersionMismatch`` before anything is sent when the image's Python is not this one."""
    python = python_minor()
    source = "image= on @remote"
    if not image:
        image, source = config.settings().image, "configure(image=...)"
    if not image:
        image, source = os.environ.get(IMAGE_SETTING, "").strip() or None, f"${IMAGE_SETTING}"
    if not image:
        official = rp.OFFICIAL_IMAGE_OF_PYTHON.get(python)
        if official is None:
            known = ", ".join(f"{i.python} ({i.tag})" for i in rp.OFFICIAL_IMAGES)
            raise VersionMismatch(
                f"no official RunPod image has Python {python} (this client's); those known "
                f"have {known}. Build one with rpremote baked in (docker/Dockerfile, "
                f"PYTHON={python}) and pass image=..., or use a client with one of those")
        return ImageChoice(official.tag, "the default for this Python", python, True)
    official = rp.official_image(image)
    if official is not None:
        chosen = ImageChoice(official.tag, source, official.python, True)
    else:
        m = _WORKER_TAG.match(image)
        chosen = ImageChoice(image, source, m.group(1) if m else None, False)
    if chosen.python and chosen.python != python:
        raise VersionMismatch(
            f"the image {chosen.image} ({chosen.source}) runs Python {chosen.python} and this "
            f"client Python {python}; functions travel by value and need the same minor "
            f"version. Nothing was sent: choose an image with Python {python}"
            + (f" ({rp.OFFICIAL_IMAGE_OF_PYTHON[python].tag})"
               if python in rp.OFFICIAL_IMAGE_OF_PYTHON else ""))
    return chosen


def start_command() -> str:
    """The bootstrap as one ``python -c`` command line (compressed: it travels in every
    endpoint create and PATCH, whose bodies RunPod caps at 100 KB)."""
    source = (Path(__file__).resolve().parent.parent / "bootstrap.py").read_bytes()
    packed = base64.b64encode(zlib.compress(source, 9)).decode()
    code = f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"
    return f'python -c "{code}"'


def _extras_of(requirement: str) -> tuple[str, set[str], str]:
    """``(name, extras, marker)`` of one Requires-Dist line."""
    text, _, marker = requirement.partition(";")
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", text)
    if not m:
        return "", set(), marker
    extras = {normalize_name(e) for e in (m.group(2) or "").split(",") if e.strip()}
    return m.group(1), extras, marker


def _wanted(marker: str, extras: set[str]) -> bool:
    """Whether a dependency applies: those behind an extra only when that extra is asked for;
    other markers (platform, Python) are left to pip, so the pin is offered either way."""
    named = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    return not named or any(normalize_name(e) in extras for e in named)


@functools.lru_cache(maxsize=1)
def pinned_requirements() -> tuple[str, ...]:
    """rpremote's dependencies, all the way down, at the versions this client has:
    ``("anyio==4.6.0", ...)``. Those not installed here are left out (pip picks them)."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [("rpremote", set())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (normalize_name(name), frozenset(extras)) in seen:
            continue
        seen.add((normalize_name(name), frozenset(extras)))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if normalize_name(name) != "rpremote":
            pins[normalize_name(name)] = f"{normalize_name(name)}=={dist.version}"
        for requirement in dist.requires or ():
            dep, dep_extras, marker = _extras_of(requirement)
            if dep and _wanted(marker, extras):
                todo.append((dep, dep_extras))
    return tuple(sorted(pins.values()))


def installed_from_index() -> bool:
    """Whether this rpremote was installed from a package index (PEP 610: a local or
    editable install records a ``direct_url.json``), so workers can get it from there."""
    try:
        dist = md.distribution("rpremote")
    except md.PackageNotFoundError:
        return False
    return dist.read_text("direct_url.json") is None


def wants_wheel() -> bool:
    source = os.environ.get(SOURCE_SETTING, "auto").strip().lower() or "auto"
    if source not in ("auto", "store", "index"):
        raise ConfigError(f"{SOURCE_SETTING}={source!r}: use store, index or auto")
    return source == "store" or (source == "auto" and not installed_from_index())


@functools.lru_cache(maxsize=1)
def client_wheel() -> tuple[str, bytes]:
    """``(file name, bytes)`` of a wheel of the rpremote this process runs: its package files
    (no caches, no JupyterLab assets) and metadata, with fixed dates and order, so the same
    code always makes the same bytes, hence one content address per version."""
    from .. import __version__

    package = Path(__file__).resolve().parent.parent
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package.parent)
        if (path.is_dir() or _SKIP_DIRS & set(relative.parts)
                or path.suffix in (".pyc", ".pyo")):
            continue
        files.append((relative.as_posix(), path.read_bytes()))
    info = f"rpremote-{__version__}.dist-info"
    try:
        requires = md.distribution("rpremote").requires or []
    except md.PackageNotFoundError:
        requires = []
    metadata = "".join([
        "Metadata-Version: 2.1\n", "Name: rpremote\n", f"Version: {__version__}\n",
        "Requires-Python: >=3.11\n", *(f"Requires-Dist: {r}\n" for r in requires)])
    files.append((f"{info}/METADATA", metadata.encode()))
    files.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: rpremote\n"
                  b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = io.StringIO()
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{name},sha256={digest},{len(data)}\n")
    record.write(f"{info}/RECORD,,\n")
    files.append((f"{info}/RECORD", record.getvalue().encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            entry = zipfile.ZipInfo(name, _WHEEL_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    return f"rpremote-{__version__}-py3-none-any.whl", out.getvalue()


def bootstrap_plan(store: Any | None) -> tuple[dict[str, Any], tuple[str, bytes] | None]:
    """The ``RPREMOTE_BOOTSTRAP`` plan and the wheel to put in ``store`` first (or None when
    rpremote comes from the index). No store and a version the index lacks: ``ConfigError``
    before anything is created."""
    from .. import __version__

    plan: dict[str, Any] = {"version": __version__, "python": python_minor(),
                            "requirements": list(pinned_requirements()), "wheel": None}
    if not wants_wheel():
        return plan, None
    if store is None:
        raise ConfigError(
            f"rpremote {__version__} here was installed from a local copy, not a package "
            "index, so a bare RunPod image cannot pip install it; nothing was created. Give "
            "the client a store to ship itself through (RPREMOTE_STORE=s3://BUCKET[/PREFIX] "
            "or runpod-volume://VOLUME_ID), or use an image with rpremote baked in "
            f"(docker/Dockerfile; image=... or ${IMAGE_SETTING}), or {SOURCE_SETTING}=index "
            "if this exact version is on your index")
    name, data = client_wheel()
    plan["wheel"] = {"name": name, "sha256": hashlib.sha256(data).hexdigest()}
    return plan, (name, data)


def upload_wheel(store: Any, wheel: tuple[str, bytes], say: Any) -> None:
    """Put this rpremote's wheel in ``store`` under its sha256, unless it is there already
    (once per version; ``has`` also keeps it from a sweep)."""
    name, data = wheel
    digest = hashlib.sha256(data).hexdigest()
    if not store.has(digest):
        say(f"uploading rpremote's own build ({name}, {len(data) // 1024} KiB) to "
            f"{store.location.url()} for the workers to install (once per version)")
        store.put(digest, data)


def plan_env(plan: dict[str, Any]) -> dict[str, str]:
    return {BOOTSTRAP_SETTING: json.dumps(plan, separators=(",", ":"), sort_keys=True)}
