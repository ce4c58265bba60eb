"""Reading node files: YAML 1.2 core semantics, Markdown frontmatter, JSON/YAML
(docs/engine.md, "Graphs and node IDs")."""

from __future__ import annotations

import pytest

from trellis.errors import NodeDefinitionError
from trellis.loading import load_yaml, parse_document, split_frontmatter


def parse_md(text: str) -> tuple[dict[str, object], str | None]:
    return parse_document(text, ".md", source="flows/x.md", node_id="x")


# --- YAML 1.2 core -----------------------------------------------------------------------


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "NO"])
def test_yaml_boolean_like_words_stay_strings(word: str) -> None:
    assert load_yaml(f"v: {word}\n", source="f", node_id="x") == {"v": word}


def test_yaml_only_true_and_false_are_booleans() -> None:
    assert load_yaml("a: true\nb: false\n", source="f", node_id="x") == {"a": True, "b": False}


@pytest.mark.parametrize("scalar", ["2024-01-02", "2024-01-02T10:00:00Z", "2001-12-14 21:59:43.10 -5"])
def test_yaml_dates_stay_strings(scalar: str) -> None:
    assert load_yaml(f"when: {scalar}\n", source="f", node_id="x") == {"when": scalar}


def test_yaml_numbers_keep_their_kind() -> None:
    assert load_yaml("i: 3\nf: 1.5\nz: 010\n", source="f", node_id="x") == {"i": 3, "f": 1.5, "z": 10}


def test_input_default_no_is_the_string_no() -> None:
    data, _ = parse_md("---\ninput_type: confirm\ninput_default: no\n---\nProceed?\n")
    assert data["input_default"] == "no"


# --- Markdown frontmatter ---------------------------------------------------------------------


def test_frontmatter_and_body_with_one_leading_newline_removed() -> None:
    assert parse_md("---\ntype: text\n---\nHello\n") == ({"type": "text"}, "Hello\n")


def test_body_keeps_a_second_leading_newline_and_trailing_newlines() -> None:
    assert parse_md("---\ntype: text\n---\n\nPara\n\n") == ({"type": "text"}, "\nPara\n\n")


def test_crlf_frontmatter_is_recognised() -> None:
    data, body = parse_md("---\r\ntype: question\r\n---\r\nHi\r\n")
    assert data == {"type": "question"}
    assert body == "Hi\r\n"


@pytest.mark.parametrize(
    "text",
    ["\n---\ntype: question\n---\nBody\n", "\ufeff---\ntype: question\n---\nBody\n", " ---\ntype: q\n---\n"],
)
def test_frontmatter_only_when_the_file_starts_exactly_with_dashes(text: str) -> None:
    assert parse_md(text) == ({}, text)


def test_file_without_frontmatter_is_all_content() -> None:
    assert parse_md("# Title\n\nText\n") == ({}, "# Title\n\nText\n")


def test_frontmatter_ends_at_the_first_later_three_dashes_even_mid_line() -> None:
    front, body = split_frontmatter("---\na: 1\nb: x---y\n---\nrest\n", source="f", node_id="x")
    assert front == "a: 1\nb: x"
    assert body == "y\n---\nrest\n"


def test_later_separators_stay_in_the_body() -> None:
    data, body = parse_md("---\ntype: text\n---\n# One\n\n---\n\n---\nid: two\n---\n")
    assert data == {"type": "text"}
    assert body == "# One\n\n---\n\n---\nid: two\n---\n"


def test_unclosed_frontmatter_is_an_error_naming_the_file() -> None:
    with pytest.raises(NodeDefinitionError, match=r"flows/x\.md: .*never closed"):
        parse_md("---\ntype: text\nHello\n")


def test_content_key_in_frontmatter_is_not_used() -> None:
    data, body = parse_md("---\ncontent: ignored\n---\nreal\n")
    assert "content" not in data
    assert body == "real\n"


def test_empty_frontmatter_is_an_empty_definition() -> None:
    assert parse_md("---\n---\nBody") == ({}, "Body")


def test_malformed_frontmatter_yaml_names_file_and_file_line() -> None:
    with pytest.raises(NodeDefinitionError) as caught:
        parse_md("---\ntype: text\nto: [a\nwait: true\n---\nBody\n")
    message = str(caught.value)
    assert message.startswith("flows/x.md: invalid YAML at line ")
    # the error is in the frontmatter, which starts on line 2 of the file
    assert int(message.split("at line ")[1].split(":")[0]) in (4, 5)


def test_frontmatter_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(NodeDefinitionError, match="must be a mapping of fields, got list"):
        parse_md("---\n- a\n- b\n---\n")


def test_duplicate_yaml_keys_are_an_error() -> None:
    with pytest.raises(NodeDefinitionError, match=r"flows/x\.md: invalid YAML at line 3"):
        parse_md("---\nto: a\nto: b\n---\n")


# --- JSON and YAML documents ----------------------------------------------------------------------


def test_json_document_is_the_definition() -> None:
    data, body = parse_document(
        '{"type": "question", "content": "Hi"}', ".json", source="f.json", node_id="f"
    )
    assert data == {"type": "question", "content": "Hi"}
    assert body is None  # the `content` key is taken by build_draft


def test_malformed_json_names_file_line_and_column() -> None:
    with pytest.raises(
        NodeDefinitionError, match=r"g/c\.json: invalid JSON at line 4 column 1: Expecting value"
    ):
        parse_document('{\n  "type": "text",\n  "to": \n}', ".json", source="g/c.json", node_id="c")


def test_json_nan_is_rejected() -> None:
    with pytest.raises(NodeDefinitionError, match="NaN is not valid JSON"):
        parse_document('{"a": NaN}', ".json", source="g/c.json", node_id="c")


def test_yaml_document_is_the_definition() -> None:
    data, body = parse_document("type: question\ncontent: Hi\n", ".yaml", source="f.yaml", node_id="f")
    assert data == {"type": "question", "content": "Hi"}
    assert body is None


def test_empty_yaml_document_is_an_empty_definition() -> None:
    assert parse_document("", ".yml", source="f.yml", node_id="f") == ({}, None)


def test_yaml_document_that_is_a_scalar_is_an_error() -> None:
    with pytest.raises(NodeDefinitionError, match=r"f\.yaml: the document must be a mapping"):
        parse_document("just text\n", ".yaml", source="f.yaml", node_id="f")


def test_a_yaml_file_reports_errors_at_the_files_own_lines() -> None:
    with pytest.raises(NodeDefinitionError, match=r"invalid YAML at line 3: expected the node content"):
        parse_document("a: 1\nb: [\n", ".yaml", source="s.yaml", node_id="s")
    with pytest.raises(NodeDefinitionError, match=r"invalid YAML at line 1: found undefined alias 'x'"):
        parse_document("a: *x\n", ".yaml", source="s.yaml", node_id="s")


def test_a_crlf_frontmatter_reports_errors_at_the_files_own_lines() -> None:
    # The list opened on line 3 is still open at the closing dashes, on line 4.
    for newline in ("\n", "\r\n"):
        text = newline.join(["---", "a: 1", "b: [", "---", "body"])
        with pytest.raises(NodeDefinitionError, match=r"invalid YAML at line 4: "):
            parse_document(text, ".md", source="s.md", node_id="s")


def test_yaml_1_2_reads_yes_and_on_as_strings_in_a_yaml_file() -> None:
    data, _ = parse_document("a: yes\nb: on\nc: true\n", ".yaml", source="s.yaml", node_id="s")
    assert data == {"a": "yes", "b": "on", "c": True}


def test_a_character_yaml_does_not_allow_is_an_error_naming_it() -> None:
    with pytest.raises(NodeDefinitionError, match=r"s\.yaml: invalid YAML: unacceptable character #x0007"):
        parse_document("a: \x07", ".yaml", source="s.yaml", node_id="s")
