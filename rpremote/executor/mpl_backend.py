"""The matplotlib backend of a worker (``module://rpremote.executor.mpl_backend``).

Agg draws; ``plt.show()`` sends every open figure to the job's caller as ``image/png`` and
closes it, and ``fig.show()`` sends that figure, as the notebook's inline backend does.
Outside a job (or in a subprocess that inherited the backend) showing does nothing, as with Agg.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from . import display as _display


class FigureManager(FigureManagerBase):
    def show(self) -> None:
        _display.show_figure(self.canvas.figure)


class FigureCanvas(FigureCanvasAgg):
    manager_class = FigureManager


def show(*args: Any, **kwargs: Any) -> None:
    _display.flush_figures()
