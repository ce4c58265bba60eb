"""Sessions.List page tokens: opaque to callers, checked when they come back.

A store's own token is its resume point (the last ID of the page). Sent as is,
callers would read meaning into it and a garbage token would quietly give an
empty page. On the wire it is wrapped: a version tag and the store's token,
base64url. A token that does not unwrap is INVALID_ARGUMENT naming page_token.
"""

from __future__ import annotations

import base64
import binascii

from trellis.errors import InvalidInput

_TAG = b"trellis.page.1\x00"


def wrap(store_token: str) -> str:
    """The caller's token for a store token ("" stays "": the last page)."""
    if not store_token:
        return ""
    return base64.urlsafe_b64encode(_TAG + store_token.encode("utf-8")).decode("ascii").rstrip("=")


def unwrap(token: str) -> str:
    """The store token inside a caller's token ("" = the first page)."""
    if not token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if not raw.startswith(_TAG):
            raise ValueError("no tag")
        return raw[len(_TAG) :].decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "page_token: not a token this server issued (pass next_page_token back unchanged)",
            field="page_token",
        ) from None
