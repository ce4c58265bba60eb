'use strict';
// A small Node.js client of the trellis gRPC service (Sessions and Engine).
//
// The .proto files are loaded at run time from protos/ at the root of the
// repository, so this client never goes stale against the API. Free-form values
// (contexts, tool arguments and results) travel as JSON text in `*_json` fields.
//
//   const { TrellisClient } = require('./trellis');
//   const client = new TrellisClient('127.0.0.1:50051', { token: process.env.TRELLIS_TOKEN });
//   let step = await client.sessions.start('me');
//   step = await client.sessions.navigate('me', { text: 'Ada' });
//   for await (const event of client.sessions.watch('me')) console.log(event.revision, event.diff);

const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtos = require('google-proto-files');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');

function loadApi() {
  const files = ['sessions.proto', 'engine.proto'].map((f) => path.join('trellis', 'v1', f));
  const definition = protoLoader.loadSync(files, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names exactly as in the .proto files (session_id, ...)
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true, // each oneof's set field is named in a property ("kind")
  });
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
  const out = { reason: '', domain: '', metadata: {}, fieldViolations: [] };
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return out;
  const types = detailTypes();
  let status;
  try {
    status = types.status.decode(raw);
  } catch (_e) {
    return out; // a malformed trailer (a proxy's) counts as absent
  }
  for (const any of status.details) {
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
    const decoded = decodeErrorDetails(err);
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
}

function credentials(options) {
  if (!options.tls && !options.caFile && !options.certFile) {
    return grpc.credentials.createInsecure();
  }
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(options.caFile), read(options.keyFile), read(options.certFile));
}

// Calls one unary method with the client's deadline and token, as a promise.
function unary(client, stub, method, request) {
  const metadata = new grpc.Metadata();
  if (client.token) metadata.set('authorization', `Bearer ${client.token}`);
  const deadline = new Date(Date.now() + client.deadlineMs);
  return new Promise((resolve, reject) => {
    stub[method](request, metadata, { deadline }, (err, reply) => (err ? reject(new TrellisError(err)) : resolve(reply)));
  });
}

const RETRIED = [grpc.status.UNAVAILABLE, grpc.status.CANCELLED];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follows one session: an async iterator of events { revision, diff } (a change),
// { revision, bookmark: true } (nothing changed up to revision; the first one says
// where the watch starts) and { revision, deleted: true } (the last one). When the
// stream breaks (the server went away) it is opened again from the last revision
// received + 1, so nothing is missed or repeated; after resumeForMs without a server,
// or on any other error, it throws a TrellisError (OUT_OF_RANGE, reason
// WATCH_REVISION_COMPACTED, when the changes since startRevision are no longer kept:
// get the session and watch from its revision + 1).
async function* watchSession(client, stub, sessionId, startRevision = 0, resumeForMs = 30000) {
  let next = startRevision;
  let attempt = 0;
  let failingSince = 0;
  for (;;) {
    const metadata = new grpc.Metadata();
    if (client.token) metadata.set('authorization', `Bearer ${client.token}`);
    const request = { session_id: sessionId, start_revision: String(next), allow_bookmarks: true };
    const call = stub.Watch(request, metadata);
    call.on('error', () => {}); // read by the loop below; a late one after cancel is expected
    let failure = { code: grpc.status.UNAVAILABLE, details: 'the watch ended' };
    try {
      for await (const message of call) {
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
    } finally {
      call.cancel();
    }
    if (failure.code === grpc.status.NOT_FOUND && next) {
      yield { revision: next - 1, deleted: true }; // deleted while we were away
      return;
    }
    failingSince = failingSince || Date.now();
    if (!RETRIED.includes(failure.code) || Date.now() - failingSince > resumeForMs) {
      throw new TrellisError(failure);
    }
    await sleep(Math.min(2000, 50 * 2 ** attempt++));
  }
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

class TrellisClient {
  constructor(target, options = {}) {
    const api = loadApi();
    const creds = credentials(options);
    this.token = options.token || '';
    this.deadlineMs = options.deadlineMs || 30000;
    const sessions = new api.Sessions(target, creds);
    const engine = new api.Engine(target, creds);
    this._stubs = [sessions, engine];
    const call = (stub, method, request) => unary(this, stub, method, request).then((r) => r.step || r);
    this.sessions = {
      start: (sessionId, context = {}) =>
        call(sessions, 'Start', { session_id: sessionId, context_json: JSON.stringify(context) }),
      get: (sessionId) => call(sessions, 'Get', { session_id: sessionId }),
      navigate: (sessionId, input) => call(sessions, 'Navigate', { session_id: sessionId, input: toInput(input) }),
      signal: (sessionId, name) => call(sessions, 'Signal', { session_id: sessionId, signal: name }),
      delete: (sessionId) => unary(this, sessions, 'Delete', { session_id: sessionId }),
      list: (pageSize = 0, pageToken = '') =>
        unary(this, sessions, 'List', { page_size: pageSize, page_token: pageToken }),
      watch: (sessionId, { startRevision = 0, resumeForMs = 30000 } = {}) =>
        watchSession(this, sessions, sessionId, startRevision, resumeForMs),
    };
    this.engine = {
      start: (sessionId, context = {}) =>
        call(engine, 'Start', { session_id: sessionId, context_json: JSON.stringify(context) }),
      navigate: (state, input) => call(engine, 'Navigate', { state, input: toInput(input) }),
      signal: (state, name) => call(engine, 'Signal', { state, signal: name }),
      render: (state) => unary(this, engine, 'Render', { state }),
      inspect: () => unary(this, engine, 'Inspect', {}).then((r) => r.nodes),
    };
  }

  close() {
    this._stubs.forEach((stub) => stub.close());
  }
}

// Helpers over a Step ({ state, actions, terminal }).
const texts = (step) => step.actions.filter((a) => a.kind === 'render_content').map((a) => a.render_content);
const toolCall = (step) => (step.actions.find((a) => a.kind === 'call_tool') || {}).call_tool;
const inputRequest = (step) => (step.actions.find((a) => a.kind === 'request_input') || {}).request_input;
const context = (step) => JSON.parse(step.state.context_json || '{}');

module.exports = { TrellisClient, TrellisError, decodeErrorDetails, texts, toolCall, inputRequest, context };
