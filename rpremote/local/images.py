"""Container images, as the emulator runs them: each image name maps to a worker command.

RunPod pulls an endpoint's image and starts its command; the emulator has no containers, so
it keeps a table instead. rpremote's own worker image (``platform.worker_image``) for the
emulator's Python runs the executor; ``rpremote serve --image NAME=COMMAND`` adds any other
(``python`` in COMMAND is the emulator's interpreter). An image with no mapping is what an
image that cannot be pulled is on RunPod: the endpoint exists, its workers never start, and
the reason says what to do.

An official RunPod image (``platform.official_image``) runs for real: its workers run the
endpoint's own start command (``entrypoint`` + ``cmd``) in a clean environment standing for
the image -- a virtual environment of the emulator's interpreter with pip and none of this
machine's packages, made once under ``<state>/images/python<X.Y>/`` -- as a fresh container of
the image has its own Python and none of the client's packages. The environment is made by
the first worker that needs it (``python -m rpremote.local.images ensure ENV -- CMD...``, run
in the worker's process, so the server never waits for it and the worker counts as
initializing meanwhile), under a file lock and with a completion marker: concurrent workers
make it once, and a half-made one is made again.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import platform as rp

EXECUTOR_COMMAND = "python -m rpremote.executor"
_REGISTRY_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/",
                      "index.docker.io/")
ENV_COMPLETE = ".rpremote-complete"  # in a clean environment that is fully made


def parse_image_option(value: str) -> tuple[str, str]:
    """``NAME=COMMAND`` (one ``--image``) as ``(name, command)``; ValueError says what is wrong."""
    name, sep, command = value.partition("=")
    name = name.strip()
    if not sep or not name or not command.strip():
        raise ValueError(f"--image {value!r}: expected NAME=COMMAND, e.g. "
                         "--image myorg/worker:1.0='python handler.py'")
    if not shlex.split(command):
        raise ValueError(f"--image {value!r}: the command is empty")
    return name, command.strip()


def _normal(image: str) -> str:
    image = image.strip()
    for prefix in _REGISTRY_PREFIXES:
        if image.startswith(prefix):
            return image[len(prefix):]
    return image


def _repository(image: str) -> str:
    """The image name without its tag or digest (``host:5000/a/b:tag`` -> ``host:5000/a/b``)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def python_env_dir(state_dir: str | os.PathLike[str], python: str) -> Path:
    """Where the clean environment of images with Python ``python`` (``3.11``) is kept."""
    return Path(state_dir) / "images" / f"python{python}"


@dataclass(frozen=True)
class ImageStart:
    """How a worker of an image starts here: a command (and for an official image the clean
    environment it runs in), or why it cannot start."""

    command: str | None = None
    python_env: str | None = None
    error: str | None = None


class ImageMap:
    """Which command starts a worker of an image; an image that has none cannot start here."""

    def __init__(self, extra: dict[str, str] | None = None, python: str | None = None):
        self.python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        self.commands: dict[str, str] = {rp.worker_image(self.python): EXECUTOR_COMMAND}
        for name, command in (extra or {}).items():
            self.commands[_normal(name)] = command

    def _mapped(self, image: str) -> str | None:
        image = _normal(image)
        if image in self.commands:
            return self.commands[image]
        repo = _repository(image)
        if repo != image and repo in self.commands:
            return self.commands[repo]
        return None

    def start(self, image: str, start_command: list[str] | tuple[str, ...] = (),
              state_dir: str | os.PathLike[str] | None = None) -> ImageStart:
        """How a worker of ``image`` starts, for an endpoint whose start command
        (``entrypoint`` + ``cmd``) is ``start_command``. A mapping (``--image``, rpremote's
        worker image) wins and ignores the start command; an official RunPod image runs the
        start command in its clean environment (under ``state_dir``)."""
        mapped = self._mapped(image)
        if mapped is not None:
            return ImageStart(command=mapped)
        official = rp.official_image(_normal(image))
        if official is None:
            return ImageStart(error=self.why_not(image))
        if official.python != self.python:
            return ImageStart(error=(
                f"image {image} has Python {official.python}; this emulator runs Python "
                f"{self.python} and stands for images of its own Python only: run `rpremote "
                f"serve` with Python {official.python}, or use an image with Python "
                f"{self.python}"))
        if not start_command:
            return ImageStart(error=(
                f"image {image} has no start command on this endpoint: the image's own command "
                "starts no Serverless worker (on RunPod it starts the Pod services: Jupyter, "
                "SSH); give the endpoint a start command (args, or entrypoint/cmd) that starts "
                "the worker"))
        if state_dir is None:
            raise ValueError("an official image's clean environment needs the state directory")
        return ImageStart(command=shlex.join(start_command),
                          python_env=str(python_env_dir(state_dir, official.python)))

    def command(self, image: str, start_command: list[str] | tuple[str, ...] = (),
                state_dir: str | os.PathLike[str] | None = None) -> str | None:
        """The worker command of ``image``: its exact name first, then a mapping given without
        a tag (``--image myorg/worker=...`` serves every tag of myorg/worker), then an official
        image's start command; None when it cannot start (``why_not`` says why)."""
        return self.start(image, start_command, state_dir or ".").command

    def why_not(self, image: str, start_command: list[str] | tuple[str, ...] = ()) -> str:
        """What a worker of an unmapped image says, in the words of a failed pull."""
        official = rp.official_image(_normal(image))
        if official is not None and self._mapped(image) is None:
            error = self.start(image, start_command, ".").error
            if error:
                return error
        if _repository(_normal(image)) == rp.WORKER_IMAGE_REPO:
            todo = (f"this emulator runs Python {self.python}, so it serves "
                    f"{rp.worker_image(self.python)}; for {image}, start it with --image "
                    f"{image}='/path/to/pythonX.Y -m rpremote.executor'")
        else:
            todo = (f"start the emulator with --image {image}=COMMAND, the command that starts "
                    "one worker of this image (e.g. 'python handler.py')")
        known = sorted(self.commands) + [f"the official RunPod image(s) with Python "
                                         f"{self.python}"]
        return (f"failed to pull image {image}: the emulator has no command for it (it knows "
                f"{', '.join(known)}); {todo}")


# -- the clean environment ------------------------------------------------------------------------

def ensure_python_env(env_dir: str | os.PathLike[str], say=None) -> Path:
    """Make the clean environment at ``env_dir`` unless it is complete: a virtual environment
    of this interpreter's base Python, with pip (ensurepip), without system site-packages.
    Under a file lock next to it; a directory without the completion marker (a creation that
    was interrupted) is removed and made again. Returns ``env_dir``."""
    import venv

    from ..private import private_dir, private_file

    env_dir = Path(env_dir)
    marker = env_dir / ENV_COMPLETE
    if marker.exists():
        return env_dir
    private_dir(env_dir.parent)
    lock_path = env_dir.parent / f".{env_dir.name}.lock"
    with open(private_file(lock_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists():
                return env_dir
            if say:
                say(f"creating the clean Python environment {env_dir} (once; the image's own "
                    "Python, with pip and no packages of this machine)")
            if env_dir.exists() or env_dir.is_symlink():
                shutil.rmtree(env_dir, ignore_errors=True)
            venv.EnvBuilder(with_pip=True, symlinks=True, clear=True).create(env_dir)
            os.chmod(env_dir, 0o700)
            marker.write_text("complete\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return env_dir


def _main(argv: list[str]) -> int:
    """``ensure ENV_DIR -- CMD ARGS...``: make the clean environment, then become CMD."""
    if len(argv) < 4 or argv[0] != "ensure" or argv[2] != "--":
        print("usage: python -m rpremote.local.images ensure ENV_DIR -- CMD [ARGS...]",
              file=sys.stderr)
        return 2
    env_dir, cmd = argv[1], argv[3:]

    def say(text: str) -> None:
        print(f"[rpremote] {text}", file=sys.stderr, flush=True)

    try:
        ensure_python_env(env_dir, say=say)
    except Exception as e:  # the worker's log says why; the worker exits as failed
        say(f"could not create the clean Python environment {env_dir}: "
            f"{type(e).__name__}: {e}")
        return 70
    try:
        os.execvp(cmd[0], cmd)  # PATH (the worker's) starts with the environment's bin
    except OSError as e:
        say(f"cannot run the start command {shlex.join(cmd)}: {e}")
        return 127


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
