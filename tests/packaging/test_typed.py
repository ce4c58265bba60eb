"""trellis ships ``py.typed``: a third-party package (an adapter, an embedder) that
imports trellis type-checks with ``mypy --strict`` against the installed wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

THIRD_PARTY = """\
    from pathlib import Path

    from trellis.adapters.memory_store import MemoryStore
    from trellis.adapters.rules import check_session_id, paginate
    from trellis.contracts.store import StateStoreContract
    from trellis.domain import State
    from trellis.plugins import BuildContext, Component, PortSpec
    from trellis.ports.store import SessionPage, StateStore


    async def store_factory(spec: PortSpec, ctx: BuildContext) -> Component:
        return Component.of(MemoryStore(max_state_bytes=65536))


    def first_page(ids: list[str]) -> SessionPage:
        return paginate((check_session_id(i) for i in ids), 10, "")


    def node_of(state: State) -> str:
        return state.current_node_id


    class TestMine(StateStoreContract):
        max_state_bytes = 65536

        async def make_store(self, tmp_path: Path) -> StateStore:
            return MemoryStore(max_state_bytes=self.max_state_bytes)
    """


def test_a_third_party_package_type_checks_against_the_installed_wheel(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "trellis", source / "trellis", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    assert "trellis/py.typed" in zipfile.ZipFile(wheel).namelist()

    # A fresh environment holding only the wheel: mypy sees trellis as a third party would.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", site, str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]

    package = tmp_path / "third_party"
    package.mkdir()
    (package / "my_adapter.py").write_text(textwrap.dedent(THIRD_PARTY), encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", str(python),
         "my_adapter.py"],
        cwd=package, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
