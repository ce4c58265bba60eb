"""What a step reply reports besides its state: lifecycle events and a render error
(protos/trellis/v1/step_reports.proto), both directions.

Events are bounded per reply: at most MAX_EVENTS_PER_REPLY of them (the rest are
counted in ``dropped``) and at most ``budget`` bytes encoded, of which tool
inputs and outputs (``data_json``) are the large part: an event whose data would
not fit is sent without it (``data_omitted``), so the order of nodes entered and
left is never lost to one large tool result.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc  # type: ignore[import-untyped]
import orjson
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from trellis.api import convert, error_table
from trellis.api.v1 import step_reports_pb2 as rpb
from trellis.domain import HookKind, LifecycleEvent, ToolResult
from trellis.errors import InvalidInput

MAX_EVENTS_PER_REPLY = 256
MAX_EVENT_BYTES_PER_REPLY = 64 * 1024

_KINDS = {
    HookKind.NODE_ENTER: rpb.LIFECYCLE_EVENT_KIND_NODE_ENTER,
    HookKind.NODE_LEAVE: rpb.LIFECYCLE_EVENT_KIND_NODE_LEAVE,
    HookKind.TOOL_CALL: rpb.LIFECYCLE_EVENT_KIND_TOOL_CALL,
    HookKind.TOOL_RETURN: rpb.LIFECYCLE_EVENT_KIND_TOOL_RETURN,
}
_HOOK_KINDS = {wire: kind for kind, wire in _KINDS.items()}
# Tag and length of a repeated field entry, on top of the event's own size.
_ENTRY_OVERHEAD = 4
# Tag and length of the events field in its reply, and its `dropped` count.
_EVENTS_ENVELOPE = 16


def _fill_data(item: rpb.LifecycleEvent, data: object) -> bool:
    """Put ``data`` (a tool_return's ToolResult, else JSON) into ``item``; False when it is
    not encodable (a host-made event): it is then reported as omitted, never a failed reply."""
    try:
        if isinstance(data, ToolResult):
            item.tool_result.CopyFrom(convert.tool_result_to_proto(data))
        else:
            item.data_json = orjson.dumps(data).decode()
    except (TypeError, InvalidInput):  # orjson's JSONEncodeError is a TypeError
        return False
    return True


def fill_events(
    msg: rpb.LifecycleEvents,
    events: Sequence[LifecycleEvent],
    dropped: int = 0,
    room: int = MAX_EVENT_BYTES_PER_REPLY,
) -> None:
    """Write ``events`` (in order) into ``msg``: at most MAX_EVENT_BYTES_PER_REPLY encoded
    bytes, and never more than ``room`` (what the reply has left of its message limit)."""
    budget = min(MAX_EVENT_BYTES_PER_REPLY, room - _EVENTS_ENVELOPE)
    used = 0
    sent = 0
    items = msg.events
    for event in events[:MAX_EVENTS_PER_REPLY]:
        item = items.add()
        item.kind = _KINDS[event.kind]
        item.node_id = event.node_id
        item.node_type = event.node_type
        item.tool_name = event.tool_name
        item.is_error = event.is_error
        item.timestamp = event.timestamp
        size = item.ByteSize() + _ENTRY_OVERHEAD
        if used + size > budget:
            del items[-1]
            break
        if event.data is not None:
            if _fill_data(item, event.data) and used + item.ByteSize() + _ENTRY_OVERHEAD <= budget:
                size = item.ByteSize() + _ENTRY_OVERHEAD
            else:
                item.ClearField("tool_result")
                item.ClearField("data_json")
                item.data_omitted = True
                size += 2
        used += size
        sent += 1
    msg.dropped = dropped + len(events) - sent


def events_from_proto(msg: rpb.LifecycleEvents) -> list[LifecycleEvent]:
    """The events as a hook in this process receives them (omitted data is None)."""
    return [
        LifecycleEvent(
            kind=_HOOK_KINDS[item.kind],
            node_id=item.node_id,
            node_type=item.node_type,
            tool_name=item.tool_name,
            data=_data_of(item),
            is_error=item.is_error,
            timestamp=item.timestamp,
        )
        for item in msg.events
        if item.kind in _HOOK_KINDS  # a kind newer than this client is skipped
    ]


def _data_of(item: rpb.LifecycleEvent) -> object:
    if item.HasField("tool_result"):
        return convert.tool_result_from_proto(item.tool_result)
    return orjson.loads(item.data_json) if item.data_json else None


def fill_reported_error(msg: rpb.ReportedError, exc: BaseException) -> None:
    """``exc`` as the status a failed call would carry (error_table)."""
    msg.code = error_table.code_for(exc).value[0]
    msg.message = error_table.message_for(exc)
    msg.reason = error_table.reason_for(exc)
    msg.metadata.update(error_table.error_metadata(exc))


def error_from_reported(msg: rpb.ReportedError) -> BaseException:
    """The exception the in-process engine raised, rebuilt as a failed call's would be."""
    code = error_table.status_code(msg.code)
    info = error_details_pb2.ErrorInfo(reason=msg.reason, domain=error_table.DOMAIN, metadata=msg.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=msg.code, message=msg.message, details=[detail])
    return error_table.error_from_status(code, msg.message, status.SerializeToString())


# --- events of a failed call ----------------------------------------------------------------
# A call that fails can still have fired events (the in-process engine delivers the
# tool_return of an unhandled tool error before it raises). They travel in the error's
# google.rpc.Status details beside its ErrorInfo, inside the trailing metadata that
# clients cap at 8-16 KiB: hence a budget of their own.

MAX_FAILED_CALL_EVENT_BYTES = 2 * 1024
FAILED_CALL_EVENTS_ATTR = "trellis_lifecycle_events"
"""The attribute of an exception holding the LifecycleEvents its status is to carry."""


def attach_events(exc: BaseException, events: Sequence[LifecycleEvent], dropped: int = 0) -> None:
    """Give ``exc`` the events its call fired, for the status it becomes (``status_details``)."""
    if not events and not dropped:
        return
    msg = rpb.LifecycleEvents()
    fill_events(msg, events, dropped, MAX_FAILED_CALL_EVENT_BYTES + _EVENTS_ENVELOPE)
    setattr(exc, FAILED_CALL_EVENTS_ATTR, msg)


def status_details(exc: BaseException, details: bytes) -> bytes:
    """The serialized google.rpc.Status of ``exc`` with its attached events, if any."""
    events = getattr(exc, FAILED_CALL_EVENTS_ATTR, None)
    if not isinstance(events, rpb.LifecycleEvents):
        return details
    status = status_pb2.Status.FromString(details)
    status.details.add().Pack(events)
    return bytes(status.SerializeToString())


def events_of_failure(exc: BaseException) -> list[LifecycleEvent]:
    """The events a failed call's status carried. The remote adapters raise the trellis
    exception from within their handler of the grpc.aio.AioRpcError, which stays its
    ``__context__``."""
    err = exc.__context__
    trailing_fn = getattr(err, "trailing_metadata", None)
    if not callable(trailing_fn):
        return []
    for key, value in trailing_fn() or ():
        if key != error_table.STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed detail is treated as absent
            return []
        for item in status.details:
            if item.Is(rpb.LifecycleEvents.DESCRIPTOR):
                events = rpb.LifecycleEvents()
                item.Unpack(events)
                return events_from_proto(events)
    return []
