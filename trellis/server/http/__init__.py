"""The HTTP listener: Connect (JSON and protobuf) and server-sent events over the
public gRPC services (docs/http.md)."""
