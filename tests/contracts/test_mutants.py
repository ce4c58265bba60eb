"""A contract suite that cannot fail is a defect: each suite runs, in its own pytest
process, against deliberately broken adapters (tests/contracts/mutants/) and must fail
each one in the tests that check what it breaks, while passing the unbroken baseline."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MUTANTS = Path(__file__).parent / "mutants"


def caught_by(module: Path) -> dict[str, list[str]]:
    """The module's CAUGHT_BY literal, read without importing it."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CAUGHT_BY" for t in node.targets
        ):
            value: dict[str, list[str]] = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"{module.name} has no CAUGHT_BY")


def run_suite(module: Path, where: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Run ``module`` as a test module in a pytest process of its own, the way an adapter
    author runs the suites; returns the failed and passed tests of each class."""
    target = where / f"test_{module.stem}.py"
    shutil.copy(module, target)
    report = where / "report.xml"
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", str(target), "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--rootdir={where}", "-c", str(where / "pytest.ini"), f"--junitxml={report}"],
        cwd=where, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert report.exists(), finished.stdout[-3000:] + finished.stderr[-3000:]
    failed: dict[str, set[str]] = {}
    passed: dict[str, set[str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rpartition(".")[2]
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            failed.setdefault(cls, set()).add(name)
        elif case.find("skipped") is None:
            passed.setdefault(cls, set()).add(name)
    return failed, passed


@pytest.mark.parametrize("module", sorted(MUTANTS.glob("*_mutants.py")), ids=lambda p: p.stem)
def test_every_mutant_is_caught_and_the_baseline_passes(module: Path, tmp_path: Path) -> None:
    # Strict mode: the suites must not rely on the project's asyncio_mode = auto.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    failed, passed = run_suite(module, tmp_path)
    assert "TestBaseline" not in failed, f"the unbroken adapter failed: {failed.get('TestBaseline')}"
    assert passed.get("TestBaseline"), "the baseline ran no test"
    for mutant, expected in caught_by(module).items():
        missed = set(expected) - failed.get(mutant, set())
        assert not missed, f"{mutant} was not caught by {sorted(missed)} (failed: {failed.get(mutant)})"
