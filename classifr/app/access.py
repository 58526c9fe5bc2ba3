"""Who may act as a maintainer: the CLASSIFR_ADMIN_PASSWORD, or, on a Space with "Sign in with
Hugging Face", membership of the organisation named in CLASSIFR_MAINTAINER_ORG.

Membership is read with the signed-in user's own OAuth token (`HfApi.whoami`), so nobody can claim
an organisation they are not in; the Hub client is injected so tests never reach the Hub.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)


class NotAMaintainerError(ClassifrError, PermissionError):
    """The caller may not train, promote, roll back or change the canary."""


def require_maintainer(settings: Settings, *, password: str | None, oauth_token: str | None = None, hf_api: Any = None) -> str:
    """How the caller proved it ("password" or "org:NAME"); NotAMaintainerError says why not."""
    if not settings.admin_password and not settings.maintainer_org:
        raise NotAMaintainerError(
            "Maintainer actions are off: start the app with CLASSIFR_ADMIN_PASSWORD "
            "(or, on a Space with Hugging Face sign-in, CLASSIFR_MAINTAINER_ORG) set."
        )
    if settings.admin_password and password and hmac.compare_digest(password.encode(), settings.admin_password.encode()):
        return "password"
    if settings.maintainer_org and oauth_token and member_of(settings.maintainer_org, oauth_token, hf_api):
        return f"org:{settings.maintainer_org}"
    if settings.maintainer_org and not settings.admin_password:
        raise NotAMaintainerError(f"Sign in with Hugging Face as a member of {settings.maintainer_org!r} to do this.")
    raise NotAMaintainerError("Wrong maintainer password.")


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
