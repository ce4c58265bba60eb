"""Reading node files: size and encoding checks, YAML 1.2, JSON and Markdown frontmatter
(docs/engine.md, "Graphs and node IDs").

Every failure is a NodeDefinitionError naming the file (``source``) and, when the
parser knows it, the line, so a broken flow file never surfaces as a bare traceback.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from trellis.errors import NodeDefinitionError

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
"""Node files larger than this are refused: a flow file is small, a huge one is a mistake or an attack."""


class _Yaml12Constructor(SafeConstructor):
    """Safe constructor that keeps date-like scalars as the strings they were written as.

    The Go original reads YAML with the 1.2 core schema, where there is no timestamp
    type: ``deadline: 2024-01-02`` is the string "2024-01-02", not a date object.
    """


_Yaml12Constructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)


_local = threading.local()


def _yaml() -> YAML:
    """This thread's YAML reader: building one costs about as much as parsing a small file,
    and one instance must not be used by two threads at once (loaders parse in threads)."""
    yaml: YAML | None = getattr(_local, "yaml", None)
    if yaml is None:
        yaml = YAML(typ="safe", pure=True)
        # 1.2 core: yes/no/on/off/y/n stay strings; only true/false are booleans.
        yaml.version = (1, 2)
        yaml.Constructor = _Yaml12Constructor
        _local.yaml = yaml
    return yaml


def load_yaml(text: str, *, source: str, node_id: str, first_line: int = 1) -> Any:
    """Parse one YAML document with 1.2 core semantics.

    ``first_line`` is the line of the file where ``text`` starts (frontmatter starts on
    line 2), so that reported line numbers point into the file the user edits.
    """
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + first_line}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise NodeDefinitionError(node_id, source, "", f"invalid YAML{where}: {problem}") from None
    except YAMLError as exc:
        raise NodeDefinitionError(node_id, source, "", f"invalid YAML: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str, *, source: str, node_id: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise NodeDefinitionError(
            node_id, source, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise NodeDefinitionError(node_id, source, "", f"invalid JSON: {exc}") from None


def split_frontmatter(text: str, *, source: str, node_id: str) -> tuple[str | None, str]:
    """Split a Markdown file into (frontmatter YAML or None, body), exactly as
    docs/engine.md ("Graphs and node IDs") says.

    Frontmatter exists only when the file starts with ``---`` + newline; it ends at the
    first later ``---`` (even mid-line, as the original does); the body loses exactly one
    leading newline and keeps everything else.
    """
    if text.startswith("---\n"):
        start = 4
    elif text.startswith("---\r\n"):
        start = 5
    else:
        return None, text
    end = text.find("---", start)
    if end < 0:
        raise NodeDefinitionError(node_id, source, "", "frontmatter starts with '---' but is never closed")
    body = text[end + 3 :]
    if body.startswith("\r\n"):
        body = body[2:]
    elif body.startswith("\n"):
        body = body[1:]
    return text[start:end], body


def parse_document(
    text: str, extension: str, *, source: str, node_id: str
) -> tuple[dict[str, Any], str | None]:
    """File text → (definition mapping, body). The body is None when the format has none.

    Markdown: frontmatter mapping + body. JSON/YAML: the whole document is the mapping;
    its ``content`` key (if present) is returned as the body by build_draft.
    """
    body: str | None
    if extension == ".md":
        front, body = split_frontmatter(text, source=source, node_id=node_id)
        data = load_yaml(front, source=source, node_id=node_id, first_line=2) if front is not None else None
    elif extension == ".json":
        data = load_json(text, source=source, node_id=node_id)
        body = None
    else:
        data = load_yaml(text, source=source, node_id=node_id)
        body = None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = "frontmatter" if extension == ".md" else "document"
        raise NodeDefinitionError(
            node_id, source, "", f"the {what} must be a mapping of fields, got {type_name(data)}"
        )
    if extension == ".md":
        # A `content` key in frontmatter is not used for Markdown files (the body is the content).
        data.pop("content", None)
    return data, body


def decode_utf8(raw: bytes, *, source: str, node_id: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NodeDefinitionError(
            node_id, source, "", f"file is not valid UTF-8 (bad byte at line {line}, offset {exc.start})"
        ) from None


def type_name(value: object) -> str:
    """How a value's kind is named in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
