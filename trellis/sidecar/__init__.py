"""The Python sidecar kit: tools served from their own process over ActionDispatcher.

A useful sidecar in a few lines::

    from trellis.sidecar import Sidecar

    sidecar = Sidecar()

    @sidecar.tool(idempotent=True)
    def greet(name: str) -> dict:
        return {"greeting": f"hello {name}"}

    sidecar.run("unix:///tmp/greeter.sock")

See docs/sidecars.md. The kit needs the ``server`` extra.
"""

from trellis.dispatching import DispatchContext, RetryPolicy, ToolInfo
from trellis.sidecar.kit import Sidecar
from trellis.sidecar.server import SidecarOptions, SidecarServer

__all__ = ["DispatchContext", "RetryPolicy", "Sidecar", "SidecarOptions", "SidecarServer", "ToolInfo"]
