"""A Python-kit sidecar for the tracing tests: ``python -m tests.tracing.sidecar_app ADDRESS``.
Tracing follows the environment (TRELLIS_TRACING, OTEL_*), as for any sidecar."""

from __future__ import annotations

import sys
from typing import Any

from trellis.sidecar import Sidecar

sidecar = Sidecar()


@sidecar.tool()
def echo(**args: Any) -> dict[str, Any]:
    return args


if __name__ == "__main__":
    sidecar.run(sys.argv[1], grace=2.0)
