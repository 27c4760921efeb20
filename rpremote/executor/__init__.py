"""The worker side: run one rpremote request and report what happens as events.

``core`` runs a request without knowing who asked (no ``runpod`` import), so it is
unit-testable and reusable by the Pod server; ``worker`` plugs it into the ``runpod`` SDK;
``python -m rpremote.executor`` starts that worker. Never imports the client.
"""
