"""Generated protobuf and gRPC code of the trellis.v1 API (scripts/gen-protos)."""
