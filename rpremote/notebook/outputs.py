"""Rich outputs from workers in a notebook cell's output, in order with what was printed.

``publish`` is the one way a worker's display bundle reaches the notebook: the terminal
reporter calls it through ``rpremote.displays.publisher`` (set by ``install``, from
``%load_ext rpremote``), and a widget reporter calls it directly.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import displays


def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None, *,
            display_id: str | None = None, update: bool = False) -> None:
    """Show one mime bundle in the current output, after everything printed before it.

    ``display_id`` (with ``update``) is the worker's ``display(..., display_id=...)``: the
    output made under that id is replaced in place, as a local display handle does.
    """
    from IPython.display import publish_display_data

    for stream in (sys.stdout, sys.stderr):  # the text before it goes out before it
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    kwargs: dict[str, Any] = {}
    if display_id:
        kwargs["transient"] = {"display_id": display_id}
        if update:
            kwargs["update"] = True
    publish_display_data(data, metadata or {}, **kwargs)


def install() -> None:
    """Workers' display outputs of every job from now on show in the notebook."""
    displays.publisher = publish


def prepare_result(shell: Any, value: Any) -> Any:
    """A cell's value as it would show locally: a matplotlib figure that came back from a
    worker renders as an image even where this kernel never set up the inline backend."""
    figure = sys.modules.get("matplotlib.figure")
    if figure is not None and isinstance(value, figure.Figure):
        png = shell.display_formatter.formatters["image/png"]
        try:
            png.lookup_by_type(figure.Figure)
        except KeyError:  # the inline backend registers this, with its settings, when active
            from IPython.core.pylabtools import print_figure

            png.for_type(figure.Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))
    return value
