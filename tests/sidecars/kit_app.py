"""A Python-kit sidecar for the tests: ``python -m tests.sidecars.kit_app ADDRESS``.

Tools: ``echo`` (its arguments), ``sleep`` ({"seconds": N}), ``charge`` (takes
$CHARGE_DELAY seconds and notes in $RUNS_FILE when it started, was cancelled or charged,
with the session, idempotency key and fencing token), and, with $EXTRA_TOOL set, ``refund``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from trellis.sidecar import DispatchContext, RetryPolicy, Sidecar

sidecar = Sidecar()


@sidecar.tool(idempotent=True)
def echo(**args: Any) -> dict[str, Any]:
    return args


@sidecar.tool()
async def sleep(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@sidecar.tool(retry=RetryPolicy(initial_interval=0.2, maximum_attempts=5))
async def charge(amount: int, context: DispatchContext) -> dict[str, Any]:
    note("started", context)
    try:
        await asyncio.sleep(float(os.environ.get("CHARGE_DELAY", "0")))
    except asyncio.CancelledError:
        note("cancelled", context)
        raise
    note("charged", context)
    return {"charged": amount}


def note(what: str, context: DispatchContext) -> None:
    with open(os.environ["RUNS_FILE"], "a", encoding="utf-8") as runs:
        left = f"{context.deadline - time.time():.1f}" if context.deadline is not None else "none"
        runs.write(f"{what} {context.session_id} {context.idempotency_key} {context.fencing_token} {left}\n")


@sidecar.tool()
async def hold(who: str, context: DispatchContext) -> dict[str, str]:
    """For the fencing test: blocks the call for "ada" until $RUNS_FILE.release exists."""
    note(f"hold-{who}", context)
    release = Path(os.environ["RUNS_FILE"] + ".release")
    # Another process writes the file: nothing to await but polling.
    while who == "ada" and not await asyncio.to_thread(release.exists):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return {"held": who}


@sidecar.tool()
def record(who: str, context: DispatchContext) -> dict[str, str]:
    note(f"record-{who}", context)
    return {"recorded": who}


if os.environ.get("EXTRA_TOOL"):

    @sidecar.tool()
    def refund(amount: int) -> dict[str, int]:
        return {"refunded": amount}


if __name__ == "__main__":
    sidecar.run(sys.argv[1], grace=float(os.environ.get("GRACE", "5")))
