"""rpremote: run Python on RunPod GPUs from a notebook or a script.

This module stays light: it must not import runpod, torch, ipywidgets, jupyter_server or
httpx (the HTTP side loads on the first remote call).
"""

__version__ = "0.1.0"

from .api import RemoteFunction, remote  # noqa: E402
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


def __getattr__(name: str):
    if name == "Job":  # imported on first use: it brings cloudpickle
        from .job import Job
        return Job
    raise AttributeError(f"module 'rpremote' has no attribute {name!r}")


__all__ = [
    "remote", "RemoteFunction", "Job", "Retries", "configure", "progress", "Progress",
    "RpremoteError", "ConfigError", "TargetNotAvailable", "UnpicklableError", "SignatureError",
    "VersionMismatch", "DependencyInstallError", "RemoteError", "RemoteTraceback", "RemoteSystemExit",
    "RemoteKeyboardInterrupt", "ResultPicklingError", "WorkerLost", "JobFailed", "JobTimeout",
    "JobCancelled", "JobExpired", "OutcomeUnknown", "EmulatorStopped", "__version__",
]
