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
//
// Safe retries: every Start, Navigate and Signal carries a request ID (a fresh
// UUID unless { requestId } is given), which the server applies at most once. A
// call that fails with UNAVAILABLE or DEADLINE_EXCEEDED is therefore sent again
// with the same ID, up to `retries` times (default 4) with capped, jittered
// exponential backoff (backoffMs 50, backoffCapMs 2000); a step whose first
// attempt had been applied comes back with `replayed: true`. Other calls retry
// UNAVAILABLE only when they are reads. { expectedRevision } applies a step only
// at that revision (else ABORTED, reason REVISION_MISMATCH).

const crypto = require('crypto');
const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

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

// An Error for a failed call: gRPC status code name, and the server's message.
class TrellisError extends Error {
  constructor(err) {
    super(`${grpc.status[err.code] || err.code}: ${err.details || err.message}`);
    this.code = err.code;
    this.codeName = grpc.status[err.code];
    this.details = err.details;
  }
}

function credentials(options) {
  if (!options.tls && !options.caFile && !options.certFile) {
    return grpc.credentials.createInsecure();
  }
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(options.caFile), read(options.keyFile), read(options.certFile));
}

// Calls one unary method with the client's deadline (per attempt) and token, as a
// promise. Retries on UNAVAILABLE (and DEADLINE_EXCEEDED when `repeatable`: the
// request carries an ID, so an attempt that was applied is not applied again).
async function unary(client, stub, method, request, { retry = false, repeatable = false } = {}) {
  const metadata = new grpc.Metadata();
  if (client.token) metadata.set('authorization', `Bearer ${client.token}`);
  const attempts = 1 + (retry ? client.retries : 0);
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await once(stub, method, request, metadata, client.deadlineMs);
    } catch (err) {
      const again =
        err.code === grpc.status.UNAVAILABLE || (repeatable && err.code === grpc.status.DEADLINE_EXCEEDED);
      if (!again || attempt + 1 >= attempts) throw new TrellisError(err);
      await sleep(backoff(client, attempt));
    }
  }
}

function once(stub, method, request, metadata, deadlineMs) {
  const deadline = new Date(Date.now() + deadlineMs);
  return new Promise((resolve, reject) => {
    stub[method](request, metadata, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// Milliseconds before retry number `attempt` (0-based): exponential, capped, jittered.
function backoff(client, attempt) {
  const ceiling = Math.min(client.backoffCapMs, client.backoffMs * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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

class TrellisClient {
  constructor(target, options = {}) {
    const api = loadApi();
    const creds = credentials(options);
    this.token = options.token || '';
    this.deadlineMs = options.deadlineMs || 30000;
    this.retries = options.retries === undefined ? 4 : options.retries;
    this.backoffMs = options.backoffMs || 50;
    this.backoffCapMs = options.backoffCapMs || 2000;
    const sessions = new api.Sessions(target, creds);
    const engine = new api.Engine(target, creds);
    this._stubs = [sessions, engine];
    const call = (stub, method, request) => unary(this, stub, method, request).then((r) => r.step || r);
    const read = (method, request) => unary(this, sessions, method, request, { retry: true });
    // A step: { state, actions, terminal } plus created (Start) and replayed.
    const step = (method, request) => {
      const repeatable = Boolean(request.request_id);
      return unary(this, sessions, method, request, { retry: repeatable, repeatable }).then((r) => ({
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

module.exports = { TrellisClient, TrellisError, texts, toolCall, inputRequest, context };
