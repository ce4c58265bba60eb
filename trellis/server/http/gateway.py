"""The HTTP listener (``http_listen``): the public services over the Connect
protocol (JSON or protobuf, unary and server streaming) and gRPC-Web, and session
watches as server-sent events, for callers that cannot speak gRPC: curl, browsers
(@connectrpc/connect-web), the Node client's Connect transport.

A second listener because gRPC's C core owns the gRPC port and speaks only
HTTP/2 gRPC there; Connect's unary calls are plain HTTP/1.1 POSTs. Every call
runs the same servicers behind the same interceptors (trellis.server.http.calls),
so there is no second API to keep in sync. See docs/http.md.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
import orjson
from aiohttp import web

from trellis.api.v1 import sessions_pb2
from trellis.errors import ConfigError, InvalidInput, RequestTooLarge, TrellisError
from trellis.server.http import grpc_web, protocol
from trellis.server.http.calls import CallDetails, HttpCallContext, PublicMethods, error_for
from trellis.server.http.protocol import CallError

LOG = logging.getLogger("trellis.server")

# The HTTP parser's own bounds (aiohttp answers 400 past them, before any trellis code runs).
MAX_REQUEST_LINE_BYTES: Final = 8190
MAX_HEADER_FIELD_BYTES: Final = 8190
MAX_HEADERS: Final = 100
READ_CHUNK: Final = 64 * 1024
STOP_TIMEOUT: Final = 1.0

# Headers that describe the HTTP exchange itself, not the call: not passed on as metadata.
_NOT_METADATA = frozenset(
    {
        "host",
        "connection",
        "content-length",
        "content-type",
        "content-encoding",
        "accept",
        "accept-encoding",
        "transfer-encoding",
        "user-agent",
        "te",
        "x-grpc-web",
        "x-user-agent",
    }
)
WATCH = "/trellis.v1.Sessions/Watch"
GET = "/trellis.v1.Sessions/Get"


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for key, value in request.headers.items():
        name = key.lower()
        # -bin keys carry bytes in gRPC metadata; connect-* are this protocol's own.
        if name in _NOT_METADATA or name.startswith(("connect-", "grpc-")) or name.endswith("-bin"):
            continue
        pairs.append((name, value))
    return tuple(pairs)


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _error_response(
    error: CallError, status: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status or error.http_status,
        body=orjson.dumps(error.to_json()),
        content_type="application/json",
        headers=headers or {},
    )


class HttpGateway:
    """The aiohttp application and its listener; ``start`` then ``stop``."""

    def __init__(
        self,
        methods: PublicMethods,
        *,
        max_body_bytes: int,
        keepalive: float,
        extra_routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self._methods = methods
        self._max_body = max_body_bytes
        self._keepalive = keepalive
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()  # handlers of open streams, ended by stop
        self.port = 0
        app = web.Application()
        app.router.add_routes(extra_routes)  # the web inspector's files, when it is on
        app.router.add_get("/v1/sessions/{session_id}/events", self._events)
        app.router.add_post("/{service}/{method}", self._call)
        self._app = app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(
            self._app,
            access_log=None,
            # A caller that hangs up ends its call: a watch stream gives its place back.
            handler_cancellation=True,
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            # Compressed bodies are refused (unimplemented), never inflated.
            auto_decompress=False,
            # What a handler still running at stop gets (the unary calls were drained by
            # then; open streams are cancelled first). aiohttp reads 0 as "no limit".
            shutdown_timeout=STOP_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"http_listen: cannot bind {host}:{port}: {exc.strerror}") from None
        self._runner = runner
        bound: Sequence[Any] = runner.addresses  # (host, port, ...) of each bound socket
        self.port = int(bound[0][1]) if bound else port
        return self.port

    async def stop(self) -> None:
        """Close the listener; calls still running (watch streams) are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            for task in list(self._streams):
                task.cancel()
            await runner.cleanup()

    # --- reading a request ----------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _Refused(
                CallError(grpc.StatusCode.UNIMPLEMENTED, f"Content-Encoding {encoding!r} is not accepted")
            )
        declared = request.content_length
        if declared is not None and declared > self._max_body:
            raise RequestTooLarge(self._too_large(declared))
        body = bytearray()
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            body += chunk
            if len(body) > self._max_body:
                raise RequestTooLarge(self._too_large(len(body), at_least=True))
        return bytes(body)

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        return (
            f"request body: {'more than ' if at_least else ''}{size} bytes is over the limit of "
            f"{self._max_body} (max_message_bytes)"
        )

    def _context(self, request: web.Request, timeout: float | None) -> HttpCallContext:
        return HttpCallContext(_metadata(request), timeout, f"http:{request.remote or ''}")

    def _connect_context(self, request: web.Request) -> HttpCallContext:
        """The call's context, its deadline from Connect-Timeout-Ms."""
        return self._context(request, protocol.parse_timeout(request.headers.get("Connect-Timeout-Ms")))

    # --- Connect calls ----------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.StreamResponse:
        method = f"/{request.match_info['service']}/{request.match_info['method']}"
        if self._methods.grpc_only(method):
            error = CallError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method} is a bidirectional stream, served over gRPC only (docs/http.md)",
            )
            return _error_response(error, 404)
        if not self._methods.knows(method):
            error = CallError(grpc.StatusCode.UNIMPLEMENTED, f"no method {method} on this server")
            return _error_response(error, 404)
        streaming = self._methods.is_streaming(method)
        if grpc_web.is_grpc_web(_media_type(request)):
            return await self._grpc_web(request, method, streaming)
        types = protocol.STREAM_TYPES if streaming else protocol.UNARY_TYPES
        codec = types.get(_media_type(request))
        if codec is None:
            error = CallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method} takes Content-Type {' or '.join(types)}, got {_media_type(request) or 'none'!r}",
            )
            return _error_response(error, 415, {"Accept-Post": ", ".join(types)})
        try:
            context = self._connect_context(request)
            payload = await self._body(request)
            if streaming:
                payload = protocol.unwrap_single(payload)
            request_bytes = self._request_bytes(method, payload, codec)
        except _Refused as refused:
            return await self._refuse(request, refused.error, streaming, codec)
        except TrellisError as exc:
            return await self._refuse(request, error_for(exc), streaming, codec)
        details = CallDetails(method, context.invocation_metadata())
        if streaming:
            return await self._stream(request, details, request_bytes, context, codec)
        try:
            reply = await self._methods.unary(details, request_bytes, context)
        except grpc.aio.AbortError:
            return _error_response(context.error())
        except Exception as exc:  # the guards turn errors into aborts; this is a bug
            LOG.error("unexpected error in an HTTP call", exc_info=exc)
            return _error_response(error_for(exc))
        content_type = "application/json" if codec == protocol.JSON else "application/proto"
        return web.Response(body=protocol.encode(reply, codec), headers={"Content-Type": content_type})

    async def _grpc_web(self, request: web.Request, method: str, streaming: bool) -> web.StreamResponse:
        """A gRPC-Web call: the same calls as Connect's, framed the gRPC-Web way."""
        media_type = _media_type(request)
        codec = grpc_web.TYPES.get(media_type)
        if codec is None:
            unsupported = CallError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{media_type!r} is not served (no -text)"
            )
            return _error_response(unsupported, 415, {"Accept-Post": ", ".join(grpc_web.TYPES)})
        response = web.StreamResponse(status=200)
        response.content_type = media_type
        error: CallError | None = None
        try:
            context = self._context(request, grpc_web.parse_timeout(request.headers.get("grpc-timeout")))
            payload = protocol.unwrap_single(await self._body(request))
            request_bytes = self._request_bytes(method, payload, codec)
        except _Refused as refused:
            error = refused.error
        except TrellisError as exc:
            error = error_for(exc)
        if error is not None:
            await response.prepare(request)
            await response.write(grpc_web.trailers(error))
            await response.write_eof()
            return response
        details = CallDetails(method, context.invocation_metadata())
        await response.prepare(request)
        try:
            if streaming:
                with self._open_stream():
                    async for reply in self._methods.stream(details, request_bytes, context):
                        await response.write(protocol.envelope(protocol.encode(reply, codec)))
            else:
                reply = await self._methods.unary(details, request_bytes, context)
                await response.write(protocol.envelope(protocol.encode(reply, codec)))
        except grpc.aio.AbortError:
            error = context.error()
        except TimeoutError as exc:
            error = error_for(exc)
        except Exception as exc:
            LOG.error("unexpected error in a gRPC-Web call", exc_info=exc)
            error = error_for(exc)
        await response.write(grpc_web.trailers(error))
        await response.write_eof()
        return response

    def _request_bytes(self, method: str, payload: bytes, codec: str) -> bytes:
        """The request in protobuf: binary bodies go to the servicer's own deserializer
        (which refuses malformed ones), JSON ones are parsed here first."""
        if codec == protocol.PROTO:
            return payload
        message = protocol.decode(self._methods.request_class(method), payload, codec)
        return bytes(message.SerializeToString())

    async def _refuse(
        self, request: web.Request, error: CallError, streaming: bool, codec: str
    ) -> web.StreamResponse:
        if not streaming:
            return _error_response(error)
        response = self._stream_response(codec)
        await response.prepare(request)
        await response.write(protocol.end_stream(error))
        await response.write_eof()
        return response

    @staticmethod
    def _stream_response(codec: str) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = f"application/connect+{codec}"
        return response

    async def _stream(
        self,
        request: web.Request,
        details: CallDetails,
        request_bytes: bytes,
        context: HttpCallContext,
        codec: str,
    ) -> web.StreamResponse:
        response = self._stream_response(codec)
        await response.prepare(request)
        error: CallError | None = None
        try:
            with self._open_stream():
                async for reply in self._methods.stream(details, request_bytes, context):
                    await response.write(protocol.envelope(protocol.encode(reply, codec)))
        except grpc.aio.AbortError:
            error = context.error()
        except TimeoutError as exc:
            error = error_for(exc)
        except Exception as exc:
            LOG.error("unexpected error in an HTTP stream", exc_info=exc)
            error = error_for(exc)
        await response.write(protocol.end_stream(error))
        await response.write_eof()
        return response

    @contextmanager
    def _open_stream(self) -> Iterator[None]:
        """Marks the running handler as an open stream, which ``stop`` cancels."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            yield
        finally:
            self._streams.discard(task)

    # --- server-sent events ------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/sessions/{id}/events``: the session's current step (event ``step``),
        then each change (event ``diff``, a StateDiff) until the caller hangs up; an
        error after the stream opened arrives as event ``error`` (Connect error JSON)."""
        session_id = request.match_info["session_id"]
        try:
            context = self._connect_context(request)
        except InvalidInput as exc:
            return _error_response(error_for(exc))
        metadata = context.invocation_metadata()
        get_bytes = sessions_pb2.SessionsGetRequest(session_id=session_id).SerializeToString()
        watch_bytes = sessions_pb2.SessionsWatchRequest(session_id=session_id).SerializeToString()
        watch_context = HttpCallContext(metadata, context.time_remaining(), context.peer())
        replies = self._methods.stream(CallDetails(WATCH, metadata), watch_bytes, watch_context)

        async def next_reply() -> Any:
            try:
                return await anext(replies)
            except StopAsyncIteration:
                return None

        with self._open_stream():
            first = asyncio.ensure_future(next_reply())
            try:
                # One turn of the loop runs the watch up to its subscription (nothing in the
                # chain waits before it), so the snapshot read next misses no step, and a
                # refusal (token, watch budget) is known before the response starts.
                await asyncio.sleep(0)
                if first.done() and isinstance(first.exception(), grpc.aio.AbortError):
                    return _error_response(watch_context.error())
                # The snapshot through the same chain: an unknown session is a plain 404.
                try:
                    current = await self._methods.unary(CallDetails(GET, metadata), get_bytes, context)
                except grpc.aio.AbortError:
                    return _error_response(context.error())
                response = web.StreamResponse(status=200, headers={"Cache-Control": "no-store"})
                response.content_type = "text/event-stream"
                await response.prepare(request)
                await response.write(_event("step", protocol.to_json_object(current.step)))
                error = await self._diffs(response, first, next_reply, watch_context)
                if error is not None:
                    await response.write(_event("error", error.to_json()))
                await response.write_eof()
                return response
            finally:
                if not first.done():
                    first.cancel()
                    await asyncio.wait([first])
                await replies.aclose()

    async def _diffs(
        self,
        response: web.StreamResponse,
        first: asyncio.Future[Any],
        next_reply: Any,
        context: HttpCallContext,
    ) -> CallError | None:
        """Write the watch's diffs as events until it ends; the error it ended with, if any.
        An idle stream gets a comment line every ``keepalive`` seconds: writing to a peer
        that vanished without closing fails, which ends the stream and frees its place
        (gRPC's keepalive pings do that for gRPC watches)."""
        pending = first
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=self._keepalive)
                if not done:
                    await response.write(b": keepalive\n\n")
                    continue
                reply = pending.result()
                if reply is None:
                    return None
                await response.write(_event("diff", protocol.to_json_object(reply.diff)))
                pending = asyncio.ensure_future(next_reply())
        except grpc.aio.AbortError:
            return context.error()
        except TimeoutError as exc:
            return error_for(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            LOG.error("unexpected error in an event stream", exc_info=exc)
            return error_for(exc)
        finally:
            if pending is not first and not pending.done():
                pending.cancel()
                await asyncio.wait({pending})


def _event(name: str, data: dict[str, Any]) -> bytes:
    # orjson's output has no newline, so one data line holds the whole object.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Refused(Exception):
    def __init__(self, error: CallError) -> None:
        super().__init__(error.message)
        self.error = error


def ssl_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    """The gRPC listener's TLS settings for the HTTP listener: same certificate, and with a
    client CA, client certificates required there too."""
    if not cert_file or not key_file:
        raise ConfigError("TLS needs both a certificate (tls_cert) and a private key (tls_key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file:
            context.load_verify_locations(client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"http_listen: cannot load the TLS files: {exc}") from None
    return context
