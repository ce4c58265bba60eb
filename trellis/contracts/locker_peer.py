"""The other process of the locker contract's cross-process tests (run with ``python -m``).

It reads one line from stdin: the base64 of a pickled dict naming the contract
class (``module``, ``qualname``), the ``attributes`` its instance gets
(``peer_attributes``), ``tmp_path``, ``key`` and ``ttl``. It builds the
locker with the class's own ``make_locker``, takes the lock, prints
``held TOKEN``, and holds it until stdin says ``release`` (then prints
``released``) or the test kills it.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import pickle
import sys
from pathlib import Path
from typing import Any


async def _main() -> None:
    spec: dict[str, Any] = pickle.loads(base64.b64decode(sys.stdin.readline()))
    target: Any = importlib.import_module(spec["module"])
    for part in spec["qualname"].split("."):
        target = getattr(target, part)
    contract = target()
    for name, value in spec["attributes"].items():
        setattr(contract, name, value)
    locker = await contract.make_locker(Path(spec["tmp_path"]))
    try:
        handle = await locker.acquire(spec["key"], ttl=spec["ttl"])
        print(f"held {handle.token}", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await handle.unlock()
        print("released", flush=True)
    finally:
        await contract.close_locker(locker)


if __name__ == "__main__":
    asyncio.run(_main())
