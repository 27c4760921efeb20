"""Makes this folder a package, so its conftest is ``notebooks.conftest`` and does not
shadow the ``conftest`` module the tests in tests/ import helpers from."""
