"""HTML escaping for the ``html=True`` variant (Go ``html/template`` in a text context)."""

from __future__ import annotations

_SPECIAL = frozenset("&<>\"'+\0")


def html_escape(text: str) -> str:
    """``<b>`` → ``&lt;b&gt;``; quotes as ``&#34;``/``&#39;``; ``+`` as ``&#43;`` and NUL as U+FFFD.

    The set is exactly Go's ``html/template`` text-context escaper, so output matches it.
    """
    if _SPECIAL.isdisjoint(text):
        return text
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
        .replace("+", "&#43;")
        .replace("\0", "\ufffd")
    )
