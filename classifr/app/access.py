"""Who may act as a maintainer: the CLASSIFR_ADMIN_PASSWORD, or, on a Space with "Sign in with
Hugging Face", membership of the organisation named in CLASSIFR_MAINTAINER_ORG.

Membership is read with the signed-in user's own OAuth token (`HfApi.whoami`), so nobody can claim
an organisation they are not in; the Hub client is injected so tests never reach the Hub.

Wrong passwords are limited per client address (`PasswordAttempts`, docs/api.md "Maintainers"):
a few a minute, then waits that double, during which the password is not even compared.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)


UNKNOWN_CLIENT = "unknown"  # callers that give no address share one limit: forgetting it never lifts the limit


class NotAMaintainerError(ClassifrError, PermissionError):
    """The caller may not train, promote, roll back or change the canary."""


class MaintainerLockedOutError(NotAMaintainerError):
    """Too many wrong passwords from one client address: refused unchecked until `retry_after_s` has passed."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many wrong passwords from this address; try again in {describe_wait(retry_after_s)}")


def describe_wait(seconds: float) -> str:
    """"30 s" under a minute, else whole minutes rounded up ("4 min")."""
    if seconds < 60:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)  # times of the failures within the window
    lockouts: int = 0  # lockouts since the last success: the next wait is first_wait_s * 2**lockouts
    locked_until: float = 0.0
    last_failure: float = 0.0


class PasswordAttempts:
    """Wrong maintainer passwords per client address; one instance per service, safe across threads.

    The `allowed`-th failure within `window_s` locks the client out for `first_wait_s`; each
    failure after a lockout (before a success) locks it again for twice as long, up to
    `max_wait_s`. A client quiet for `max_wait_s` after its last failure or lockout is forgotten;
    beyond `max_clients` the least recently failing ones are forgotten first, so memory stays
    bounded whoever sends passwords.
    """

    def __init__(
        self,
        *,
        allowed: int = 5,
        window_s: float = 60.0,
        first_wait_s: float = 30.0,
        max_wait_s: float = 900.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if allowed < 1 or max_clients < 1 or not 0 < first_wait_s <= max_wait_s or window_s <= 0:
            raise ValueError(
                f"bad password limits: allowed={allowed}, window_s={window_s}, first_wait_s={first_wait_s}, "
                f"max_wait_s={max_wait_s}, max_clients={max_clients}"
            )
        self.allowed, self.window_s, self.first_wait_s, self.max_wait_s = allowed, window_s, first_wait_s, max_wait_s
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # least recently failing first

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def verify(self, client: str, matches: Callable[[], bool]) -> bool:
        """`matches()` (the password comparison), counted for `client`; MaintainerLockedOutError, without
        calling it, while `client` is locked out, and when this failure starts a lockout.

        Check, compare and count happen under one lock, so parallel guesses cannot slip past the limit.
        """
        with self._lock:
            now = self._clock()
            state = self._clients.get(client)
            if state is not None and state.locked_until > now:
                refused, wait, ok = True, state.locked_until - now, False
            else:
                refused, ok = False, matches()
                wait = 0.0 if ok else self._count_failure(client, now)
                if ok:
                    self._clients.pop(client, None)  # a success wipes the slate
            recent = len(self._clients[client].failures) if not ok and not refused else 0
        if refused:
            logger.info("maintainer password from %s refused unchecked: locked out for %s more", client, describe_wait(wait))
            raise MaintainerLockedOutError(wait)
        if wait:
            logger.warning("wrong maintainer password from %s: locked out for %s", client, describe_wait(wait))
            raise MaintainerLockedOutError(wait)
        if not ok:
            logger.warning("wrong maintainer password from %s (%d in the last %.0f s)", client, recent, self.window_s)
        return ok

    def _count_failure(self, client: str, now: float) -> float:
        """Record one failure (the lock held); the lockout it starts, in seconds, or 0."""
        self._forget_stale(now)
        state = self._clients.pop(client, None) or _Client()
        self._clients[client] = state  # now the most recent
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        state.last_failure = now
        state.failures.append(now)
        while state.failures[0] <= now - self.window_s:
            state.failures.popleft()
        if not state.lockouts and len(state.failures) < self.allowed:
            return 0.0
        wait = min(self.first_wait_s * 2**state.lockouts, self.max_wait_s)
        state.lockouts += 1
        state.locked_until = now + wait
        state.failures.clear()
        return wait

    def _forget_stale(self, now: float) -> None:
        """Drop clients quiet for `max_wait_s` since their last failure or lockout (oldest first, so it stops early)."""
        while self._clients:
            client, state = next(iter(self._clients.items()))
            if max(state.last_failure, state.locked_until) + self.max_wait_s > now:
                return
            del self._clients[client]


def require_maintainer(
    settings: Settings,
    *,
    password: str | None,
    oauth_token: str | None = None,
    hf_api: Any = None,
    attempts: PasswordAttempts | None = None,
    client: str | None = None,
) -> str:
    """How the caller proved it ("password" or "org:NAME"); NotAMaintainerError says why not.

    With `attempts`, a password from a locked-out `client` is refused without being compared
    (MaintainerLockedOutError); a Hub sign-in still works then, as a token cannot be guessed.
    """
    if not settings.admin_password and not settings.maintainer_org:
        raise NotAMaintainerError(
            "Maintainer actions are off: start the app with CLASSIFR_ADMIN_PASSWORD "
            "(or, on a Space with Hugging Face sign-in, CLASSIFR_MAINTAINER_ORG) set."
        )
    client = client or UNKNOWN_CLIENT
    locked_out: MaintainerLockedOutError | None = None
    if settings.admin_password and password:
        try:
            if _password_matches(settings.admin_password, password, attempts, client):
                return "password"
        except MaintainerLockedOutError as err:
            locked_out = err
    if settings.maintainer_org and oauth_token and member_of(settings.maintainer_org, oauth_token, hf_api):
        return f"org:{settings.maintainer_org}"
    if locked_out is not None:
        raise locked_out
    if settings.maintainer_org and not settings.admin_password:
        raise NotAMaintainerError(f"Sign in with Hugging Face as a member of {settings.maintainer_org!r} to do this.")
    raise NotAMaintainerError("Wrong maintainer password.")


def _password_matches(expected: str, password: str, attempts: PasswordAttempts | None, client: str) -> bool:
    def matches() -> bool:
        return hmac.compare_digest(password.encode(), expected.encode())

    return attempts.verify(client, matches) if attempts is not None else matches()


def member_of(org: str, oauth_token: str, hf_api: Any = None) -> bool:
    """Whether the token's user belongs to `org` (by its Hub name); False when the Hub cannot say."""
    if hf_api is None:
        from huggingface_hub import HfApi

        hf_api = HfApi()
    try:
        info = hf_api.whoami(token=oauth_token)
    except Exception as err:  # a Hub outage or a revoked token: refuse, and say why in the log
        logger.warning("could not check membership of %s: %s", org, err)
        return False
    return any(isinstance(o, dict) and o.get("name") == org for o in info.get("orgs") or [])
