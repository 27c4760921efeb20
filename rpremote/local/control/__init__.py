"""RunPod's REST v2 control plane, played by the emulator (``docs/runpod-rest-v2.md``).

``/v2/serverless`` (an endpoint made here is a real emulator endpoint with SDK workers),
``/v2/templates``, ``/v2/network-volumes``, ``/v2/catalog/...``: one module per family,
``routes.py`` mounting them behind one gate (key, size, rate limit, problem+json errors).
"""

from .routes import control_routes

__all__ = ["control_routes"]
