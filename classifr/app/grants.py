"""Maintainer grants: what the service's photo methods take as proof that a maintainer asks.

Photos from the prediction log (galleries, the review queue, a logged image) are shown to
maintainers only (docs/privacy.md). `ClassifrService.maintainer_grant` checks the maintainer once
(the password, with its per-client limits, or the Hub organisation) and returns a
`MaintainerGrant`; the photo methods take it and refuse anything else. A grant is signed with a
key only its issuer holds, so it cannot be made up, and it expires, so one kept in a UI session
stops working. Signed rather than remembered: a grant may be copied (a Gradio session state is),
and the issuer keeps no list of grants.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from classifr.app.access import NotAMaintainerError

logger = logging.getLogger(__name__)

GRANT_LIFETIME_S = 3600.0
PHOTOS_FOR_MAINTAINERS = "Photos are shown to maintainers only: enter the maintainer password and refresh."


@dataclass(frozen=True)
class MaintainerGrant:
    """A maintainer check that passed: how ("password" or "org:NAME") and when (Unix time)."""

    how: str
    issued_at: float
    signature: str = field(repr=False)


class GrantIssuer:
    """Issues and checks grants; one per service, its key made afresh for each."""

    def __init__(self, *, lifetime_s: float = GRANT_LIFETIME_S, clock: Callable[[], float] = time.time) -> None:
        if not lifetime_s > 0:
            raise ValueError(f"lifetime_s must be positive, got {lifetime_s!r}")
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._key = secrets.token_bytes(32)

    def issue(self, how: str) -> MaintainerGrant:
        issued_at = self._clock()
        return MaintainerGrant(how=how, issued_at=issued_at, signature=self._sign(how, issued_at))

    def check(self, grant: object) -> MaintainerGrant:
        """`grant` when this issuer made it and it has not expired; NotAMaintainerError otherwise."""
        if not isinstance(grant, MaintainerGrant):
            raise NotAMaintainerError(PHOTOS_FOR_MAINTAINERS)
        expected = self._sign(grant.how, grant.issued_at)
        if not isinstance(grant.signature, str) or not hmac.compare_digest(grant.signature, expected):
            logger.warning("refused a maintainer grant that this app did not issue (%s)", grant.how)
            raise NotAMaintainerError(PHOTOS_FOR_MAINTAINERS)
        if not 0 <= self._clock() - grant.issued_at <= self.lifetime_s:
            raise NotAMaintainerError("The maintainer check has expired: enter the maintainer password and refresh.")
        return grant

    def _sign(self, how: object, issued_at: object) -> str:
        message = f"{how!r}\n{issued_at!r}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
