"""What the executor's process does around the ``runpod`` SDK's import to start fast.

``import runpod`` (1.12) takes ~1.5 s, ~1.1 s of it in ``runpod/serverless/utils/rp_debugger``,
which calls ``cpuinfo.get_cpu_info()`` at import: py-cpuinfo probes the CPU in a subprocess
(cpuid, several readers), only so the debugger's output can name the processor
(``PROCESSOR = get_cpu_info()["brand_raw"]``). ``quick_cpu_info`` answers that one call from
``/proc/cpuinfo`` (the "model name" line py-cpuinfo itself reads on Linux), else
``platform.processor()``, and puts the real function back right after the import, so a job
that asks py-cpuinfo gets the full probe. Only the executor's process does this
(``worker.main``); nothing under site-packages is changed.

``SDK_DEPENDENCIES`` are the top-level modules of other distributions that ``import runpod``
imports, in its order: a worker template (``rpremote.local.worker_template``) imports them
ahead of time, and the worker's own ``import runpod`` then takes ~10 ms. ``runpod`` itself is
never imported ahead: its modules read the worker's environment at import
(``rp_job.JOB_GET_URL``, ``rp_http.JOB_DONE_URL``, the worker id, ...).
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from typing import Iterator

# Measured on runpod 1.12.0 (`import runpod`, then the new top-level names of sys.modules that
# are neither runpod's nor the standard library's). A name that is not installed is skipped;
# one that is, is imported by `import runpod` anyway (aiohttp's optional speedups included).
SDK_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "1.12.": (
        "multidict", "aiohttp", "attr", "yarl", "idna", "propcache", "brotli",
        "typing_extensions", "aiohappyeyeballs", "pycares", "aiodns", "frozenlist", "aiosignal",
        "urllib3", "charset_normalizer", "requests", "certifi", "cryptography", "paramiko",
        "invoke", "yaml", "bcrypt", "nacl", "tomli", "tomlkit", "backoff", "tqdm_loggable",
        "IPython", "traitlets", "pygments", "tqdm", "cpuinfo", "aiohttp_retry",
    ),
}


def sdk_dependencies(sdk_version: str) -> tuple[str, ...]:
    """The modules to import ahead of ``runpod`` of this version; none for an unchecked one."""
    for prefix, names in SDK_DEPENDENCIES.items():
        if sdk_version.startswith(prefix):
            return names
    return ()


def cpu_brand() -> str:
    """The processor's name as py-cpuinfo's ``brand_raw`` gives it on Linux, without probing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


@contextmanager
def quick_cpu_info() -> Iterator[None]:
    """Inside the block, ``cpuinfo.get_cpu_info()`` answers ``{"brand_raw": cpu_brand()}``."""
    try:
        import cpuinfo
    except ImportError:
        yield
        return
    real = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = lambda: {"brand_raw": cpu_brand()}
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = real
