"""Turning node definitions (Markdown with frontmatter, JSON, YAML) into canonical nodes.

Used by every graph loader: ``build_draft``/``build_node`` apply the sugar and strict
typing of docs/engine.md ("Node fields"), ``resolve_tools`` resolves tool imports across
nodes (``tools``), ``parse_document`` reads the file formats ("Graphs and node IDs") and
``draft_from_bytes`` runs the whole per-file pipeline (size, UTF-8, format, sugar) for
loaders that store files.
"""

from trellis.loading.build import build_draft, build_node
from trellis.loading.drafts import DraftLookup, NodeDraft, ToolImport
from trellis.loading.files import draft_from_bytes
from trellis.loading.formats import DEFAULT_MAX_FILE_BYTES, load_yaml, parse_document, split_frontmatter
from trellis.loading.ids import NODE_EXTENSIONS, strip_node_extension
from trellis.loading.tools import importers_of, resolve_tools

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "NODE_EXTENSIONS",
    "DraftLookup",
    "NodeDraft",
    "ToolImport",
    "build_draft",
    "build_node",
    "draft_from_bytes",
    "importers_of",
    "load_yaml",
    "parse_document",
    "resolve_tools",
    "split_frontmatter",
    "strip_node_extension",
]
