"""What the app knows about an HTTP request: who sent it (the client address) and when it arrived.

The client address is `request.client.host` as uvicorn resolved it: its proxy-headers middleware
believes `X-Forwarded-For` only from the addresses in `FORWARDED_ALLOW_IPS` (default 127.0.0.1
and ::1). Behind another proxy, a Hugging Face Space's for one, every caller shows the proxy's
address unless FORWARDED_ALLOW_IPS names the proxy's network (docs/api.md, "Maintainers").

Arrival: Gradio queues an event when its `/queue/join` request arrives, but does not tell the
handler when that was, so `ArrivalTime` stamps each HTTP request as it reaches the app
(docs/monitoring.md, "Latency as the caller sees it").
"""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger(__name__)

ARRIVED = "classifr_arrived"  # key in the ASGI scope's "state": time.perf_counter() at arrival


def client_of(request: Any) -> str | None:
    """The caller's address from a `gr.Request`, None when there is no request or no client (in-process calls)."""
    http = getattr(request, "request", None)
    client = getattr(http, "client", None)
    return getattr(client, "host", None) or None


def waited_s(request: Any, *, now: float | None = None) -> float | None:
    """Seconds between the request reaching the app and `now` (default: this moment); None when unstamped."""
    http = getattr(request, "request", None)
    scope = getattr(http, "scope", None)
    arrived = scope.get("state", {}).get(ARRIVED) if isinstance(scope, dict) else None
    if arrived is None:
        return None
    return max(0.0, (time.perf_counter() if now is None else now) - arrived)


class ArrivalTime:
    """ASGI middleware: stamps every HTTP request's scope with its arrival time, before routing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[ARRIVED] = time.perf_counter()
        await self.app(scope, receive, send)
