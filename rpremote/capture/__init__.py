"""What goes out: turning the function, its arguments and its code into bytes.

The user's own code (``__main__``, notebook cells, modules of their project that are not
installed packages) travels by value, because the worker has none of it; installed packages
travel by reference, because the worker has them and shipping them would be huge and wrong.
Anything that cannot travel is reported with its path (``args[0].conn._sock``) before anything
is sent. ``requirements`` turns what was pickled into pinned third-party requirements.

Light on purpose: importing this imports only cloudpickle and the standard library.
"""

from .pickling import (
    PickleNotes, Pickled, by_value_modules, dumps, dumps_oob, dumps_result, is_installed_module, loads,
)
from .tensors import devices

__all__ = ["Pickled", "PickleNotes", "dumps", "dumps_oob", "dumps_result", "loads", "devices",
           "by_value_modules", "is_installed_module"]
