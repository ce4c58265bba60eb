"""Shared by the saga's tools: read the arguments, append to the optional ledger."""

import json
import os


def call_args() -> dict:
    return json.loads(os.environ.get("TRELLIS_ARGS") or "{}") or {}


def record(line: str) -> None:
    path = os.environ.get("SAGA_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(line + "\n")
