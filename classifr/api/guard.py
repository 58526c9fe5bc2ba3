"""Who may call, and how often: the checks every /v1 route runs before it reads its body.

* Rate limit per client address (`CLASSIFR_API_RATE_LIMIT` a minute; 429 with Retry-After), kept by
  the `limits` package's moving window: the library behind flask-limiter and slowapi, whose
  storage can move to Redis when several replicas must share one limit (docs/api.md, "Limits").
* Bearer tokens (classifr.app.tokens) for maintainer routes, and for every route when
  `CLASSIFR_API_PUBLIC=0`. A token is checked from the headers alone, so a caller without one gets
  its 401 before a byte of its body is read.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from classifr.api.errors import ApiError
from classifr.app.tokens import TokenStore

logger = logging.getLogger(__name__)

UNKNOWN_CLIENT = "unknown"  # no address (a test transport, a Unix socket)


@dataclass(frozen=True)
class Caller:
    address: str
    token_name: str | None  # the name of a valid Classifr token, when one was sent


class RateLimit:
    """At most `per_minute` requests in any 60 s from one address; 0 turns the limit off."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, address: str) -> None:
        if self._item is None or self._limiter.hit(self._item, address):
            return
        reset_at = self._limiter.get_window_stats(self._item, address).reset_time
        wait = max(1, math.ceil(reset_at - time.time()))
        raise ApiError(
            429, f"too many requests from {address}: at most {self.per_minute} a minute; try again in {wait} s",
            {"Retry-After": str(wait)},
        )


class Guard:
    """The checks of one API instance: its rate limit, its token store, whether prediction is public."""

    def __init__(self, tokens: TokenStore, rate_limit: RateLimit, *, public: bool) -> None:
        self.tokens = tokens
        self.rate_limit = rate_limit
        self.public = public

    def caller(self, request: Request, *, maintainer: bool) -> Caller:
        address = request.client.host if request.client else UNKNOWN_CLIENT
        self.rate_limit.check(address)
        if not maintainer and self.public:
            # A token is not needed here; one sent anyway (InferenceClient sends the user's Hugging
            # Face token) is neither checked nor refused.
            return Caller(address, None)
        sent = bearer_token(request)
        if sent is None:
            raise ApiError(401, "this needs a Classifr token: send 'Authorization: Bearer <token>' "
                                "(a maintainer makes one with: classifr token create NAME)", {"WWW-Authenticate": "Bearer"})
        name = self.tokens.verify(sent)
        if name is None:
            logger.warning("refused an unknown or revoked token from %s for %s", address, request.url.path)
            raise ApiError(401, "that token is not valid: it is unknown or was revoked",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return Caller(address, name)


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def guard_of(request: Request) -> Guard:
    return request.app.state.context.guard


def public_caller(request: Request) -> Caller:
    """FastAPI dependency of the prediction, explanation and feedback routes."""
    return guard_of(request).caller(request, maintainer=False)


def maintainer_caller(request: Request) -> Caller:
    """FastAPI dependency of the maintainer routes (promote, rollback, canary, training)."""
    return guard_of(request).caller(request, maintainer=True)
