"""What ``@remote(gpu=..., workers=..., ...)`` asks for, checked and made canonical.

Checked at decoration time so that a typo costs no job and no money, and canonical so that two
functions with the same settings share one endpoint (``Resources.endpoint_name``) while any
difference gets its own. Stdlib only: imported by ``import rpremote``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from . import platform as rp
from .errors import ConfigError

# Our own caps, not platform limits (§3.1 only says ≥ 1 / ≥ 0): they catch typos such as
# gpu_count=80 or workers=1000 before they can cost money.
GPU_COUNT_MAX = 8
WORKERS_MAX_LIMIT = 100

_GPU_HINT = ("use a pool id like ADA_24, a GPU type like 'NVIDIA GeForce RTX 4090', "
             "a list of them, or None for CPU")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _gpu_names() -> tuple[dict[str, str], dict[str, str]]:
    """Lower-cased name -> canonical id, and lower-cased name -> spelling shown in hints."""
    names = [(p, p) for p in rp.GPU_POOLS]
    names += [(t.id, t.id) for t in rp.GPU_TYPES.values()]
    names += [(t.display, t.id) for t in rp.GPU_TYPES.values()]
    canonical = {name.lower(): target for name, target in names}
    spelling = {name.lower(): name for name, _ in names}
    return canonical, spelling


_CANONICAL, _SPELLING = _gpu_names()


def _resolve_one(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"gpu must be a string, a list of strings, or None for CPU; "
                          f"got {type(value).__name__} {value!r}: {_GPU_HINT}")
    key = " ".join(value.split()).lower()
    if key in _CANONICAL:
        return _CANONICAL[key]
    if key == "any":
        raise ConfigError("gpu='any' is not supported: whether RunPod accepts it is not "
                          "documented (§3.4); list the pools you accept, e.g. "
                          "['AMPERE_24', 'ADA_24']")
    close = difflib.get_close_matches(key, list(_CANONICAL), n=3)
    hint = f"; did you mean {', '.join(repr(_SPELLING[c]) for c in close)}?" if close else ""
    raise ConfigError(f"unknown gpu {value!r}{hint} ({_GPU_HINT})")


def resolve_gpu(value: Any) -> tuple[str, ...]:
    """Canonical GPU choices for ``value``: ``()`` for CPU, else pool ids and type ids, in order.

    Pool ids stay pool ids and display names become type ids, because the platform takes both
    (pools via ``gpu.pools``, types via ``gpuTypeIds``, §3.1) and each has its own meaning.
    """
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"gpu=[] names no GPU: {_GPU_HINT}")
        return tuple(dict.fromkeys(_resolve_one(v) for v in value))
    return (_resolve_one(value),)


def _pool_of(choice: str) -> rp.GpuPool | None:
    """The pool a choice runs on: itself if it is a pool, else the pool of the type, if any."""
    if choice in rp.GPU_POOLS:
        return rp.GPU_POOLS[choice]
    pool = rp.GPU_TYPES[choice].pool
    return rp.GPU_POOLS[pool] if pool else None


@dataclass(frozen=True)
class Resources:
    """Canonical, validated endpoint settings; build with ``make_resources``.

    Dependencies are not endpoint settings: they travel with each request and the worker
    installs them (``capture/requirements.py``), so functions that need different packages
    still share one endpoint and its warm workers.
    """

    gpu: tuple[str, ...]
    gpu_count: int
    workers_min: int
    workers_max: int
    idle_timeout: int
    env: tuple[tuple[str, str], ...]

    @functools.cached_property  # asked on every call; a frozen instance's answer never changes
    def endpoint_name(self) -> str:
        """``rpremote-<slug>-<8 hex>``: the same settings always give the same endpoint.

        The hash covers every field, so changing any setting moves to a fresh endpoint instead
        of silently reconfiguring one another function may be using.
        """
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
        slug = "cpu"
        if self.gpu:
            slug = re.sub(r"[^a-z0-9]+", "-", self.gpu[0].lower()).strip("-")[:24].strip("-")
        return f"rpremote-{slug}-{digest}"

    def describe(self) -> str:
        """Short human text such as ``CPU``, ``2 x ADA_24`` or ``ADA_24 | NVIDIA L4``."""
        if not self.gpu:
            return "CPU"
        text = " | ".join(self.gpu)
        if self.gpu_count == 1:
            return text
        return f"{self.gpu_count} x " + (f"({text})" if len(self.gpu) > 1 else text)

    @property
    def flex_usd_per_s(self) -> float | None:
        """Flex price per second of one worker (all its GPUs), or None for CPU or unknown prices.

        A worst-case estimate: RunPod may place the worker on any of the listed choices, so
        the dearest one is charged. A type costs what its pool costs (§6.1 prices pools).
        """
        if not self.gpu:
            return None
        prices = [pool.flex_usd_per_s if pool else None for pool in map(_pool_of, self.gpu)]
        if any(p is None for p in prices):
            return None
        return self.gpu_count * max(prices)  # type: ignore[type-var]

    @property
    def vram_gb(self) -> int | None:
        """VRAM per GPU that every choice guarantees (the smallest), or None for CPU or unknown.

        A type gives its own VRAM; a pool its minimum (§3.5 notes: pool VRAM is a floor).
        """
        sizes: list[int | None] = []
        for choice in self.gpu:
            if choice in rp.GPU_POOLS:
                sizes.append(rp.GPU_POOLS[choice].vram_gb)
            else:
                pool = _pool_of(choice)
                sizes.append(rp.GPU_TYPES[choice].vram_gb or (pool.vram_gb if pool else None))
        if not sizes or any(s is None for s in sizes):
            return None
        return min(sizes)  # type: ignore[type-var]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _workers(workers: Any) -> tuple[int, int]:
    if _is_int(workers):
        lo, hi = 0, workers
    elif isinstance(workers, (tuple, list)) and len(workers) == 2 and all(map(_is_int, workers)):
        lo, hi = workers
    else:
        raise ConfigError(f"workers is a max worker count like 3, or (min, max) like (0, 3); "
                          f"got {workers!r}")
    if not (0 <= lo <= hi and 1 <= hi <= WORKERS_MAX_LIMIT):
        raise ConfigError(f"workers=(min, max) needs 0 <= min <= max and 1 <= max <= "
                          f"{WORKERS_MAX_LIMIT}; got ({lo}, {hi})")
    return lo, hi


def _env(env: Any) -> tuple[tuple[str, str], ...]:
    if env is None:
        return ()
    if not isinstance(env, dict):
        raise ConfigError(f"env is a dict of str to str like {{'HF_HOME': '/tmp/hf'}}; "
                          f"got {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.fullmatch(key):
            raise ConfigError(f"env key {key!r} is not a variable name "
                              f"(letters, digits and _, not starting with a digit)")
        if key.upper().startswith("RUNPOD_"):
            raise ConfigError(f"env key {key!r} is refused: the platform sets RUNPOD_* "
                              f"variables itself (§2.10); pick another name")
        if not isinstance(value, str):
            raise ConfigError(f"env[{key!r}] must be a str; got {type(value).__name__} "
                              f"{value!r}: convert it, e.g. str(value)")
    return tuple(sorted(env.items()))


def make_resources(
    gpu: Any = None,
    gpu_count: int = 1,
    workers: int | tuple[int, int] | list[int] = (rp.WORKERS_MIN_DEFAULT, rp.WORKERS_MAX_DEFAULT),
    idle_timeout: int = rp.IDLE_TIMEOUT_DEFAULT_S,
    env: dict[str, str] | None = None,
) -> Resources:
    """Check ``@remote``'s settings and return them canonical; ConfigError says what to fix."""
    gpus = resolve_gpu(gpu)
    if not _is_int(gpu_count) or not 1 <= gpu_count <= GPU_COUNT_MAX:
        raise ConfigError(f"gpu_count is GPUs per worker, an int from 1 to {GPU_COUNT_MAX}; "
                          f"got {gpu_count!r}")
    if not gpus and gpu_count != 1:
        raise ConfigError(f"gpu_count={gpu_count} needs a gpu: pass gpu='ADA_24' (or another "
                          f"pool or type), or drop gpu_count for a CPU worker")
    lo, hi = _workers(workers)
    lo_s, hi_s = rp.IDLE_TIMEOUT_MIN_S, rp.IDLE_TIMEOUT_MAX_S
    if not _is_int(idle_timeout) or not lo_s <= idle_timeout <= hi_s:
        raise ConfigError(f"idle_timeout is whole seconds from {lo_s} to {hi_s} (§3.1); "
                          f"got {idle_timeout!r}")
    return Resources(gpu=gpus, gpu_count=gpu_count, workers_min=lo, workers_max=hi,
                     idle_timeout=idle_timeout, env=_env(env))
