"""Notebook face of rpremote: the ``%%runpod`` cell magic (``%load_ext rpremote``).

Imports IPython; the core never imports this package.
"""

from .magics import load_ipython_extension

__all__ = ["load_ipython_extension"]
