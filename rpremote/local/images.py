"""Container images, as the emulator runs them: each image name maps to a worker command.

RunPod pulls an endpoint's image and starts its command; the emulator has no containers, so
it keeps a table instead. rpremote's own worker image (``platform.worker_image``) for the
emulator's Python runs the executor; ``rpremote serve --image NAME=COMMAND`` adds any other
(``python`` in COMMAND is the emulator's interpreter). An image with no mapping is what an
image that cannot be pulled is on RunPod: the endpoint exists, its workers never start, and
the reason says what to do.
"""

from __future__ import annotations

import shlex
import sys

from .. import platform as rp

EXECUTOR_COMMAND = "python -m rpremote.executor"
_REGISTRY_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/",
                      "index.docker.io/")


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


class ImageMap:
    """Which command starts a worker of an image; an image that has none cannot start here."""

    def __init__(self, extra: dict[str, str] | None = None, python: str | None = None):
        self.python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        self.commands: dict[str, str] = {rp.worker_image(self.python): EXECUTOR_COMMAND}
        for name, command in (extra or {}).items():
            self.commands[_normal(name)] = command

    def command(self, image: str) -> str | None:
        """The worker command of ``image``: its exact name first, then a mapping given without
        a tag (``--image myorg/worker=...`` serves every tag of myorg/worker)."""
        image = _normal(image)
        if image in self.commands:
            return self.commands[image]
        repo = _repository(image)
        if repo != image and repo in self.commands:
            return self.commands[repo]
        return None

    def why_not(self, image: str) -> str:
        """What a worker of an unmapped image says, in the words of a failed pull."""
        if _repository(_normal(image)) == rp.WORKER_IMAGE_REPO:
            todo = (f"this emulator runs Python {self.python}, so it serves "
                    f"{rp.worker_image(self.python)}; for {image}, start it with --image "
                    f"{image}='/path/to/pythonX.Y -m rpremote.executor'")
        else:
            todo = (f"start the emulator with --image {image}=COMMAND, the command that starts "
                    "one worker of this image (e.g. 'python handler.py')")
        return (f"failed to pull image {image}: the emulator has no command for it (it knows "
                f"{', '.join(sorted(self.commands))}); {todo}")
