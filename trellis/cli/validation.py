"""Checking a flow directory before running it (docs/cli.md; docs/engine-differences.md, fix #16).

Every problem is collected (not just the first), each naming the file and the
field. Errors make the flow unusable or wrong at run time; warnings are legal but
suspicious (unreachable nodes, tools not declared in tools.yaml, an
``on_signal_default`` that can never fire). ``strict`` turns warnings into errors.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from trellis.adapters.directory_loader import DirectoryLoader
from trellis.adapters.process_dispatcher import load_tools
from trellis.cli.project import TOOL_REGISTRY_FILES, tool_registry_ids
from trellis.conditions import compile_condition
from trellis.domain import Node
from trellis.engine.compiled import CompiledNode, is_rollback
from trellis.engine.context_checks import parse_schema_type
from trellis.errors import ConditionError, GraphError, NodeDefinitionError, TemplateError, TrellisError
from trellis.go_values import parse_duration
from trellis.loading import build_draft, parse_document, strip_node_extension
from trellis.loading.ids import node_extension
from trellis.templates import compile_template

_TEMPLATE_PROBLEM = re.compile(r"(\d+):(\d+): ([^\n]*)$")

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: str
    source: str
    field: str
    message: str
    node_id: str = ""

    def __str__(self) -> str:
        where = self.source + (f": {self.field}" if self.field else "")
        return f"{self.severity}: {where}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "node": self.node_id,
            "file": self.source,
            "field": self.field,
            "message": self.message,
        }


@dataclass(slots=True)
class Report:
    flow: str
    entry: str
    node_count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]


def _walk_ids(root: Path) -> list[str]:
    """Node IDs read file by file, used only when the listing fails (ID collisions):
    the explicit ``id`` when the file declares one, else the path-derived ID."""
    ids: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        base = Path(directory).relative_to(root).as_posix()
        for name in filenames:
            extension = node_extension(name)
            if name.startswith(".") or not extension:
                continue
            rel = name if base == "." else f"{base}/{name}"
            path_id = strip_node_extension(rel)
            try:
                text = (Path(directory) / name).read_text(encoding="utf-8")
                data, body = parse_document(text, extension, source=rel, node_id=path_id)
                ids.add(build_draft(path_id, data, body, source=rel).node.id)
            except (OSError, UnicodeDecodeError, TrellisError):
                ids.add(path_id)  # the loader reports why it cannot be read
    return sorted(ids)


def _edges(node: Node, *, is_entry: bool) -> list[tuple[str, str]]:
    """(field, target) for every edge the engine can follow out of ``node``."""
    edges = [(f"transitions[{i}].to", t.to_node_id) for i, t in enumerate(node.transitions)]
    if node.on_error:
        edges.append(("on_error", node.on_error))
    if node.on_denied:
        edges.append(("on_denied", node.on_denied))
    edges += [(f"on_signal.{name}", target) for name, target in sorted(node.on_signal.items())]
    if is_entry:
        edges += [
            (f"on_signal_default.{name}", target) for name, target in sorted(node.on_signal_default.items())
        ]
    return edges


def _rollback_allowed(edge_field: str) -> bool:
    # `rollback` is a pseudo-target for transitions, on_error and on_denied; a signal
    # target named rollback is an ordinary node ID (docs/engine-differences.md, fix #7).
    return not edge_field.startswith(("on_signal.", "on_signal_default."))


class _Checker:
    def __init__(self, report: Report, tool_names: set[str] | None) -> None:
        self.report = report
        self.tool_names = tool_names

    def add(self, severity: str, node: Node | str, field_name: str, message: str) -> None:
        if isinstance(node, Node):
            source, node_id = node.source or node.id, node.id
        else:
            source, node_id = node, node
        self.report.problems.append(Problem(severity, source, field_name, message, node_id))

    def template(self, node: Node, field_name: str, text: str) -> None:
        if "{{" not in text:
            return
        try:
            compile_template(text)
        except TemplateError as exc:
            # "invalid template '<the whole text>': 3:7: problem" → "line 3, column 7: problem":
            # file and field are already named, and the text may span many lines.
            found = _TEMPLATE_PROBLEM.search(exc.message)
            message = (
                f"invalid template at line {found[1]}, column {found[2]}: {found[3]}"
                if found
                else exc.message
            )
            self.add(ERROR, node, field_name, message)

    def condition(self, node: Node, field_name: str, expr: str) -> None:
        where = f"{node.source or node.id}: {field_name}"
        try:
            compile_condition(expr, where=where)
        except ConditionError as exc:
            self.add(ERROR, node, field_name, exc.message.removeprefix(f"{where}: "))

    def node(self, node: Node, is_entry: bool) -> None:
        if node.type == "format":
            for locale, items in sorted(node.messages.items()):
                # Items are concatenated before interpolation, so check the whole text.
                self.template(node, f"messages[{locale!r}]", "".join(item.text for item in items))
                for index, item in enumerate(items):
                    if item.condition:
                        self.condition(node, f"messages[{locale!r}][{index}].condition", item.condition)
        self.template(node, "content", node.content)
        for index, transition in enumerate(node.transitions):
            if transition.condition:
                self.condition(node, f"transitions[{index}].condition", transition.condition)
        for call_field, call in (("do", node.do), ("undo", node.undo)):
            if call is None:
                continue
            for key, value in (call.args or {}).items():
                if isinstance(value, str):
                    self.template(node, f"{call_field}.args.{key}", value)
            if self.tool_names is not None and call.name not in self.tool_names:
                self.add(
                    WARNING, node, f"{call_field}.name", f"tool '{call.name}' is not declared in tools.yaml"
                )
        for key, type_text in node.context_schema.items():
            try:
                parse_schema_type(type_text)
            except ValueError as exc:
                self.add(ERROR, node, f"context_schema.{key}", str(exc))
        if node.timeout:
            try:
                parse_duration(node.timeout)
            except ValueError:
                self.add(
                    ERROR, node, "timeout", f"invalid duration {node.timeout!r} (examples: 30s, 1m30s, 500ms)"
                )
        listens = node.wait or bool(node.input_type) or node.type == "question"
        if node.do is not None and listens:
            self.add(ERROR, node, "do", "a node cannot both call a tool ('do') and wait for input")
        if node.type == "tool" and node.do is None:
            self.add(ERROR, node, "type", "type 'tool' needs a 'do' tool call")
        if node.on_signal_default and not is_entry:
            self.add(WARNING, node, "on_signal_default", "only the entry node's on_signal_default is used")
        # Anything the engine's own compilation rejects that the checks above missed.
        if not any(p.node_id == node.id and p.severity == ERROR for p in self.report.problems):
            try:
                CompiledNode(node)
            except TrellisError as exc:
                self.add(ERROR, node, "", exc.message)


async def validate_flow(directory: Path, entry: str, *, default_error_node: str = "") -> Report:
    """Every problem of the flow in ``directory`` whose entry node is ``entry``."""
    loader = DirectoryLoader(directory)
    report = Report(flow=str(directory), entry=entry)
    tools_files = [directory / name for name in TOOL_REGISTRY_FILES]
    tool_names: set[str] | None = None
    checker = _Checker(report, None)
    for tools_file in tools_files:
        if tools_file.is_file():
            try:
                tool_names = {tool.name for tool in load_tools(tools_file)}
            except TrellisError as exc:
                checker.add(ERROR, tools_file.name, "", exc.message)
            break
    checker.tool_names = tool_names
    registry_ids = tool_registry_ids(directory)

    try:
        ids = await loader.list_nodes()
    except GraphError as exc:
        for problem in exc.problems or [exc.message]:
            checker.add(ERROR, directory.name, "id", problem)
        ids = _walk_ids(directory)

    if not ids and not report.problems:
        checker.add(
            ERROR,
            directory.name,
            "",
            f"no node files in '{directory}' (a node is a .md, .yaml, .yml or .json file)",
        )
        return report

    nodes: dict[str, Node] = {}
    unreadable = False
    for node_id in ids:
        if node_id in registry_ids:
            continue
        try:
            nodes[node_id] = await loader.get_node(node_id)
        except NodeDefinitionError as exc:
            report.problems.append(Problem(ERROR, exc.source or node_id, exc.field, exc.problem, node_id))
            unreadable = True
        except TrellisError as exc:
            checker.add(ERROR, node_id, "", exc.message)
            unreadable = True
    report.node_count = len(nodes)
    known = set(nodes) | {i for i in ids if i not in registry_ids}

    for node_id, node in nodes.items():
        checker.node(node, node_id == entry)

    def exists(target: str) -> bool:
        return target in known or strip_node_extension(target) in known

    if not exists(entry):
        checker.add(ERROR, directory.name, "entry", f"entry node '{entry}' not found")
    for node_id, node in nodes.items():
        for edge_field, target in _edges(node, is_entry=node_id == entry):
            if is_rollback(target) and _rollback_allowed(edge_field):
                continue
            if not exists(target):
                checker.add(ERROR, node, edge_field, f"target node '{target}' does not exist")

    # Reachability from the entry over every edge, plus the default error node.
    seen: set[str] = set()
    queue = deque([entry] + ([default_error_node] if default_error_node else []))
    while queue:
        current = strip_node_extension(queue.popleft())
        if current in seen or current not in nodes:
            continue
        seen.add(current)
        for _field, target in _edges(nodes[current], is_entry=current == entry):
            queue.append(target)
    # A node that cannot be read hides its edges: the nodes behind it would all be
    # reported unreachable, burying the one real error. Say nothing about reachability then.
    if exists(entry) and not unreadable:
        for node_id in sorted(set(nodes) - seen):
            checker.add(WARNING, nodes[node_id], "", f"node '{node_id}' is not reachable from '{entry}'")
    return report
