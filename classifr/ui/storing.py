"""The one line the UI shows while storing is paused (a full disk; docs/storage.md)."""

from __future__ import annotations

from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown as inert


def paused_notice(service: ClassifrService) -> str:
    """Markdown saying that photos and corrections cannot be stored now, and why; "" when they can."""
    status = service.storage_status()
    if not status["paused"]:
        return ""
    return (
        f"**Storing is paused** ({inert(status['reason'])}): new photos and corrections are not "
        "stored until this is fixed. Predictions still work."
    )
