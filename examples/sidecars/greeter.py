"""A tool sidecar in a few lines: `python examples/sidecars/greeter.py 127.0.0.1:50070`."""

import sys

from trellis.sidecar import Sidecar

sidecar = Sidecar()


@sidecar.tool(idempotent=True)
def greet(name: str, excited: bool = False) -> dict:
    """Greets someone by name."""
    return {"greeting": f"Hello, {name}{'!' if excited else '.'}"}


sidecar.run(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50070")
