"""examples/saga walked end to end: bookings, the failing car, the compensations."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import EXAMPLES, run_cli

SAGA = str(EXAMPLES / "saga")


def test_saga_books_then_rolls_back_newest_first(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    result = run_cli("run", SAGA, "--yes", env={"SAGA_LEDGER": str(ledger)})
    assert result.code == 0, result.err
    assert ledger.read_text().splitlines() == [
        "booked hotel H-Lisbon-3",
        "booked flight F-LIS",
        "rent_car failed",
        "cancelled flight F-LIS",
        "cancelled hotel H-Lisbon-3",
    ]
    out = result.out
    assert out.index("Hotel H-Lisbon-3 booked. Booking a flight to LIS...") < out.index(
        "[tool] rent_car: failed: execution failed: exit status 1. Stderr: no cars available"
    )
    assert out.index("↩ compensating flight (cancel_flight)") < out.index(
        "↩ compensating hotel (cancel_hotel)"
    )
    assert '[tool] cancel_hotel: {"cancelled": "H-Lisbon-3"}' in out
    assert out.rstrip().endswith("[trellis] session ended: the flow was rolled back")
    assert "Trip booked" not in out


def test_saga_in_json_mode_shows_each_compensation(tmp_path: Path) -> None:
    result = run_cli("run", SAGA, "--json")
    assert result.code == 0, result.err
    objects = result.json_lines()
    calls = [o["call"]["name"] for o in objects if o["type"] == "tool"]
    assert calls == ["book_hotel", "book_flight", "rent_car", "cancel_flight", "cancel_hotel"]
    rolling = [o for o in objects if o["type"] == "step" and o["status"] == "rolling_back"]
    assert [o["node"] for o in rolling] == ["flight", "hotel"]
    # The undo arguments come from what the forward path saved.
    undo_args = [o["actions"][-1]["payload"]["args"] for o in rolling]
    assert undo_args == [{"booking": "F-LIS"}, {"booking": "H-Lisbon-3"}]
    end = objects[-1]
    assert end == {
        "type": "end",
        "session_id": "cli",
        "node": "",
        "status": "terminated",
        "reason": "session ended: the flow was rolled back",
        "context": end["context"],
        "history": [],
    }
    assert end["context"]["hotel"] == {"booking": "H-Lisbon-3", "kind": "hotel"}


def test_saga_asks_before_each_tool_and_a_denial_ends_it(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    result = run_cli("run", SAGA, stdin="y\nn\n", env={"SAGA_LEDGER": str(ledger)})
    assert result.code == 0, result.err
    assert "[System] Tool Request: 'book_hotel' (ID: book_hotel)" in result.out
    assert 'Args: {"city": "Lisbon", "nights": 3}' in result.out
    assert "[tool] book_flight: denied" in result.out
    assert result.out.rstrip().endswith(
        "[trellis] session ended: tool 'book_flight' was denied at node 'flight' (it has no on_denied)"
    )
    # No on_denied or on_error on the flight: the denial ends the session; nothing more runs.
    assert ledger.read_text().splitlines() == ["booked hotel H-Lisbon-3"]
