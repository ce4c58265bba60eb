"""Mutation testing for trellis's core: do the tests notice when the code changes?

For each core module this makes small changes ("mutants") one at a time --
swapped operators, ±1 on integer constants, a removed ``raise``, ``return
None`` instead of a value, a deleted call -- and runs the tests that execute the
changed line. A mutant the tests fail on is *killed*; one they still pass on
*survived*: a change a user could feel that no test would catch. Mutants that
cannot change behaviour are listed, each with its reason, in
tools/mutation_equivalents.toml and counted apart.

How it stays safe and fast on a small machine:
- The worktree is never changed. The tree is copied once into a temporary
  directory; each mutant is written there and the original put back after the
  run, so an interrupted run leaves nothing behind where you work.
- pytest and the third-party libraries are imported once; each mutant runs
  in a forked child (its own process group, killed after a timeout) that
  imports trellis fresh from the copy.
- A first run of each module's tests records which test executes which line,
  so a mutant runs only the tests that reach it (``-x``: first failure wins).
  A mutant on a line no test executes is not run: it survives, marked
  "not run by any test".

Usage: scripts/mutation [--sample N] [--seed S] [MODULE ...]
MODULE is a path (trellis/conditions.py) or a folder (trellis/templates);
none means every core module.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS_FILE = ROOT / "tools" / "mutation_equivalents.toml"

# Which tests guard which part of the core: fast ones (no sidecar processes), with a
# real etcd only where the code under test exists for etcd alone (the session steps).
# The first matching prefix wins. Each entry: (path prefix, pytest arguments).
_SESSION_TESTS = [
    # The step paths without and with the lock exist on etcd only (an OptimisticStepStore):
    # these folders include tests on a real etcd, which the runner starts per run.
    "tests/sessions", "tests/timers", "tests/etcd/test_session_watch.py",
]
TEST_SETS: list[tuple[str, list[str]]] = [
    ("trellis/engine/", ["tests/engine", "-k", "not grpc"]),
    ("trellis/conditions.py", ["tests/engine", "-k", "not grpc"]),
    ("trellis/templates/", ["tests/templates"]),
    ("trellis/loading/", ["tests/loading"]),
    ("trellis/sessions.py", _SESSION_TESTS),
    # The step path SessionManager goes through, and the stream its watches are.
    ("trellis/locked_store.py", _SESSION_TESTS),
    ("trellis/streams.py", [*_SESSION_TESTS, "tests/loading/test_streams.py"]),
    ("trellis/adapters/", [
        "tests/adapters/test_store_contracts.py", "tests/adapters/test_store_limits.py",
        "tests/adapters/test_store_rules.py", "tests/adapters/test_memory_store.py",
        "tests/adapters/test_file_store.py", "tests/adapters/test_file_store_cleanup.py",
        "tests/adapters/test_memory_store_quota.py", "tests/adapters/test_rules_state_codec.py",
    ]),
]

# The modules measured when no MODULE is given.
CORE = [
    "trellis/engine", "trellis/sessions.py", "trellis/conditions.py", "trellis/templates",
    "trellis/loading", "trellis/adapters/rules.py", "trellis/adapters/memory_store.py",
    "trellis/adapters/file_store.py",
]

# Only pass/fail matters: no assertion rewriting, and none of the end-of-session
# gc.collect() rounds of the unraisable/thread exception plugins (they double a short run).
BASE_FLAGS = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", "--hypothesis-seed=0", "--assert=plain",
              "-p", "no:unraisableexception", "-p", "no:threadexception"]
PYTEST_FLAGS = ["-x", *BASE_FLAGS]


# ---------------------------------------------------------------- mutants

@dataclasses.dataclass(frozen=True)
class Mutant:
    module: str  # path relative to the repository root
    line: int  # first line of the changed code (1-based)
    end_line: int
    start: int  # byte offsets of the replaced source
    end: int
    replacement: str
    description: str  # e.g. "`<=` → `<`"

    def line_text(self, source_lines: list[str]) -> str:
        return source_lines[self.line - 1].strip()

    def mutated_line(self, source: bytes) -> str:
        """The first changed line as it reads in the mutant."""
        return mutated_source(self, source).decode().splitlines()[self.line - 1].strip()


COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
    ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
}
SYMBOLS: dict[type[ast.AST], str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.BitOr: "|", ast.BitAnd: "&", ast.And: "and", ast.Or: "or",
}


def _is_logging_call(call: ast.Call) -> bool:
    # Deleting a log line changes nothing a test should pin down.
    func = call.func
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and "log" in func.value.id.lower())


def _skipped_subtrees(tree: ast.Module) -> set[int]:
    """ids of nodes whose subtrees are not mutated: annotations, docstrings,
    f-strings (positions inside them are unreliable), assert statements,
    ``if TYPE_CHECKING:`` blocks and dataclass ``slots=`` -- none of them is behaviour."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for arg in [*node.args.args, *node.args.posonlyargs, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    mark(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, (ast.JoinedStr, ast.Assert)):
            mark(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            mark(node)
        if isinstance(node, ast.ClassDef):
            # slots= of a dataclass decides the memory layout, not what the class does.
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "slots":
                            mark(keyword.value)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                mark(body[0])
    return skip


class _Offsets:
    def __init__(self, source: bytes) -> None:
        self.starts = [0]
        for i, b in enumerate(source):
            if b == 0x0A:
                self.starts.append(i + 1)

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = self.starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        return start, end


def _expr_variants(node: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """(mutated copy of node, description) for each expression mutation."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            swap = COMPARE_SWAPS.get(type(op))
            if swap is not None:
                new = ast.Compare(node.left, [*node.ops[:i], swap(), *node.ops[i + 1:]], node.comparators)
                yield new, f"`{SYMBOLS[type(op)]}` → `{SYMBOLS[swap]}`"
    elif isinstance(node, ast.BoolOp):
        other: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield ast.BoolOp(other, node.values), f"`{SYMBOLS[type(node.op)]}` → `{SYMBOLS[type(other)]}`"
    elif isinstance(node, ast.BinOp):
        bswap = BINOP_SWAPS.get(type(node.op))
        if bswap is not None:
            description = f"`{SYMBOLS[type(node.op)]}` → `{SYMBOLS[bswap]}`"
            yield ast.BinOp(node.left, bswap(), node.right), description
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield node.operand, "`not` removed"
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield ast.Constant(not value), f"`{value}` → `{not value}`"
        elif isinstance(value, int):
            for new_value in (value + 1, value - 1):
                yield ast.Constant(new_value), f"`{value}` → `{new_value}`"


def _stmt_variants(node: ast.stmt) -> Iterator[tuple[str, str]]:
    """(replacement source, description) for each statement mutation."""
    if isinstance(node, ast.Raise):
        yield "pass", "`raise` removed"
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return None", "`return …` → `return None`"
    elif isinstance(node, ast.Expr):
        call = node.value.value if isinstance(node.value, ast.Await) else node.value
        if isinstance(call, ast.Call) and not _is_logging_call(call):
            yield "pass", "call deleted"
    elif isinstance(node, ast.AugAssign):
        aswap = BINOP_SWAPS.get(type(node.op))
        if aswap is not None:
            new = ast.AugAssign(node.target, aswap(), node.value)
            yield ast.unparse(new), f"`{SYMBOLS[type(node.op)]}=` → `{SYMBOLS[aswap]}=`"


def mutants_of(module: str) -> list[Mutant]:
    source = (ROOT / module).read_bytes()
    tree = ast.parse(source)
    skip = _skipped_subtrees(tree)
    offsets = _Offsets(source)
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        start, end = offsets.span(node)
        if isinstance(node, ast.stmt):
            for text, description in _stmt_variants(node):
                found.append(Mutant(module, node.lineno, node.end_lineno or node.lineno,
                                    start, end, text, description))
        for new, description in _expr_variants(node):
            # Parenthesised, so the change keeps its place in the surrounding expression.
            end_line = getattr(node, "end_lineno", None) or node.lineno
            found.append(Mutant(module, node.lineno, end_line,
                                start, end, f"({ast.unparse(new)})", description))
    found.sort(key=lambda m: (m.line, m.start, m.description))
    return found


def mutated_source(mutant: Mutant, source: bytes) -> bytes:
    return source[:mutant.start] + mutant.replacement.encode() + source[mutant.end:]


# ---------------------------------------------------------------- equivalents

@dataclasses.dataclass(frozen=True)
class Equivalent:
    module: str
    line: str  # the line as written
    mutant: str  # the same line in the mutant
    reason: str
    after: str = ""  # when the same line occurs more than once: the line just above it


def load_equivalents() -> list[Equivalent]:
    if not EQUIVALENTS_FILE.exists():
        return []
    data = tomllib.loads(EQUIVALENTS_FILE.read_text())
    return [
        Equivalent(e["module"], e["line"].strip(), e["mutant"].strip(), e["reason"],
                   e.get("after", "").strip())
        for e in data.get("equivalent", [])
    ]


# ---------------------------------------------------------------- running

def test_args_for(module: str) -> list[str]:
    for prefix, args in TEST_SETS:
        if module.startswith(prefix):
            return args
    raise SystemExit(f"mutation: no tests are mapped to {module} (see TEST_SETS in tools/mutation.py)")


def preload() -> None:
    """Import pytest, its plugins and trellis's third-party libraries once,
    here, so each forked child only imports trellis and the tests."""
    import pytest  # noqa: F401

    for entry in importlib.metadata.entry_points(group="pytest11"):
        try:
            entry.load()
        except Exception:  # a broken plugin fails in the child, visibly
            pass
    for name in ("cel", "ruamel.yaml", "orjson", "grpc", "grpc.aio", "google.protobuf", "hypothesis",
                 "watchfiles", "prometheus_client", "aetcd", "asyncio", "concurrent.futures"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert not any(m == "trellis" or m.startswith("trellis.") for m in sys.modules), \
        "trellis must be imported in the children only"
    # What is loaded now is shared by every child: keep the collector from walking it each time.
    gc.collect()
    gc.freeze()


class Tracer:
    """A pytest plugin recording which test executes which line of the target files."""

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets  # absolute file name -> module path
        self.current: str | None = None
        self.lines: dict[str, dict[int, set[str]]] = {m: {} for m in targets.values()}
        self.order: list[str] = []
        self.seconds: dict[str, float] = {}  # per test: setup + call + teardown

    def trace(self, frame: Any, event: str, arg: Any) -> Any:
        module = self.targets.get(frame.f_code.co_filename)
        if module is None:
            return None
        by_line = self.lines[module]

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "line":
                by_line.setdefault(frame.f_lineno, set()).add(self.current or "<import>")
            return local

        return local

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:  # pytest hook
        self.current = item.nodeid
        self.order.append(item.nodeid)
        sys.settrace(self.trace)  # again: a test (or hypothesis) may have replaced it
        return None

    def pytest_runtest_logreport(self, report: Any) -> None:  # pytest hook
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:  # pytest hook
        self.current = None


def _child(copy: Path, args: list[str], plugins: list[Any], log: Path) -> None:
    """Runs in the forked child: pytest on the copy; never returns."""
    code = 3
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(copy)
        sys.path.insert(0, str(copy))
        os.environ["PYTHONPATH"] = str(copy)
        import pytest

        code = int(pytest.main([*args, "--rootdir", str(copy)], plugins=plugins))
    except BaseException:  # whatever happens, the parent gets an exit status
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start_forked(copy: Path, args: list[str], log: Path, plugins: list[Any] | None = None,
                 after: Any = None) -> int:
    """Start pytest in a forked child; returns its pid (also its process group)."""
    pid = os.fork()
    if pid == 0:
        if after is not None:
            plugins = [after()]
        _child(copy, args, plugins or [], log)
    return pid


def finished(pid: int, deadline: float) -> tuple[bool, int | None]:
    """(done, exit status): status None when the child ran past ``deadline`` and was killed."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return True, os.waitstatus_to_exitcode(status)
    if time.monotonic() > deadline:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        return True, None
    return False, None


def run_forked(copy: Path, args: list[str], timeout: float, log: Path,
               plugins: list[Any] | None = None, after: Any = None) -> int | None:
    """Exit status of pytest in a forked child, or None if it ran past timeout."""
    pid = start_forked(copy, args, log, plugins, after)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = finished(pid, deadline)
            if done:
                return status
            time.sleep(0.02)
    except BaseException:  # stopped meanwhile (Ctrl+C, SIGTERM): take the child along
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise


IGNORED = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache",
                                 ".hypothesis", ".pytest_cache", "*.egg-info", ".mutation")


def make_copy() -> Path:
    base = Path(tempfile.mkdtemp(prefix="trellis-mutation-"))
    copy = base / "tree"
    shutil.copytree(ROOT, copy, ignore=IGNORED, symlinks=True)
    return copy


def baseline(copy: Path, modules: list[str], args: list[str], log: Path) -> dict[str, Any]:
    """Run the tests once unmutated, recording per line the tests that execute it."""
    result_file = log.with_suffix(".json")
    targets = {str(copy / m): m for m in modules}

    def plugin() -> Any:
        tracer = Tracer(targets)

        class Saver:
            def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
                sys.settrace(None)
                result_file.write_text(json.dumps({
                    "order": tracer.order,
                    "seconds": tracer.seconds,
                    "lines": {m: {str(k): sorted(v) for k, v in lines.items()}
                              for m, lines in tracer.lines.items()},
                }))

        sys.settrace(tracer.trace)
        import threading

        threading.settrace(tracer.trace)
        return _Both(tracer, Saver())

    started = time.monotonic()
    status = run_forked(copy, [*args, *BASE_FLAGS], 1800, log, after=plugin)
    if status != 0:  # once more: on a loaded machine a timing-sensitive test can fail once
        print("   (the unmutated tests failed; running them once more)", flush=True)
        status = run_forked(copy, [*args, *BASE_FLAGS], 1800, log, after=plugin)
    elapsed = time.monotonic() - started
    if status != 0 or not result_file.exists():
        tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"mutation: the unmutated tests fail ({' '.join(args)}): fix them first")
    data: dict[str, Any] = json.loads(result_file.read_text())
    data["elapsed"] = elapsed
    return data


class _Both:
    def __init__(self, tracer: Tracer, saver: Any) -> None:
        self.tracer = tracer
        self.saver = saver

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
        return self.tracer.pytest_runtest_protocol(item, nextitem)

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.tracer.pytest_runtest_logreport(report)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.tracer.pytest_runtest_logfinish(nodeid, location)

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        self.saver.pytest_sessionfinish(session, exitstatus)


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | timeout | survived | not run | equivalent
    reason: str = ""


def select_tests(mutant: Mutant, data: dict[str, Any]) -> list[str] | None:
    """Tests to run for a mutant: those executing its lines; every test if the
    lines run only at import (module level); None if nothing executes them."""
    lines = data["lines"].get(mutant.module, {})
    tests: set[str] = set()
    at_import = False
    for n in range(mutant.line, mutant.end_line + 1):
        for who in lines.get(str(n), []):
            if who == "<import>":
                at_import = True
            else:
                tests.add(who)
    if tests:
        return [t for t in data["order"] if t in tests]
    if at_import:
        return list(data["order"])
    return None


def key_of(mutant: Mutant, source: bytes) -> str:
    """Names a mutant by what it changes and which line of that text it is (the first, the
    second, ...), not where: it still matches after lines move, and two identical lines (a
    bare ``raise``) do not share an outcome."""
    lines = source.decode().splitlines()
    text = mutant.line_text(lines)
    nth = sum(1 for line in lines[: mutant.line - 1] if line.strip() == text)
    return "|".join((mutant.module, mutant.description, text, mutant.mutated_line(source), str(nth)))


def write_module(path: Path, source: bytes) -> None:
    """Write a module of the copy and drop its compiled form: a .pyc is trusted by source
    size and mtime in seconds, which two mutants written in the same second can share."""
    path.write_bytes(source)
    for stale in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
        stale.unlink()


def run_module_group(copies: list[Path], modules: list[str], args: list[str], sample: int | None, seed: int,
                     equivalents: list[Equivalent], known: dict[str, str],
                     save: Callable[[], None]) -> list[Outcome]:
    """Run the mutants of ``modules`` (which share ``args``), one per copy of the tree at a time."""
    print(f"== {', '.join(modules)}: baseline ({' '.join(args)})", flush=True)
    for copy in copies:  # the tests as they are now: a long run picks up tests added meanwhile
        shutil.rmtree(copy / "tests")
        shutil.copytree(ROOT / "tests", copy / "tests", ignore=IGNORED, symlinks=True)
    data = baseline(copies[0], modules, args, copies[0].parent / "baseline.log")
    outcomes: list[Outcome] = []
    for module in modules:
        original = (copies[0] / module).read_bytes()
        lines = original.decode().splitlines()
        mutants = mutants_of(module)
        total = len(mutants)
        if sample is not None and total > sample:
            mutants = sorted(random.Random(f"{seed}:{module}").sample(mutants, sample),
                             key=lambda m: (m.line, m.start, m.description))
        sampled = f" (sample of {total})" if len(mutants) < total else ""
        print(f"-- {module}: {len(mutants)} mutants{sampled}", flush=True)
        results: dict[Mutant, Outcome] = {}
        pending: list[tuple[Mutant, list[str]]] = []
        everything = sorted(data["order"], key=lambda t: data["seconds"].get(t, 1.0))
        for mutant in mutants:
            text = mutant.line_text(lines)
            changed = mutant.mutated_line(original)
            above = lines[mutant.line - 2].strip() if mutant.line > 1 else ""
            eq = next((e for e in equivalents if e.module == module and e.line == text
                       and e.mutant == changed and e.after in ("", above)), None)
            if eq is not None:
                results[mutant] = Outcome(mutant, "equivalent", eq.reason)
            elif known.get(key_of(mutant, original)) in ("killed", "timeout"):
                results[mutant] = Outcome(mutant, "killed", "in an earlier run")
            else:
                tests = select_tests(mutant, data)
                if tests is None:
                    results[mutant] = Outcome(mutant, "not run")
                else:
                    # The quickest tests first: most mutants die in the first one.
                    tests.sort(key=lambda t: data["seconds"].get(t, 1.0))
                    pending.append((mutant, tests))
        free = list(range(len(copies)))
        running: dict[int, tuple[int, Mutant, float, bool]] = {}  # pid -> (copy, mutant, deadline, all tests)

        try:
            while pending or running:
                while pending and free:
                    slot = free.pop()
                    mutant, tests = pending.pop(0)
                    write_module(copies[slot] / module, mutated_source(mutant, original))
                    # Generous (start-up, a loaded machine), yet a mutant stuck in a loop costs
                    # seconds, not the length of the whole first run.
                    timeout = 15.0 + 5 * sum(data["seconds"].get(t, 1.0) for t in tests)
                    log = copies[slot].parent / "mutant.log"
                    pid = start_forked(copies[slot], [*tests, *PYTEST_FLAGS], log)
                    running[pid] = (slot, mutant, time.monotonic() + timeout, tests is everything)
                for pid, (slot, mutant, deadline, all_tests) in list(running.items()):
                    done, status = finished(pid, deadline)
                    if not done:
                        continue
                    del running[pid]
                    write_module(copies[slot] / module, original)
                    free.append(slot)
                    if status == 0 and not all_tests and len(everything) > 1:
                        # Survived the tests that run its line. A line run once per process (a
                        # cache filled lazily) is credited to the first test only, so before
                        # calling it a survivor, run the module's whole test set.
                        pending.append((mutant, everything))
                        continue
                    kind = "timeout" if status is None else "survived" if status == 0 else "killed"
                    results[mutant] = Outcome(mutant, kind)
                    known[key_of(mutant, original)] = kind
                    print({"killed": ".", "timeout": "T", "survived": "S"}[kind], end="", flush=True)
                time.sleep(0.02)
        finally:
            for pid in running:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            for copy in copies:
                write_module(copy / module, original)
        mine = [results[m] for m in mutants]
        outcomes += mine
        print(flush=True)
        save()
        print_survivors(mine)
    return outcomes


def expand(names: list[str]) -> list[str]:
    modules: list[str] = []
    for name in names:
        target = (ROOT / name).resolve()
        if not target.exists():
            raise SystemExit(f"mutation: no such module or folder: {name}")
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if f.stat().st_size and rel not in modules and "__pycache__" not in rel:
                modules.append(rel)
    return modules


def percent(part: int, whole: int) -> str:
    """Rounded down, so that 100.0% means every one."""
    return f"{math.floor(1000 * part / whole) / 10:.1f}%" if whole else "-"


def report(outcomes: list[Outcome], modules: list[str], sample: int | None, seed: int) -> None:
    print("\n| module | mutants | killed | equivalent | survived | score |")
    print("|---|---:|---:|---:|---:|---:|")
    totals = [0, 0, 0, 0]
    for module in modules:
        mine = [o for o in outcomes if o.mutant.module == module]
        if not mine:
            continue
        killed = sum(o.status in ("killed", "timeout") for o in mine)
        equivalent = sum(o.status == "equivalent" for o in mine)
        survived = len(mine) - killed - equivalent
        counted = len(mine) - equivalent
        score = percent(killed, counted)
        print(f"| {module} | {len(mine)} | {killed} | {equivalent} | {survived} | {score} |")
        for i, n in enumerate((len(mine), killed, equivalent, survived)):
            totals[i] += n
    counted = totals[0] - totals[2]
    score = percent(totals[1], counted)
    print(f"| **all** | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]} | {score} |")
    if sample is not None:
        print(f"(at most {sample} mutants per module, sampled with seed {seed})")
    if any(o.status in ("survived", "not run") for o in outcomes):
        print("\nSurviving mutants:")
        print_survivors(outcomes)


def print_survivors(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        if o.status not in ("survived", "not run"):
            continue
        m = o.mutant
        source = (ROOT / m.module).read_bytes()
        line = source.decode().splitlines()[m.line - 1].strip()
        note = " (not run by any test)" if o.status == "not run" else ""
        print(f"  {m.module}:{m.line}: {m.description}{note}")
        print(f"      - {line}\n      + {m.mutated_line(source)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module files or folders (default: the core)")
    parser.add_argument("--sample", type=int, help="at most N mutants per module, chosen by --seed")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at the same time (default 1)")
    parser.add_argument("--results", type=Path, default=ROOT / ".mutation" / "results.json",
                        help="where each mutant's outcome is kept (default: .mutation/results.json)")
    parser.add_argument("--again", action="store_true",
                        help="count mutants killed in the kept results as killed; run only the others")
    options = parser.parse_args(argv)
    modules = expand(options.modules or CORE)
    if options.list:
        for module in modules:
            lines = (ROOT / module).read_text().splitlines()
            for m in mutants_of(module):
                print(f"{m.module}:{m.line}: {m.description}: {m.line_text(lines)}")
        return 0
    groups: dict[tuple[str, ...], list[str]] = {}
    for module in modules:
        groups.setdefault(tuple(test_args_for(module)), []).append(module)
    preload()
    equivalents = load_equivalents()
    # Stopped with SIGTERM: unwind, so the temporary copy is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results: Path = options.results
    kept: dict[str, str] = json.loads(results.read_text()) if results.exists() else {}
    known = dict(kept) if options.again else {}

    def save() -> None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps({**kept, **known}, indent=0, ensure_ascii=False))

    copies: list[Path] = []
    outcomes: list[Outcome] = []
    try:
        for _ in range(max(1, options.jobs)):
            copies.append(make_copy())
        for args, group in groups.items():
            outcomes += run_module_group(copies, group, list(args), options.sample, options.seed,
                                         equivalents, known, save)
    finally:
        for copy in copies:
            shutil.rmtree(copy.parent, ignore_errors=True)
    report(outcomes, modules, options.sample, options.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
