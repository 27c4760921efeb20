"""RunPod's REST v2 control plane (runpod-rest-v2.md): endpoints, templates, network volumes
and the catalog. ``ControlPlane.from_settings()`` is the usual way in."""

from .plane import BASE_URL_SETTING, ControlPlane, base_url_setting
from .resources import Catalog, Endpoints, Resource, Templates, Volumes

__all__ = ["BASE_URL_SETTING", "ControlPlane", "base_url_setting", "Catalog", "Endpoints",
           "Resource", "Templates", "Volumes"]
