"""What to do when a real part a test needs (etcd, openssl, node, the shared
compatibility flows) is missing: skip on a developer's machine, fail under
CI=true, where everything must be present and a skip would hide a hole."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> NoReturn:
    """Skip (or, under CI, fail) because ``what`` is not available."""
    if running_in_ci():
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)
