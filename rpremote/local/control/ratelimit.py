"""The control plane's rate limits (runpod-rest-v2.md §1.7): three fixed windows per user.

Every authenticated request counts against all three; when one is spent the answer is 429 with
``Retry-After`` until it resets. Responses carry the IETF draft headers ``RateLimit-Policy``
and ``RateLimit`` (401s carry none).
"""

from __future__ import annotations

import math
import time
from typing import Callable

from ... import platform as rp
from .problems import Problem


class RateLimiter:
    def __init__(self, limits=rp.REST_RATE_LIMITS, clock: Callable[[], float] = time.time):
        self.limits = limits
        self.clock = clock
        self.used: dict[str, tuple[float, int]] = {}  # window name -> (window start, requests)
        self.policy = ", ".join(f'"{name}";q={quota};w={width}' for name, width, quota in limits)

    def take(self) -> dict[str, str]:
        """Count one request; its response headers, or the 429 problem if a window is spent."""
        now = self.clock()
        state = []
        for name, width, quota in self.limits:
            start = math.floor(now / width) * width
            began, used = self.used.get(name, (start, 0))
            if began != start:
                used = 0
            state.append((name, start, used, quota, max(1, math.ceil(start + width - now))))
        spent = next((s for s in state if s[2] >= s[3]), None)
        if spent is None:
            for name, start, used, _, _ in state:
                self.used[name] = (start, used + 1)
            state = [(n, s, u + 1, q, t) for n, s, u, q, t in state]
        headers = {
            "RateLimit-Policy": self.policy,
            "RateLimit": ", ".join(f'"{n}";r={max(0, q - u)};t={t}' for n, _, u, q, t in state),
        }
        if spent is not None:
            raise Problem(429, f"rate limit exceeded for the {spent[0]} window",
                          headers={**headers, "Retry-After": str(spent[4])})
        return headers
