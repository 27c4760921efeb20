"""rpremote: run Python on RunPod GPUs from a notebook or a script.

This module stays light: it must not import runpod, torch, ipywidgets, jupyter_server or
httpx (the HTTP side loads on the first remote call).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .config import configure  # noqa: E402
from .retries import Retries  # noqa: E402
from .progress_updates import Progress, progress  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError, DependencyInstallError, EmulatorStopped, JobCancelled, JobExpired, JobFailed,
    JobTimeout, OutcomeUnknown, RemoteError, RemoteKeyboardInterrupt, RemoteSystemExit,
    RemoteTraceback, ResultPicklingError, RpremoteError, SignatureError, TargetNotAvailable,
    UnpicklableError, VersionMismatch, WorkerLost,
)


def load_ipython_extension(ipython) -> None:
    """``%load_ext rpremote``: the ``%%runpod`` cell magic."""
    from .notebook import load_ipython_extension as load

    load(ipython)


if TYPE_CHECKING:
    from .api import RemoteFunction, remote
    from .job import Job


def __getattr__(name: str):
    # Imported on first use: ``Job`` brings cloudpickle, ``remote`` the capture and resource
    # checks (~45 ms), which the emulator and the workers, importing this package, never use.
    if name == "Job":
        from .job import Job
        return Job
    if name in ("remote", "RemoteFunction"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'rpremote' has no attribute {name!r}")


__all__ = [
    "remote", "RemoteFunction", "Job", "Retries", "configure", "progress", "Progress",
    "RpremoteError", "ConfigError", "TargetNotAvailable", "UnpicklableError", "SignatureError",
    "VersionMismatch", "DependencyInstallError", "RemoteError", "RemoteTraceback", "RemoteSystemExit",
    "RemoteKeyboardInterrupt", "ResultPicklingError", "WorkerLost", "JobFailed", "JobTimeout",
    "JobCancelled", "JobExpired", "OutcomeUnknown", "EmulatorStopped", "__version__",
]
