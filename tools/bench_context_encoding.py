"""Measure how a ~2 KB session context travels best in a protobuf message.

Run: .venv/bin/python tools/bench_context_encoding.py
Compares, for encode (dict -> field) and decode (field -> dict):
  google.protobuf.Struct via update() / json_format.ParseDict, and JSON text via orjson.
The figures quoted in protos/trellis/v1/types.proto come from this script.
"""

from __future__ import annotations

import timeit
from typing import Any

import orjson
from google.protobuf import json_format, struct_pb2


def sample_context() -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "user": {"name": "Ada Lovelace", "email": "ada@example.org", "age": 36, "admin": False},
        "cart": [{"sku": f"SKU-{i:04d}", "qty": i, "price": 9.5 + i} for i in range(16)],
        "answers": {f"q{i}": f"answer number {i} with some text" for i in range(32)},
        "counter": 41,
        "flags": [True, False, None],
    }
    return ctx


def main() -> None:
    ctx = sample_context()
    size = len(orjson.dumps(ctx))

    def struct_update() -> struct_pb2.Struct:
        s = struct_pb2.Struct()
        s.update(ctx)
        return s

    def struct_parse_dict() -> struct_pb2.Struct:
        return json_format.ParseDict(ctx, struct_pb2.Struct())

    def orjson_text() -> str:
        return orjson.dumps(ctx).decode()

    encoded_struct = struct_update()
    encoded_text = orjson_text()

    cases = {
        "encode Struct.update": struct_update,
        "encode json_format.ParseDict": struct_parse_dict,
        "encode orjson -> str": orjson_text,
        "decode Struct -> dict (MessageToDict)": lambda: json_format.MessageToDict(encoded_struct),
        "decode orjson.loads": lambda: orjson.loads(encoded_text),
    }
    print(f"context: {size} bytes of JSON")
    for name, fn in cases.items():
        n = 2000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name:40s} {best * 1e6:8.1f} µs")
    back = json_format.MessageToDict(encoded_struct)
    print("Struct keeps ints as ints:", type(back["counter"]).__name__ == "int", f"(got {back['counter']!r})")


if __name__ == "__main__":
    main()
