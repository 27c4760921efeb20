"""docker/Dockerfile, read as text (docker itself is not needed): its command starts the
executor, everything it copies is in the repository, and what the package build needs is
copied. Building and pushing the image is docker/README.md."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the build context
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, args = whole.partition(" ")
            out.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def copy_sources(args: str) -> list[str]:
    """The sources of a ``COPY`` (shell or JSON form), without its ``--flags`` and dest."""
    if args.startswith("["):
        parts = json.loads(args)
    else:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
    assert len(parts) >= 2, f"COPY {args}: needs a source and a destination"
    return parts[:-1]


def test_the_command_is_the_executor(steps):
    cmds = [args for keyword, args in steps if keyword == "CMD"]
    assert cmds, "no CMD"
    assert json.loads(cmds[-1]) == ["python", "-m", "rpremote.executor"]  # exec form
    assert importlib.util.find_spec("rpremote.executor.__main__") is not None
    assert not [a for k, a in steps if k == "ENTRYPOINT"], "an ENTRYPOINT would wrap the CMD"


def test_every_copy_source_is_in_the_repository(steps):
    copies = [args for keyword, args in steps if keyword in ("COPY", "ADD")]
    assert copies, "nothing is copied"
    for args in copies:
        assert "--from" not in args  # one stage: every source comes from the build context
        for source in copy_sources(args):
            assert not Path(source).is_absolute() and ".." not in Path(source).parts
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_what_the_package_build_needs_is_copied(steps):
    copied = {Path(s).as_posix().rstrip("/")
              for k, a in steps if k == "COPY" for s in copy_sources(a)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"],
              *project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"


def test_the_base_follows_the_python_argument(steps):
    args_before_from = {}
    for keyword, args in steps:
        if keyword == "FROM":
            base = args.split()[0]
            break
        assert keyword == "ARG", f"{keyword} before FROM"
        name, _, default = args.partition("=")
        args_before_from[name] = default
    else:
        pytest.fail("no FROM")
    from rpremote import platform as rp

    assert args_before_from["PYTHON"] in rp.WORKER_IMAGE_PYTHONS
    assert base == "${BASE}" and args_before_from["BASE"] == "python:${PYTHON}-slim"
    assert len([k for k, _ in steps if k == "FROM"]) == 1


def test_it_installs_rpremote_from_the_copied_package_with_the_lock(steps):
    run = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert re.search(r"pip install \"?\.\[s3\]\"?", run)
    default = next(a for k, a in steps if k == "ARG" and a.startswith("CONSTRAINTS="))
    assert (ROOT / default.partition("=")[2]).is_file()
    assert "PIP_CONSTRAINT" in run


def test_the_parser_joins_continuations_and_skips_comments():
    text = 'FROM x\n# note\nRUN a \\\n  # inside\n  && b\nCMD ["python"]\n'
    assert instructions(text) == [("FROM", "x"), ("RUN", "a && b"), ("CMD", '["python"]')]
