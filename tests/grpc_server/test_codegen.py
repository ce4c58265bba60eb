"""The committed generated code is exactly what scripts/gen-protos produces from the protos."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "trellis" / "api" / "v1"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-protos"), str(tmp_path)], check=True, capture_output=True)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "__init__.py"}
    committed = {
        p.name: p.read_bytes() for p in GENERATED.iterdir() if p.is_file() and p.name != "__init__.py"
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs: run scripts/gen-protos"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run scripts/gen-protos"


def test_generated_modules_import_as_package_modules() -> None:
    from trellis.api.v1 import engine_pb2, engine_pb2_grpc, sessions_pb2, types_pb2

    assert engine_pb2.EngineNavigateRequest.DESCRIPTOR.fields_by_name["state"].message_type is (
        types_pb2.State.DESCRIPTOR
    )
    assert hasattr(engine_pb2_grpc, "EngineServicer")
    assert sessions_pb2.DESCRIPTOR.package == "trellis.v1"
