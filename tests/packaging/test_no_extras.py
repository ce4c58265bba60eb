"""The core installs and works without any extra: no grpc, protobuf, aetcd or
prometheus in the environment, and ``trellis validate/graph/run`` still work, while
the commands that need an extra say which one instead of failing with a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "examples" / "tour"
OPTIONAL = ("grpc", "google.protobuf", "aetcd", "prometheus_client", "pytest", "hypothesis")


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtual environment with trellis installed from a copy of this checkout."""
    where = tmp_path_factory.mktemp("bare")
    source = where / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "trellis", source / "trellis", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = where / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    yield env_dir / "bin"


def run(bin_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "trellis"), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_the_core_environment_has_no_optional_dependency(bare: Path) -> None:
    probe = (
        "import importlib, sys\n"
        "found = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        found.append(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "print(found)\n"
    )
    found = subprocess.run(
        [str(bare / "python"), "-c", probe, *OPTIONAL], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_validate_graph_and_help_work_without_extras(bare: Path) -> None:
    assert run(bare, "--help").returncode == 0
    validated = run(bare, "validate", str(TOUR))
    assert validated.returncode == 0, validated.stderr
    assert "Flow is valid" in validated.stdout
    drawn = run(bare, "graph", str(TOUR))
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("graph TD")


def test_a_scripted_json_walk_of_the_tour_works_without_extras(bare: Path) -> None:
    lines = ["Ada", '{"input": "drinks"}', '"tea"', "finish", ""]
    walked = run(bare, "run", str(TOUR), "--json", stdin="\n".join(lines) + "\n")
    assert walked.returncode == 0, walked.stderr
    objects = [json.loads(line) for line in walked.stdout.splitlines() if line.strip()]
    end = objects[-1]
    assert end["type"] == "end" and end["status"] == "terminated"
    assert end["context"]["drink"] == "tea"


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", str(TOUR)], "server"),
        (["graph", "push", str(TOUR), "--etcd", "127.0.0.1:1", "--graph", "t"], "etcd"),
        (["run", str(TOUR), "--server", "127.0.0.1:1"], "client"),
        (["mcp", str(TOUR)], "mcp"),
    ],
)
def test_commands_that_need_an_extra_name_it(bare: Path, args: list[str], extra: str) -> None:
    result = run(bare, *args)
    assert result.returncode != 0
    assert f"pip install 'trellis-flow[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
