"""Exceptions rpremote raises, shared by the client and the executor.

Light on purpose: imported by ``import rpremote`` and by the worker.
"""

from __future__ import annotations


class RpremoteError(Exception):
    """Base of every error rpremote itself raises."""


class ConfigError(RpremoteError, ValueError):
    """A setting is wrong; raised before anything is sent. The message says how to fix it."""


class TargetNotAvailable(RpremoteError):
    """The chosen target exists in the design but cannot be used (yet, or here)."""


class UnpicklableError(RpremoteError, TypeError):
    """Something that must travel cannot be pickled; raised before anything is sent.

    ``path`` says where it sits, e.g. ``args[0].conn._sock``; ``type_name`` what it is.
    """

    def __init__(self, path: str, type_name: str, reason: str):
        self.path = path
        self.type_name = type_name
        self.reason = reason
        super().__init__(f"cannot pickle {path}: {type_name} ({reason})")


class SignatureError(RpremoteError):
    """A request or result is unsigned, tampered with, or signed with another secret."""


class VersionMismatch(RpremoteError):
    """The worker's Python, cloudpickle, protocol or a package's version cannot run what the
    client sent. The message names both sides and how to make them match."""


class DependencyInstallError(RpremoteError):
    """The worker could not install a dependency (pip, apt) or a system package is missing.

    The message holds the installer's own error text ("No matching distribution found ...").
    """


class OffloadError(RpremoteError):
    """A big piece could not be put in or taken from the offload store; the message says why."""


class RemoteError(RpremoteError):
    """An exception raised remotely that cannot be re-created here as its own type.

    Carries the remote type name, message and formatted traceback.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "", module: str = ""):
        self.type_name = type_name
        self.module = module
        self.message = message
        self.remote_traceback = traceback
        super().__init__(f"{type_name}: {message}" if message else type_name)

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a re-raised remote exception: the traceback on the worker.

    Shown by Python as "The above exception was the direct cause of ...", as
    ``concurrent.futures`` does for process pools.
    """

    def __init__(self, traceback: str):
        self.traceback = traceback
        super().__init__(traceback)

    def __str__(self) -> str:
        return '\n"""\n' + self.traceback.rstrip() + '\n"""'


class RemoteSystemExit(RemoteError):
    """The remote function called ``sys.exit()`` (or raised ``SystemExit``)."""


class RemoteKeyboardInterrupt(RemoteError):
    """``KeyboardInterrupt`` was raised inside the remote function."""


class ResultPicklingError(RemoteError):
    """The remote function returned, but its value could not be pickled to send back."""


class WorkerLost(RemoteError):
    """The worker running the job died (killed, out of memory, machine lost)."""


class JobFailed(RpremoteError):
    """The platform reports the job failed without an rpremote result (e.g. refused input)."""

    def __init__(self, message: str, job_id: str | None = None, status: str | None = None,
                 http_status: int | None = None):
        self.job_id = job_id
        self.status = status
        self.http_status = http_status  # when an HTTP error said it
        super().__init__(message)


class JobTimeout(JobFailed):
    """The job ran past its execution timeout (status TIMED_OUT)."""


class JobCancelled(JobFailed):
    """The job was cancelled."""


class JobExpired(JobFailed):
    """The platform no longer has the job: its ``ttl`` ran out, or its result outlived retention."""


class OutcomeUnknown(JobFailed):
    """The server that held the job stopped (the local emulator was killed, ran out of memory,
    ...) before it said how the job ended: whether the function ran, and what it returned,
    cannot be known. It is not sent again by itself, since it may have run."""


class EmulatorStopped(RpremoteError):
    """The local emulator's process is gone, so a request to it cannot be answered.

    ``sent`` is False when the request never reached it (sending it elsewhere is safe), None
    when it may have been received before the emulator stopped.
    """

    def __init__(self, where: str, sent: bool | None):
        self.where = where
        self.sent = sent
        super().__init__(
            f"{where} has stopped; "
            + ("nothing was sent to it" if sent is False
               else "the request may have reached it before it stopped")
            + " (the next call starts a new emulator)")


# -- RunPod's control plane (REST v2: endpoints, templates, network volumes, catalog) ----------


class ControlPlaneError(RpremoteError):
    """RunPod's control plane refused or failed a request. Carries the RFC 9457 problem:
    ``status``, ``title``, ``detail``, the validator's ``errors`` (422), and ``request_id``
    (``x-request-id``). Never carries the API key."""

    def __init__(self, message: str, *, status: int | None = None, title: str = "",
                 detail: str = "", errors: tuple[str, ...] = (), request_id: str | None = None,
                 method: str = "", path: str = ""):
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = tuple(errors)
        self.request_id = request_id
        self.method = method
        self.path = path
        super().__init__(message)


class ApiKeyError(ControlPlaneError, ConfigError):
    """No RunPod API key, or the control plane refused it (401) or it lacks access (403).
    Raised before anything is created; the message says how to set the key, never the key."""


class ResourceNotFound(ControlPlaneError):
    """404: no such endpoint, template or volume (or not this key's)."""


class InvalidRequest(ControlPlaneError):
    """400 (a business rule, e.g. no capacity or an in-use delete) or 422 (the body does not
    fit the schema: ``errors`` lists each field's message)."""


class ResourceConflict(ControlPlaneError):
    """409: the request conflicts with the resource's state (e.g. a template name taken)."""


class RateLimited(ControlPlaneError):
    """429 after the retries: ``retry_after`` seconds until the window resets."""

    retry_after: float | None = None


class ControlPlaneUnavailable(ControlPlaneError):
    """The control plane could not be reached, or kept failing (5xx), through the retries."""


class CreateOutcomeUnknown(ControlPlaneError):
    """A create (POST) broke off after it was sent: it may or may not have been made. Creates
    are not idempotent, so it is not sent again blindly: list and match first
    (``create_or_find`` does)."""


class WorkersUnhealthy(RpremoteError):
    """An endpoint's workers cannot start (an image that cannot be pulled, a start command
    that fails): the job waiting for them was cancelled; the message says why and what to do."""
