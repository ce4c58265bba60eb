"""Masking rules for running the store contract through the PII masking middleware.

The contract's generated contexts must round-trip unchanged, so its rules match nothing
they can hold, while every key and string is still checked: a key pattern longer than
any generated key, a value pattern no generated text contains. Both are made at run time:
hypothesis also tries the string constants of the test modules, where a literal would be.
"""

from __future__ import annotations

import uuid

from trellis.adapters.masking_store import MaskingRules


def unmatchable_rules() -> MaskingRules:
    return MaskingRules.from_config({"keys": [f"^{uuid.uuid4().hex}$"], "values": [uuid.uuid4().hex]}, "test")
