"""The emulator's refusal of a request, apart from the engine so the blob store can raise it too.

``app.py`` turns it into the JSON error response the platform would send.
"""


class ApiError(Exception):
    """A client or worker request the platform would refuse; becomes a JSON error response."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
