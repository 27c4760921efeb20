"""rpremote: run Python on RunPod GPUs from a notebook or a script.

This module stays light: it must not import runpod, torch, ipywidgets or jupyter_server.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
