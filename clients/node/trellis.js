'use strict';
// A small Node.js client of the trellis services (Sessions and Engine), over gRPC or
// over the Connect protocol (HTTP/1.1, the server's --http-listen): one client, the
// same methods and the same plain objects either way.
//
// The .proto files are loaded at run time from protos/ at the root of the
// repository, so this client never goes stale against the API. Free-form values
// (contexts, tool arguments and results) travel as JSON text in `*_json` fields.
//
//   const { TrellisClient } = require('./trellis');
//   const client = new TrellisClient('127.0.0.1:50051', { token: process.env.TRELLIS_TOKEN });
//   const overHttp = new TrellisClient('http://127.0.0.1:8080');   // Connect
//   let step = await client.sessions.start('me');
//   step = await client.sessions.navigate('me', { text: 'Ada' });
//   for await (const diff of client.sessions.watch('me')) { ... }    // resumes by itself
//   for await (const event of client.sessions.watchEvents('me')) { ... }  // + bookmarks, deletion
//
// Safe retries: every Start, Navigate and Signal carries a request ID (a fresh
// UUID unless { requestId } is given), which the server applies at most once. A
// call that fails with UNAVAILABLE or DEADLINE_EXCEEDED is therefore sent again
// with the same ID, up to `retries` times (default 4) with capped, jittered
// exponential backoff (backoffMs 50, backoffCapMs 2000); a step whose first
// attempt had been applied comes back with `replayed: true`. Other calls retry
// UNAVAILABLE only when they are reads. { expectedRevision } applies a step only
// at that revision (else ABORTED, reason REVISION_MISMATCH). Both transports alike.
//
// { stepStream: true } (gRPC only) sends Start, Navigate and Signal over one shared
// Sessions.Steps stream instead of a call each (StepStream below): the same results,
// errors, deadline and retries, for less work on the server per step.

const crypto = require('crypto');
const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtos = require('google-proto-files');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const PROTO_FILES = ['sessions.proto', 'engine.proto'].map((f) => path.join('trellis', 'v1', f));
// How messages become plain objects; proto-loader uses the same options for gRPC replies,
// which is why both transports give the same objects.
const OBJECT_OPTIONS = {
  keepCase: true, // field names exactly as in the .proto files (session_id, ...)
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true, // each oneof's set field is named in a property ("kind")
};

function loadApi() {
  const definition = protoLoader.loadSync(PROTO_FILES, { includeDirs: [PROTO_ROOT], ...OBJECT_OPTIONS });
  return grpc.loadPackageDefinition(definition).trellis.v1;
}

// The error details of a failed call (docs/api.md, Errors): the server puts a
// google.rpc.Status in the grpc-status-details-bin trailer, holding an ErrorInfo
// (reason, domain "trellis.dev", metadata) and, for bad input, a BadRequest.
let details = null;
function detailTypes() {
  if (details === null) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, file) => path.join(path.dirname(googleProtos.getProtoPath()), file);
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
    details = {
      status: root.lookupType('google.rpc.Status'),
      'type.googleapis.com/google.rpc.ErrorInfo': root.lookupType('google.rpc.ErrorInfo'),
      'type.googleapis.com/google.rpc.BadRequest': root.lookupType('google.rpc.BadRequest'),
    };
  }
  return details;
}

// { reason, domain, metadata, fieldViolations } of a grpc-js error; empty when it has none.
function decodeErrorDetails(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return decodeStatusDetails([]);
  let status;
  try {
    status = detailTypes().status.decode(raw);
  } catch (_e) {
    return decodeStatusDetails([]); // a malformed trailer (a proxy's) counts as absent
  }
  return decodeStatusDetails(status.details);
}

// The same from the details (google.protobuf.Any list) of a google.rpc.Status: the
// trailer's, or a step stream's StepError (which has the encoding of a Status).
function decodeStatusDetails(anys) {
  const out = { reason: '', domain: '', metadata: {}, fieldViolations: [] };
  const types = detailTypes();
  for (const any of anys) {
    const type = types[any.type_url || any.typeUrl];
    if (!type) continue;
    const detail = type.toObject(type.decode(any.value));
    if (detail.reason !== undefined && detail.domain === 'trellis.dev') {
      out.reason = detail.reason;
      out.domain = detail.domain;
      out.metadata = detail.metadata || {};
    } else if (detail.fieldViolations) {
      out.fieldViolations = detail.fieldViolations.map((v) => ({ field: v.field, description: v.description, reason: v.reason }));
    }
  }
  return out;
}

// Metadata values are strings; these keys hold a JSON list (docs/errors.md).
const LIST_KEYS = new Set(['missing_keys', 'errors', 'problems']);

// An Error for a failed call: the gRPC status code name and the server's message,
// plus the trellis reason (docs/errors.md), its metadata and the bad request fields.
class TrellisError extends Error {
  constructor(err) {
    const decoded = err.decoded || decodeErrorDetails(err);
    const reason = decoded.reason ? ` [${decoded.reason}]` : '';
    super(`${grpc.status[err.code] || err.code}${reason}: ${err.details || err.message}`);
    this.code = err.code;
    this.codeName = grpc.status[err.code];
    this.details = err.details;
    this.reason = decoded.reason; // '' when the error did not come from trellis (a proxy, the network)
    this.metadata = decoded.metadata;
    this.fieldViolations = decoded.fieldViolations;
  }

  // A metadata value, with list keys parsed (missing_keys, errors, problems).
  get(key) {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    return LIST_KEYS.has(key) ? JSON.parse(value) : value;
  }

  // From a step stream's StepError: a google.rpc.Status, as the unary call's trailer holds.
  static fromStepError(error) {
    return new TrellisError({ code: error.code, details: error.message, decoded: decodeStatusDetails(error.details) });
  }

  // From a Connect error object ({ code: 'not_found', message, details }): the same
  // reason, metadata and field violations, read from the details' JSON "debug" form.
  static fromConnect(body, httpStatus) {
    const name = String((body && body.code) || 'unknown').toUpperCase();
    const details = (body && body.details) || [];
    const debugOf = (type) => {
      const found = details.find((d) => d.type === type);
      return (found && found.debug) || {};
    };
    const info = debugOf('google.rpc.ErrorInfo');
    const bad = debugOf('google.rpc.BadRequest');
    return new TrellisError({
      code: grpc.status[name] === undefined ? grpc.status.UNKNOWN : grpc.status[name],
      details: (body && body.message) || `HTTP ${httpStatus}`,
      decoded: {
        reason: info.reason || '',
        domain: info.domain || '',
        metadata: info.metadata || {},
        fieldViolations: (bad.fieldViolations || []).map((v) => ({
          field: v.field,
          description: v.description,
          reason: v.reason || '',
        })),
      },
    });
  }
}

function credentials(options) {
  if (!options.tls && !options.caFile && !options.certFile) {
    return grpc.credentials.createInsecure();
  }
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(options.caFile), read(options.keyFile), read(options.certFile));
}

// The gRPC transport: unary(service, method, request) -> reply; stream(...) -> async iterator.
class GrpcTransport {
  constructor(target, options) {
    const api = loadApi();
    const creds = credentials(options);
    this.token = options.token || '';
    this.deadlineMs = options.deadlineMs;
    this.stubs = { Sessions: new api.Sessions(target, creds), Engine: new api.Engine(target, creds) };
  }

  metadata() {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set('authorization', `Bearer ${this.token}`);
    return metadata;
  }

  unary(service, method, request) {
    const deadline = new Date(Date.now() + this.deadlineMs);
    return new Promise((resolve, reject) => {
      this.stubs[service][method](request, this.metadata(), { deadline }, (err, reply) =>
        err ? reject(new TrellisError(err)) : resolve(reply),
      );
    });
  }

  async *stream(service, method, request) {
    const call = this.stubs[service][method](request, this.metadata());
    try {
      for await (const reply of call) yield reply;
    } catch (err) {
      throw new TrellisError(err);
    } finally {
      call.cancel();
    }
  }

  close() {
    Object.values(this.stubs).forEach((stub) => stub.close());
  }
}

// Start, Navigate and Signal over one Sessions.Steps stream (the option stepStream).
// The steps asked for in one tick go in one message (at most STEPS_PER_MESSAGE), each
// with a tag and its deadline as `timeout`; a result settles its own step's promise
// with what the unary call gives (the reply, or the same TrellisError). The stream is
// opened when a step needs one; when it breaks or ends, its unanswered steps fail with
// UNAVAILABLE, so the client's retries send them again on a new stream (their request
// IDs keep a step the server had applied from being applied twice).
const STEPS_PER_MESSAGE = 64; // the server refuses more in one message

class StepStream {
  constructor(transport) {
    this.transport = transport;
    this.call = null; // the open stream
    this.queue = []; // steps not written yet
    this.pending = new Map(); // tag -> { resolve, reject, timer, call }: steps not answered yet
    this.nextTag = 1; // never reused, so a late answer cannot settle another step
    this.flushing = false;
    this.closed = false;
    this.opened = 0; // streams opened so far: 1 unless one broke or ended
  }

  send(method, request) {
    if (this.closed) {
      return Promise.reject(new TrellisError({ code: grpc.status.CANCELLED, details: 'the client is closed' }));
    }
    const tag = String(this.nextTag);
    this.nextTag += 1;
    const ms = Math.max(1, Math.round(this.transport.deadlineMs));
    const timeout = { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
    return new Promise((resolve, reject) => {
      // The server stops the step at its timeout too; this timer also covers a step
      // still queued or a server that never answers, as a unary call's deadline does.
      const timer = setTimeout(() => this.settle(tag, deadlineError(ms)), ms);
      this.pending.set(tag, { resolve, reject, timer, call: null });
      this.queue.push({ tag, [method.toLowerCase()]: request, timeout });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => this.flush());
      }
    });
  }

  flush() {
    this.flushing = false;
    const steps = this.queue.filter((step) => this.pending.has(step.tag)); // not past their deadline
    this.queue = [];
    if (steps.length === 0) return;
    const call = this.open();
    for (let start = 0; start < steps.length; start += STEPS_PER_MESSAGE) {
      const batch = steps.slice(start, start + STEPS_PER_MESSAGE);
      batch.forEach((step) => {
        this.pending.get(step.tag).call = call;
      });
      call.write({ steps: batch });
    }
  }

  open() {
    if (this.call) return this.call;
    const call = this.transport.stubs.Sessions.Steps(this.transport.metadata());
    this.opened += 1;
    let failure = null;
    call.on('data', (reply) => reply.results.forEach((result) => this.answer(call, result)));
    call.on('error', (err) => {
      failure = err;
    });
    call.on('status', () => {
      if (this.call === call) this.call = null; // the next steps go on a new stream
    });
    // 'end' comes after the last result has been read: what is left was not answered.
    call.on('end', () => this.ended(call, failure));
    this.call = call;
    return call;
  }

  answer(call, result) {
    const step = this.pending.get(result.tag);
    if (!step || step.call !== call) return; // past its deadline: the caller has that error
    if (result.result === 'error') this.settle(result.tag, TrellisError.fromStepError(result.error));
    else this.settle(result.tag, null, result[result.result]);
  }

  // The stream ended (err: its status, when not OK): its unanswered steps fail with
  // UNAVAILABLE, or with the stream's own error when the server refused the stream
  // as it would have refused the call (UNAUTHENTICATED, ...).
  ended(call, err) {
    if (this.call === call) this.call = null;
    const passOn = err && err.code !== grpc.status.CANCELLED;
    const error = passOn
      ? new TrellisError(err)
      : new TrellisError({ code: grpc.status.UNAVAILABLE, details: 'the step stream ended before answering' });
    for (const [tag, step] of this.pending) {
      if (step.call === call) this.settle(tag, error);
    }
  }

  settle(tag, error, reply) {
    const step = this.pending.get(tag);
    if (!step) return;
    this.pending.delete(tag);
    clearTimeout(step.timer);
    if (error) step.reject(error);
    else step.resolve(reply);
  }

  // Ends the stream once the steps already asked for are written: the server answers
  // those running, then ends it.
  close() {
    this.flush();
    this.closed = true;
    if (this.call) this.call.end();
  }
}

// What a unary call's deadline gives (grpc-js says "Deadline exceeded after ...").
function deadlineError(ms) {
  return new TrellisError({ code: grpc.status.DEADLINE_EXCEEDED, details: `Deadline exceeded after ${ms / 1000}s` });
}

// The Connect transport (connectrpc.com/docs/protocol) over fetch: protobuf bodies
// (application/proto; enveloped application/connect+proto for streams), encoded and
// decoded with the same .proto files, so replies are the objects gRPC gives.
class ConnectTransport {
  constructor(baseUrl, options) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.token = options.token || '';
    this.deadlineMs = options.deadlineMs;
    this.root = new protobuf.Root();
    this.root.resolvePath = (origin, target) => path.join(PROTO_ROOT, target);
    this.root.loadSync(PROTO_FILES, { keepCase: true });
    this.root.resolveAll();
  }

  types(service, method) {
    const rpc = this.root.lookupService(`trellis.v1.${service}`).methods[method];
    return [rpc.resolvedRequestType, rpc.resolvedResponseType];
  }

  headers(contentType, timeoutMs) {
    const headers = { 'Content-Type': contentType, 'Connect-Protocol-Version': '1' };
    if (timeoutMs) headers['Connect-Timeout-Ms'] = String(timeoutMs);
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async post(service, method, contentType, body, timeoutMs, signal) {
    try {
      return await fetch(`${this.baseUrl}/trellis.v1.${service}/${method}`, {
        method: 'POST',
        headers: this.headers(contentType, timeoutMs),
        body,
        signal,
      });
    } catch (err) {
      throw new TrellisError({ code: grpc.status.UNAVAILABLE, details: `${this.baseUrl}: ${err.message}` });
    }
  }

  async unary(service, method, request) {
    const [requestType, replyType] = this.types(service, method);
    const body = requestType.encode(requestType.fromObject(request)).finish();
    // The server stops the call at the deadline; this signal only guards against a dead peer.
    const guard = AbortSignal.timeout(this.deadlineMs + 5000);
    const reply = await this.post(service, method, 'application/proto', body, this.deadlineMs, guard);
    const bytes = new Uint8Array(await reply.arrayBuffer());
    if (reply.status !== 200) throw TrellisError.fromConnect(parseJson(bytes), reply.status);
    return replyType.toObject(replyType.decode(bytes), OBJECT_OPTIONS);
  }

  async *stream(service, method, request) {
    const [requestType, replyType] = this.types(service, method);
    const message = requestType.encode(requestType.fromObject(request)).finish();
    const abort = new AbortController();
    const reply = await this.post(service, method, 'application/connect+proto', envelope(message), 0, abort.signal);
    if (reply.status !== 200) {
      throw TrellisError.fromConnect(parseJson(new Uint8Array(await reply.arrayBuffer())), reply.status);
    }
    let buffer = Buffer.alloc(0);
    try {
      for await (const chunk of reply.body) {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 5 && buffer.length >= 5 + buffer.readUInt32BE(1)) {
          const flags = buffer[0];
          const payload = buffer.subarray(5, 5 + buffer.readUInt32BE(1));
          buffer = buffer.subarray(5 + payload.length);
          if (flags & 0x02) {
            const end = parseJson(payload);
            if (end.error) throw TrellisError.fromConnect(end.error, 200);
            return;
          }
          yield replyType.toObject(replyType.decode(payload), OBJECT_OPTIONS);
        }
      }
      throw new TrellisError({ code: grpc.status.UNAVAILABLE, details: 'the stream ended without its end message' });
    } finally {
      abort.abort();
    }
  }

  close() {}
}

function envelope(message) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, Buffer.from(message)]);
}

function parseJson(bytes) {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    return { code: 'unknown', message: `not a Connect reply: ${Buffer.from(bytes).toString('utf8', 0, 200)}` };
  }
}

// Milliseconds before retry number `attempt` (0-based): exponential, capped, jittered.
function backoff(client, attempt) {
  const ceiling = Math.min(client.backoffCapMs, client.backoffMs * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const RETRIED = [grpc.status.UNAVAILABLE, grpc.status.CANCELLED];

// Follows one session: an async iterator of events { revision, diff } (a change),
// { revision, bookmark: true } (nothing changed up to revision; the first one says
// where the watch starts) and { revision, deleted: true } (the last one). When the
// stream breaks (the server went away) it is opened again from the last revision
// received + 1, so nothing is missed or repeated; after resumeForMs without a server,
// or on any other error, it throws the TrellisError (reason WATCH_REVISION_COMPACTED,
// code OUT_OF_RANGE, when the changes since startRevision are no longer kept: get the
// session and watch from its revision + 1).
async function* watchEvents(client, sessionId, startRevision, resumeForMs) {
  let next = startRevision;
  let attempt = 0;
  let failingSince = 0;
  for (;;) {
    const request = { session_id: sessionId, start_revision: String(next), allow_bookmarks: true };
    let failure = new TrellisError({ code: grpc.status.UNAVAILABLE, details: 'the watch ended' });
    try {
      for await (const message of client.transport.stream('Sessions', 'Watch', request)) {
        attempt = 0;
        failingSince = 0;
        const revision = Number(message.revision);
        next = Math.max(next, revision + 1);
        if (message.deleted) {
          yield { revision, deleted: true };
          return;
        }
        yield message.bookmark ? { revision, bookmark: true } : { revision, diff: message.diff };
      }
      if (!next) return; // a server without revisions ends the stream on deletion
    } catch (err) {
      failure = err;
    }
    if (failure.code === grpc.status.NOT_FOUND && next) {
      yield { revision: next - 1, deleted: true }; // deleted while we were away
      return;
    }
    failingSince = failingSince || Date.now();
    if (!RETRIED.includes(failure.code) || Date.now() - failingSince > resumeForMs) throw failure;
    await sleep(backoff(client, attempt));
    attempt += 1;
  }
}

// The request ID fields of a step: a fresh UUID unless the caller gave one ('' sends none).
function stepFields(options) {
  const fields = { request_id: options.requestId === undefined ? crypto.randomUUID() : options.requestId };
  if (options.expectedRevision !== undefined) fields.expected_revision = String(options.expectedRevision);
  return fields;
}

// input: a string (text), { text }, { value: anyJson }, or { toolResult: { id, result, isError, error } }.
function toInput(input) {
  if (input === undefined || input === null) return { text: '' };
  if (typeof input === 'string') return { text: input };
  if (input.toolResult) {
    const r = input.toolResult;
    return {
      tool_result: {
        id: r.id,
        result_json: r.result === undefined ? '' : JSON.stringify(r.result),
        is_error: Boolean(r.isError),
        is_denied: Boolean(r.isDenied),
        error: r.error || '',
      },
    };
  }
  if ('value' in input) return { value_json: JSON.stringify(input.value) };
  return { text: String(input.text || '') };
}

// target: HOST:PORT for gRPC, http://HOST:PORT (or https://) for Connect.
class TrellisClient {
  constructor(target, options = {}) {
    const settings = { ...options, deadlineMs: options.deadlineMs || 30000 };
    const overHttp = /^https?:\/\//.test(target);
    if (overHttp && options.stepStream) {
      throw new Error(`stepStream: the step stream needs the gRPC transport (a HOST:PORT target), not ${target}`);
    }
    this.transport = overHttp ? new ConnectTransport(target, settings) : new GrpcTransport(target, settings);
    // Steps over one Sessions.Steps stream instead of a call each (StepStream).
    this.stepStream = options.stepStream ? new StepStream(this.transport) : null;
    this.retries = options.retries === undefined ? 4 : options.retries;
    this.backoffMs = options.backoffMs || 50;
    this.backoffCapMs = options.backoffCapMs || 2000;
    // One call with retries on UNAVAILABLE (and DEADLINE_EXCEEDED when `repeatable`: the
    // request carries an ID, so an attempt that was applied is not applied again).
    // `send`, when given, replaces the unary call (a step over the step stream).
    const unary = async (service, method, request, { retry = false, repeatable = false, send = null } = {}) => {
      const attempts = 1 + (retry ? this.retries : 0);
      for (let attempt = 0; ; attempt += 1) {
        try {
          return await (send ? send(method, request) : this.transport.unary(service, method, request));
        } catch (err) {
          const again =
            err.code === grpc.status.UNAVAILABLE || (repeatable && err.code === grpc.status.DEADLINE_EXCEEDED);
          if (!again || attempt + 1 >= attempts) throw err;
          await sleep(backoff(this, attempt));
        }
      }
    };
    const call = (service, method, request) => unary(service, method, request).then((r) => r.step || r);
    const read = (method, request) => unary('Sessions', method, request, { retry: true });
    // A step: { state, actions, terminal } plus created (Start) and replayed.
    const send = this.stepStream && ((method, request) => this.stepStream.send(method, request));
    const step = (method, request) => {
      const repeatable = Boolean(request.request_id);
      return unary('Sessions', method, request, { retry: repeatable, repeatable, send }).then((r) => ({
        ...r.step,
        created: Boolean(r.created),
        replayed: Boolean(r.replayed),
      }));
    };
    this.sessions = {
      start: (sessionId, context = {}, options = {}) =>
        step('Start', {
          session_id: sessionId,
          context_json: JSON.stringify(context),
          request_id: stepFields(options).request_id,
        }),
      get: (sessionId) => read('Get', { session_id: sessionId }).then((r) => r.step),
      navigate: (sessionId, input, options = {}) =>
        step('Navigate', { session_id: sessionId, input: toInput(input), ...stepFields(options) }),
      signal: (sessionId, name, options = {}) =>
        step('Signal', { session_id: sessionId, signal: name, ...stepFields(options) }),
      delete: (sessionId) => read('Delete', { session_id: sessionId }),
      list: (pageSize = 0, pageToken = '') => read('List', { page_size: pageSize, page_token: pageToken }),
      // The session's changes (StateDiff objects, each with its revision) until the
      // session is deleted or the caller stops iterating; resumes by itself (watchEvents).
      watch: async function* watch(sessionId, options = {}) {
        for await (const event of this.sessions.watchEvents(sessionId, options)) {
          if (event.diff) yield { ...event.diff, revision: event.revision };
        }
      }.bind(this),
      watchEvents: (sessionId, { startRevision = 0, resumeForMs = 30000 } = {}) =>
        watchEvents(this, sessionId, startRevision, resumeForMs),
    };
    this.engine = {
      start: (sessionId, context = {}) =>
        call('Engine', 'Start', { session_id: sessionId, context_json: JSON.stringify(context) }),
      navigate: (state, input) => call('Engine', 'Navigate', { state, input: toInput(input) }),
      signal: (state, name) => call('Engine', 'Signal', { state, signal: name }),
      render: (state) => unary('Engine', 'Render', { state }),
      inspect: () => unary('Engine', 'Inspect', {}).then((r) => r.nodes),
    };
  }

  close() {
    if (this.stepStream) this.stepStream.close();
    this.transport.close();
  }
}

// Helpers over a Step ({ state, actions, terminal }).
const texts = (step) => step.actions.filter((a) => a.kind === 'render_content').map((a) => a.render_content);
const toolCall = (step) => (step.actions.find((a) => a.kind === 'call_tool') || {}).call_tool;
const inputRequest = (step) => (step.actions.find((a) => a.kind === 'request_input') || {}).request_input;
const context = (step) => JSON.parse(step.state.context_json || '{}');

module.exports = { TrellisClient, TrellisError, decodeErrorDetails, texts, toolCall, inputRequest, context };
