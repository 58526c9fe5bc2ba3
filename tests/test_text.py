"""User text shown in Markdown (UI status lines, the dataset card) stays literal text."""

from __future__ import annotations

import pytest

from classifr.core.text import escape_markdown


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<script>alert(1)</script>", r"\<script\>alert\(1\)\</script\>"),
        ("a|b", r"a\|b"),
        ("*bold* _it_ `code`", r"\*bold\* \_it\_ \`code\`"),
        ("[link](http://x)", r"\[link\]\(http://x\)"),
        ("two\nlines", "two lines"),
        ("www.example.com", r"www\.example.com"),
        ("plain label", "plain label"),
    ],
)
def test_markup_is_escaped(text, expected):
    assert escape_markdown(text) == expected
