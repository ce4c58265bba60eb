"""The descriptor pool server reflection answers from, resolving method names too.

``grpcurl describe trellis.v1.Sessions.Start`` asks reflection for the file
containing the symbol ``trellis.v1.Sessions.Start``. grpcio-reflection passes
that to protobuf's ``DescriptorPool.FindFileContainingSymbol``, and the upb
pool (protobuf's default implementation) finds services, messages, fields and
enums there but not a service's methods, so the answer was "Symbol not found".
Other gRPC implementations resolve methods; this pool does the same by looking
the method up in its service.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor


class MethodResolvingPool:
    """``pool`` (the default one) whose FindFileContainingSymbol also knows methods."""

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool or descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(symbol) from None
            if method not in service.methods_by_name:
                raise KeyError(symbol) from None
            return service.file

    def __getattr__(self, name: str) -> Any:
        # FindFileByName, FindExtensionByNumber, ... as the pool answers them.
        return getattr(self._pool, name)
