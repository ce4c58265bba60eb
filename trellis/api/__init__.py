"""The wire layer: the trellis gRPC API and what both ends of it share.

``trellis.api.v1`` is the generated code (see scripts/gen-protos); ``convert``
maps it to and from the domain types, ``error_table`` maps exceptions to
statuses, ``transport`` holds credentials and channel options. This module itself
imports nothing, so settings that name the message size stay importable without
grpc or protobuf installed.
"""

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The gRPC message size both ends use unless configured (gRPC's own default, made explicit)."""

MAX_STREAM_STEPS = 64
"""Sessions.Steps: the steps of one stream the server holds at once, and the most one
message may carry (ServerInfo's max_stream_steps)."""

API_REVISION = 3
"""The revision of the trellis.v1 API (ServerInfo.GetServerInfo): one more with every
additive change to the protos or the error catalog. 1 = the API before ServerInfo;
2 = ServerInfo, language options, the error catalog's metadata and BadRequest details;
3 = Sessions.Steps (the step stream) and ServerLimits.max_stream_steps."""
