"""Requirement strings, Debian package names and version comparison, shared by both sides.

The client validates ``dependencies=`` / ``system_dependencies=`` at decoration with these
rules, and the worker uses the same ones to decide whether what it already has will do. A
small PEP 440 subset on purpose (release numbers, the usual operators): where it cannot tell,
the answer is "not satisfied", and the installer (pip) decides. Stdlib only, imported by
``import rpremote`` and by the worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_OP = r"===|==|!=|~=|>=|<=|>|<"
_CLAUSE_RE = re.compile(rf"\s*({_OP})\s*({_VERSION})\s*")
_REQUIREMENT_RE = re.compile(
    rf"\s*({_NAME})\s*(\[\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\])?\s*"
    rf"((?:{_OP})\s*{_VERSION}(?:\s*,\s*(?:{_OP})\s*{_VERSION})*)?\s*"
)
# Debian policy §5.6.1: lower case letters, digits, + - . ; at least two characters.
_DEBIAN_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_RELEASE_RE = re.compile(r"v?(\d+(?:\.\d+)*)")

_DEPS_HINT = ("write requirement strings like 'numpy', 'numpy==2.1.3' or 'httpx>=0.27,<1' "
              "(a name, optional [extras], optional version clauses)")


def normalize_name(name: str) -> str:
    """PEP 503 normal form: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """``name[extras] clause, clause``: what ``dependencies=`` accepts."""

    name: str
    extras: str  # "[a,b]" or ""
    clauses: tuple[tuple[str, str], ...]  # (operator, version)

    @property
    def key(self) -> str:
        return normalize_name(self.name)

    @property
    def pinned(self) -> str | None:
        """The version of a single ``==X`` clause without wildcards, else None."""
        if len(self.clauses) == 1 and self.clauses[0][0] == "==" and "*" not in self.clauses[0][1]:
            return self.clauses[0][1]
        return None

    def __str__(self) -> str:
        return self.name + self.extras + ",".join(op + v for op, v in self.clauses)


def parse_requirement(text: str) -> Requirement:
    """Parse one requirement string; ``ValueError`` says what is wrong."""
    m = _REQUIREMENT_RE.fullmatch(text)
    if not m:
        if text.lstrip().startswith("-"):
            raise ValueError(f"{text!r}: pip options are not accepted here; an index or "
                             f"find-links goes in env= (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, "
                             f"PIP_FIND_LINKS); {_DEPS_HINT}")
        if "@" in text or "://" in text:
            raise ValueError(f"{text!r}: direct URLs are not supported; {_DEPS_HINT}")
        if ";" in text:
            raise ValueError(f"{text!r}: environment markers (;) are not supported; {_DEPS_HINT}")
        raise ValueError(f"{text!r} is not a requirement: {_DEPS_HINT}")
    name, extras, spec = m.group(1), m.group(2) or "", m.group(3) or ""
    extras = extras.replace(" ", "")
    clauses = tuple(tuple(_CLAUSE_RE.fullmatch(c).groups())  # type: ignore[union-attr]
                    for c in spec.split(",")) if spec else ()
    return Requirement(name, extras, clauses)


def _listed(value: Any, option: str, what: str, example: str) -> list | tuple:
    """``value`` when it is a list or tuple (None: empty); else a ConfigError saying how."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError(f"{option} is a list of {what}; wrap it in a list: {option}=[{value!r}]")
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{option} is a list of {what} like {example}; got {type(value).__name__}")
    return value


def check_dependencies(value: Any) -> tuple[Requirement, ...]:
    """``dependencies=`` as requirements, one per distribution; ConfigError says what to write."""
    out: dict[str, Requirement] = {}
    for dep in _listed(value, "dependencies", "requirement strings", "['numpy>=2']"):
        if not isinstance(dep, str) or not dep.strip():
            raise ConfigError(f"each dependency is a non-empty requirement string like "
                              f"'numpy>=2'; got {dep!r}")
        try:
            req = parse_requirement(dep)
        except ValueError as e:
            raise ConfigError(f"dependencies: {e}") from None
        if req.key in out:
            raise ConfigError(f"dependencies name {req.name!r} twice ({out[req.key]} and {req}); "
                              f"write one requirement per package, e.g. '{req.name}>=1,<3'")
        out[req.key] = req
    return tuple(out.values())


def check_system_packages(value: Any) -> tuple[str, ...]:
    """``system_dependencies=`` as Debian package names; ConfigError says what to write."""
    out: dict[str, None] = {}
    for name in _listed(value, "system_dependencies", "Debian package names",
                        "['ffmpeg', 'libsndfile1']"):
        if not isinstance(name, str) or not _DEBIAN_RE.fullmatch(name):
            raise ConfigError(f"system_dependencies: {name!r} is not a Debian package name "
                              f"(lower-case letters, digits, '+', '-', '.'; e.g. 'ffmpeg', "
                              f"'libgl1'); versions and apt options are not accepted")
        out[name] = None
    return tuple(out)


# -- versions ---------------------------------------------------------------------------------


def release(version: str) -> tuple[int, ...] | None:
    """``"2.4.6rc1"`` -> ``(2, 4, 6)``; None when there is no leading release number."""
    m = _RELEASE_RE.match(version.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def _clause_holds(have: str, op: str, want: str) -> bool | None:
    """Whether ``have`` satisfies ``op want``; None when this subset cannot tell."""
    if op == "===":
        return have == want
    if want.endswith(".*") and op in ("==", "!="):
        prefix, mine = release(want[:-2]), release(have)
        if prefix is None or mine is None:
            return None
        same = mine[:len(prefix)] + (0,) * max(0, len(prefix) - len(mine)) == prefix
        return same if op == "==" else not same
    mine, theirs = release(have), release(want)
    if mine is None or theirs is None:
        return None
    c = _cmp(mine, theirs)
    if op == "==":
        return c == 0
    if op == "!=":
        return c != 0
    if op == ">=":
        return c >= 0
    if op == "<=":
        return c <= 0
    if op == ">":
        return c > 0
    if op == "<":
        return c < 0
    if op == "~=":  # ~=2.4.1 means >=2.4.1, ==2.4.*
        if len(theirs) < 2:
            return None
        return c >= 0 and mine[:len(theirs) - 1] == theirs[:-1]
    return None


def satisfies(have: str, req: Requirement) -> bool:
    """Whether an installed ``have`` will do for ``req``.

    A pin (``==X.Y.Z``, what detection writes) is met by the same major.minor: the worker's
    torch 2.5.1 serves a client with 2.5.0, and is never reinstalled for a patch release.
    Other clauses are evaluated as written.
    """
    pin = req.pinned
    if pin is not None:
        mine, theirs = release(have), release(pin)
        return mine is not None and theirs is not None and mine[:2] == theirs[:2]
    return all(_clause_holds(have, op, want) is True for op, want in req.clauses)


def same_series(a: str, b: str) -> bool:
    """Same major version (same major.minor for 0.x): what by-reference pickles need."""
    ra, rb = release(a), release(b)
    if ra is None or rb is None:
        return a == b
    ra, rb = ra + (0,), rb + (0,)
    return ra[0] == rb[0] and (ra[0] != 0 or ra[1] == rb[1])


def same_minor(a: str, b: str) -> bool:
    ra, rb = release(a), release(b)
    if ra is None or rb is None:
        return a == b
    return (ra + (0,))[:2] == (rb + (0,))[:2]
