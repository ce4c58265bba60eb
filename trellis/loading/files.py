"""One node file's bytes → a draft: the whole per-file pipeline, shared by every loader
that stores node files (directory, etcd, ...)."""

from __future__ import annotations

from trellis.errors import NodeDefinitionError
from trellis.loading.build import build_draft
from trellis.loading.drafts import NodeDraft
from trellis.loading.formats import DEFAULT_MAX_FILE_BYTES, decode_utf8, parse_document
from trellis.loading.ids import node_extension, strip_node_extension


def draft_from_bytes(
    raw: bytes, path: str, *, source: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> NodeDraft:
    """Check size and encoding, parse by extension, apply the sugar.

    ``path`` is the file's path relative to the graph root with forward slashes; its
    extension picks the format and, stripped, gives the default node ID
    (docs/engine.md, "Graphs and node IDs").
    Raises NodeDefinitionError naming ``source``. Its ``node_id`` is the explicit ID when
    the file got far enough to declare one, else the path-derived ID, so a loader can list
    a broken file under the ID it will be asked for.
    """
    extension = node_extension(path)
    if not extension:
        raise ValueError(f"{path!r} is not a node file (expected one of .md .json .yaml .yml)")
    path_id = strip_node_extension(path)
    if len(raw) > max_bytes:
        raise NodeDefinitionError(path_id, source, "", f"file is larger than the limit of {max_bytes} bytes")
    text = decode_utf8(raw, source=source, node_id=path_id)
    data, body = parse_document(text, extension, source=source, node_id=path_id)
    return build_draft(path_id, data, body, source=source)
