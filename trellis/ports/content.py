"""ContentConverter: optional post-processing of rendered content (e.g. Markdown to HTML)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ContentConverter(Protocol):
    def convert(self, content: str) -> str:
        """Return the converted text; any exception becomes a render error."""
        ...
