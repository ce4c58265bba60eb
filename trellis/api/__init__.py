"""The trellis gRPC API: generated code lives in trellis.api.v1 (see scripts/gen-protos)."""
