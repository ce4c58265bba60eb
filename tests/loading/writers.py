"""Writing file-form definitions as node files, for the directory loader tests."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def _yaml_text(data: Mapping[str, Any]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(dict(data), out)
    return out.getvalue()


def write_definition(root: Path, definition: Mapping[str, Any], extension: str = ".json") -> Path:
    """Write ``definition`` (file form, with ``id`` and optional ``content``) as ``<id><extension>``."""
    path = root / f"{definition['id']}{extension}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if extension == ".json":
        text = json.dumps(dict(definition), indent=2)
    elif extension in (".yaml", ".yml"):
        text = _yaml_text(definition)
    else:
        front = {k: v for k, v in definition.items() if k != "content"}
        text = f"---\n{_yaml_text(front)}---\n{definition.get('content', '')}"
    path.write_text(text, encoding="utf-8")
    return path


def remove_definition(root: Path, node_id: str) -> None:
    for extension in (".md", ".json", ".yaml", ".yml"):
        (root / f"{node_id}{extension}").unlink(missing_ok=True)
