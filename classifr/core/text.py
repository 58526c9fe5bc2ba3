"""User-given text (labels, file names) made inert before it goes into Markdown."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

# Backslash-escaped in user text: emphasis, code, links, images, HTML, table cells, strikethrough,
# math and entities; and the dot of "www." so a label is never turned into a link (GFM autolinks).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~$&])")
_AUTOLINK = re.compile(r"(?i)(www)\.")


def escape_markdown(text: object) -> str:
    """`text` as literal Markdown inline text on one line (safe inside a table cell)."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))
    return _AUTOLINK.sub(r"\1\\.", escaped)
