"""The error table: every trellis error has a deliberate status code and comes back
to a client as the same class with the same fields."""

from __future__ import annotations

import grpc
import pytest

from trellis import errors
from trellis.api import error_table


def _instance(cls: type[errors.TrellisError]) -> errors.TrellisError:
    samples: dict[type[errors.TrellisError], errors.TrellisError] = {
        errors.NodeLoadError: errors.NodeLoadError("n1", "cannot load n1"),
        errors.NodeNotFound: errors.NodeNotFound("n1"),
        errors.NodeDefinitionError: errors.NodeDefinitionError("n1", "n1.md", "do", "must be a mapping"),
        errors.GraphError: errors.GraphError("bad graph", ["a collides with b"]),
        errors.ExecutionViolation: errors.ExecutionViolation("n1", "do and input"),
        errors.ContextValidationError: errors.ContextValidationError("n1", ["a", "b"]),
        errors.ContextTypeValidationError: errors.ContextTypeValidationError("n1", ["a: want int"]),
        errors.InvalidConfirmation: errors.InvalidConfirmation("maybe"),
        errors.ReservedNamespace: errors.ReservedNamespace("n1"),
        errors.ExpectedToolResult: errors.ExpectedToolResult(),
        errors.ToolResultMismatch: errors.ToolResultMismatch("x", "y"),
        errors.UnhandledToolError: errors.UnhandledToolError("n1", "t", "boom"),
        errors.UnhandledSignal: errors.UnhandledSignal("sig", "n1"),
        errors.SessionNotFound: errors.SessionNotFound("s1"),
        errors.RevisionMismatch: errors.RevisionMismatch("s1", 3, 5),
        errors.RequestIdReused: errors.RequestIdReused("s1", "r-1"),
        errors.WatchRevisionCompacted: errors.WatchRevisionCompacted("s1", 5, 9),
    }
    return samples.get(cls) or cls(f"a {cls.__name__}")


ALL = errors.all_error_classes()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_class_has_a_deliberate_code_and_survives_the_round_trip(
    cls: type[errors.TrellisError],
) -> None:
    exc = _instance(cls)
    code, message, details = error_table.status_for(exc)
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)
    info = error_table.error_info_from(details)
    assert info is not None and info.reason == cls.reason and info.domain == "trellis.dev"

    back = error_table.error_from_status(code, message, details)
    assert type(back) is cls
    assert isinstance(back, errors.TrellisError) and back.message == exc.message
    for field in (
        "node_id",
        "session_id",
        "tool_name",
        "cause",
        "signal",
        "missing_keys",
        "errors",
        "problems",
        "request_id",
        "expected_revision",
        "actual_revision",
    ):
        if hasattr(exc, field):
            assert getattr(back, field) == getattr(exc, field), field


def test_reasons_are_unique_so_the_reverse_mapping_is_exact() -> None:
    reasons = [cls.reason for cls in ALL]
    assert len(reasons) == len(set(reasons))


def test_the_codes_a_client_relies_on() -> None:
    code = error_table.code_for
    assert code(errors.SessionNotFound("s")) == grpc.StatusCode.NOT_FOUND
    assert code(errors.NodeNotFound("n")) == grpc.StatusCode.NOT_FOUND
    assert code(errors.InvalidInput("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(errors.ConflictError("x")) == grpc.StatusCode.ABORTED
    assert code(errors.LockLost("x")) == grpc.StatusCode.ABORTED
    assert code(errors.RevisionMismatch("s", 1, 2)) == grpc.StatusCode.ABORTED  # AIP-154
    assert code(errors.RequestIdReused("s", "r")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(errors.BackendUnavailable("x")) == grpc.StatusCode.UNAVAILABLE
    assert code(errors.StoreFull("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code(errors.StateTooLarge("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(errors.UnhandledSignal("s", "n")) == grpc.StatusCode.FAILED_PRECONDITION
    assert code(errors.TooManyWatchStreams("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code(TimeoutError()) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert code(ZeroDivisionError()) == grpc.StatusCode.INTERNAL


def test_a_subclass_without_its_own_row_inherits_its_parents_code() -> None:
    class CustomConflict(errors.ConflictError):
        reason = "CUSTOM_CONFLICT_FOR_TEST"

    assert error_table.code_for(CustomConflict("x")) == grpc.StatusCode.ABORTED


def test_statuses_without_trellis_details_still_map_to_useful_errors() -> None:
    assert isinstance(
        error_table.error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused"),
        errors.BackendUnavailable,
    )
    assert isinstance(error_table.error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "late"), TimeoutError)
    # A call the server cut (a stop dropping it): as uncertain as a broken connection, and retryable.
    cut = error_table.error_from_status(grpc.StatusCode.CANCELLED, "Received RST_STREAM with error code 8")
    assert isinstance(cut, errors.BackendUnavailable) and "CANCELLED" in cut.message
    other = error_table.error_from_status(grpc.StatusCode.PERMISSION_DENIED, "no")
    assert isinstance(other, errors.TrellisError) and "PERMISSION_DENIED" in other.message


# --- the catalog (docs/errors.md) ---------------------------------------------------------


def _details(exc: BaseException, session_id: str = "") -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The ErrorInfo metadata and the BadRequest field violations (field, reason) of a status."""
    from google.rpc import error_details_pb2, status_pb2

    _code, _message, raw = error_table.status_for(exc, session_id)
    status = status_pb2.Status.FromString(raw)
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for item in status.details:
        if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            item.Unpack(info)
            metadata = dict(info.metadata)
        elif item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            item.Unpack(bad)
            violations += [(v.field, v.reason) for v in bad.field_violations]
    return metadata, violations


OWN = [c for c in ALL if c.__module__ == "trellis.errors"]


@pytest.mark.parametrize("cls", OWN, ids=lambda c: c.__name__)
def test_every_reason_has_a_catalog_row_listing_the_keys_it_sends(cls: type[errors.TrellisError]) -> None:
    row = error_table.ROWS.get(cls)
    assert row is not None, f"{cls.__name__} has no row in error_table.ROWS (and so none in docs/errors.md)"
    metadata, _ = _details(_instance(cls), "s-1")
    assert set(metadata) <= {*row.keys, error_table.SESSION_KEY}, cls.reason
    assert set(row.keys) <= set(error_table.KEY_MEANINGS)


def test_the_session_a_call_named_travels_with_every_error_but_the_errors_own_wins() -> None:
    metadata, _ = _details(errors.UnhandledSignal("stop", "n1"), "s-1")
    assert metadata == {"session_id": "s-1", "signal": "stop", "node_id": "n1"}
    own, _ = _details(errors.SessionNotFound("s-2"), "s-1")
    assert own["session_id"] == "s-2"


def test_revision_conflicts_carry_both_revisions_as_integers_after_the_round_trip() -> None:
    exc = errors.ConflictError("lost", session_id="s", expected_revision=3, stored_revision=5)
    metadata, _ = _details(exc)
    assert metadata == {"session_id": "s", "expected_revision": "3", "stored_revision": "5"}
    code, message, raw = error_table.status_for(exc)
    back = error_table.error_from_status(code, message, raw)
    assert isinstance(back, errors.ConflictError)
    assert (back.expected_revision, back.stored_revision) == (3, 5)  # type: ignore[attr-defined]


def test_bad_input_names_its_field_as_a_bad_request_violation() -> None:
    bad = errors.InvalidInput("input.tool_result.id: must not be empty", field="input.tool_result.id")
    _, violations = _details(bad)
    assert violations == [("input.tool_result.id", "INVALID_INPUT")]
    _, confirm = _details(errors.InvalidConfirmation("maybe", "agree"))
    assert confirm == [("input", "INVALID_CONFIRMATION")]
    # Only INVALID_ARGUMENT errors are about the request: a node definition's field is not.
    _, none = _details(errors.NodeDefinitionError("n", "n.md", "do", "bad"))
    assert none == []


def test_the_catalog_in_docs_is_the_one_the_table_makes() -> None:
    from pathlib import Path

    from trellis.api import error_catalog

    docs = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
    assert docs.read_text(encoding="utf-8") == error_catalog.render(), (
        "docs/errors.md is stale: run python -m trellis.api.error_catalog docs/errors.md"
    )
    for reason in [cls.reason for cls in error_table.ROWS] + list(error_table.EXTRA_ROWS):
        assert f"| `{reason}` |" in docs.read_text(encoding="utf-8")
