'use strict';
// The Node.js sidecar kit: tools served over trellis.v1.ActionDispatcher with
// @grpc/grpc-js, under the same contract as the Python kit (docs/sidecars.md):
//
//   const { Sidecar } = require('./sidecar');
//   const sidecar = new Sidecar();
//   sidecar.tool('greet', { schema: { type: 'object', required: ['name'] } },
//     async ({ name }) => ({ greeting: `hello ${name}` }));
//   sidecar.run(process.argv[2] || '127.0.0.1:50070');
//
// Every call: a fencing token lower than the largest seen for its session is
// refused (ABORTED) before anything runs; the arguments are checked against the
// tool's JSON Schema (a mismatch is an error result); a call whose idempotency key
// already ran (or is running) gets that run's result; the tool gets an AbortSignal
// that fires at the deadline or when the caller cancels. A tool that throws is an
// error result whose error_type is the error's name. Health (grpc.health.v1) is
// served too; SIGTERM drains (running calls get the grace period to finish).

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const SERVICE = 'trellis.v1.ActionDispatcher';
const MAX_KEYS = 10000;
const KEY_TTL_MS = 600000;
const MAX_SESSIONS = 100000;
const MAX_PROBLEMS = 10;
const MAX_DEPTH = 32;

function loadPackages() {
  const options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
  const api = protoLoader.loadSync([path.join('trellis', 'v1', 'dispatcher.proto')], {
    ...options,
    includeDirs: [PROTO_ROOT],
  });
  const health = protoLoader.loadSync(path.join(__dirname, 'health.proto'), options);
  return {
    trellis: grpc.loadPackageDefinition(api).trellis.v1,
    health: grpc.loadPackageDefinition(health).grpc.health.v1,
  };
}

// --- JSON Schema subset: type, properties, required, additionalProperties, items, enum,
// minimum, maximum, minLength, maxLength (as the Python kit checks).

function typeOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value; // string, boolean, object
}

function matchesType(value, name) {
  const actual = typeOf(value);
  return actual === name || (name === 'number' && actual === 'integer');
}

function check(value, schema, where, found, depth) {
  if (found.length >= MAX_PROBLEMS || !schema || typeof schema !== 'object') return;
  if (depth > MAX_DEPTH) {
    found.push(`${where}: nested deeper than ${MAX_DEPTH} levels`);
    return;
  }
  if (schema.type !== undefined) {
    const names = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!names.some((name) => matchesType(value, name))) {
      found.push(`${where}: expected ${names.join(' or ')}, got ${typeOf(value)}`);
      return;
    }
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((item) => JSON.stringify(item) === JSON.stringify(value))) {
    found.push(`${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) found.push(`${where}: less than ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) found.push(`${where}: more than ${schema.maximum}`);
  }
  if (typeof value === 'string') {
    if (typeof schema.minLength === 'number' && value.length < schema.minLength) found.push(`${where}: too short`);
    if (typeof schema.maxLength === 'number' && value.length > schema.maxLength) found.push(`${where}: too long`);
  }
  if (typeOf(value) === 'object') {
    const properties = schema.properties && typeof schema.properties === 'object' ? schema.properties : {};
    for (const name of Array.isArray(schema.required) ? schema.required : []) {
      if (!(name in value)) found.push(`${where}.${name}: required`);
    }
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) check(item, properties[name], `${where}.${name}`, found, depth + 1);
      else if (schema.additionalProperties === false) found.push(`${where}.${name}: unknown argument`);
    }
  }
  if (Array.isArray(value) && schema.items && typeof schema.items === 'object') {
    value.forEach((item, index) => check(item, schema.items, `${where}[${index}]`, found, depth + 1));
  }
}

function problems(value, schema) {
  const found = [];
  check(value, schema, 'args', found, 0);
  return found.slice(0, MAX_PROBLEMS);
}

// --- wire helpers

function duration(ms) {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function timestampMs(ts) {
  return ts ? Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6) : null;
}

function failure(id, error, errorType) {
  return { id, result_json: '', is_error: true, is_denied: false, error, error_type: errorType };
}

class StaleFence extends Error {}

class Sidecar {
  constructor({ maxKeys = MAX_KEYS, keyTtlMs = KEY_TTL_MS, maxSessions = MAX_SESSIONS } = {}) {
    this.tools = new Map();
    this.runs = new Map(); // idempotency key -> { promise, expires } (insertion order = age)
    this.fences = new Map(); // session -> largest fencing token seen (BigInt)
    this.limits = { maxKeys, keyTtlMs, maxSessions };
    this.server = null;
    this.serving = false;
  }

  // fn(args, context) -> result (or a promise of one). context: { session_id, node_id, attempt,
  // deadline (Date or null), idempotency_key, fencing_token (string), signal (AbortSignal) }.
  // options: description, schema (JSON Schema of args), idempotent, timeoutMs, retry
  // ({ initialIntervalMs, backoffCoefficient, maximumIntervalMs, maximumAttempts, nonRetryableErrorTypes }).
  tool(name, options, fn) {
    if (typeof options === 'function') [options, fn] = [{}, options];
    if (!name || this.tools.has(name)) throw new Error(`tool name missing or defined twice: ${name}`);
    this.tools.set(name, { name, fn, ...options });
    return this;
  }

  toolInfo(tool) {
    const info = {
      name: tool.name,
      description: tool.description || '',
      args_schema_json: tool.schema ? JSON.stringify(tool.schema) : '',
      idempotent: Boolean(tool.idempotent),
    };
    if (tool.timeoutMs) info.timeout = duration(tool.timeoutMs);
    if (tool.retry) {
      const r = tool.retry;
      info.retry = {
        initial_interval: duration(r.initialIntervalMs ?? 1000),
        backoff_coefficient: r.backoffCoefficient ?? 2,
        maximum_attempts: r.maximumAttempts ?? 1,
        non_retryable_error_types: r.nonRetryableErrorTypes || [],
      };
      if (r.maximumIntervalMs) info.retry.maximum_interval = duration(r.maximumIntervalMs);
    }
    return info;
  }

  admit(sessionId, token) {
    const value = BigInt(token || '0');
    if (value <= 0n || !sessionId) return;
    const seen = this.fences.get(sessionId) ?? 0n;
    if (value < seen) {
      throw new StaleFence(
        `stale fencing token ${value} for session '${sessionId}': a later lock holder (token ${seen}) ` +
          'has called this sidecar; the call was refused',
      );
    }
    this.fences.delete(sessionId); // re-insert: the newest session goes last
    this.fences.set(sessionId, value);
    if (this.fences.size > this.limits.maxSessions) this.fences.delete(this.fences.keys().next().value);
  }

  // One run per key: a running or finished (within the TTL) run is shared; a failed one is forgotten.
  once(key, work) {
    if (!key) return work();
    const now = Date.now();
    for (const [k, run] of this.runs) {
      if (run.expires === null || run.expires > now) break;
      this.runs.delete(k);
    }
    const existing = this.runs.get(key);
    if (existing) return existing.promise;
    const run = { promise: null, expires: null };
    run.promise = work().then((result) => {
      if (result.is_error) this.runs.delete(key);
      else run.expires = Date.now() + this.limits.keyTtlMs;
      return result;
    });
    this.runs.set(key, run);
    while (this.runs.size > this.limits.maxKeys) {
      const oldest = [...this.runs.entries()].find(([, r]) => r.expires !== null);
      if (!oldest) break;
      this.runs.delete(oldest[0]);
    }
    return run.promise;
  }

  async runTool(tool, call, context, cancelled) {
    let args;
    try {
      args = call.args_json ? JSON.parse(call.args_json) : {};
    } catch (err) {
      return failure(call.id, `invalid arguments for tool ${tool.name}: ${err.message}`, 'InvalidArguments');
    }
    args = args ?? {};
    if (tool.schema) {
      const found = problems(args, tool.schema);
      if (found.length) {
        return failure(call.id, `invalid arguments for tool ${tool.name}: ${found.join('; ')}`, 'InvalidArguments');
      }
    }
    const limits = [];
    if (tool.timeoutMs) limits.push(tool.timeoutMs);
    if (context.deadline) limits.push(Math.max(context.deadline.getTime() - Date.now(), 0));
    const controller = new AbortController();
    cancelled.then(() => controller.abort(new Error('the caller cancelled the call')));
    let timer = null;
    const timeout = new Promise((resolve) => {
      if (!limits.length) return;
      const ms = Math.min(...limits);
      timer = setTimeout(() => {
        controller.abort(new Error('deadline exceeded'));
        resolve(failure(call.id, `tool ${tool.name} timed out after ${ms / 1000}s`, 'Timeout'));
      }, ms);
    });
    const run = (async () => {
      try {
        const value = await tool.fn(args, { ...context, signal: controller.signal });
        return { id: call.id, result_json: value === undefined ? '' : JSON.stringify(value), is_error: false, is_denied: false, error: '', error_type: '' };
      } catch (err) {
        const type = (err && err.name) || 'Error';
        return failure(call.id, `tool ${tool.name} failed: ${type}: ${err && err.message}`, type);
      }
    })();
    try {
      return await Promise.race([run, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async dispatch(call, cancelled, rpcDeadline) {
    const request = call.request;
    const toolCall = request.call || {};
    const ctx = request.context || {};
    const deadlineMs = timestampMs(ctx.deadline) ?? (rpcDeadline instanceof Date ? rpcDeadline.getTime() : null);
    const context = {
      session_id: ctx.session_id || '',
      node_id: ctx.node_id || '',
      attempt: ctx.attempt || 1,
      deadline: deadlineMs === null || !Number.isFinite(deadlineMs) ? null : new Date(deadlineMs),
      idempotency_key: ctx.idempotency_key || toolCall.idempotency_key || '',
      fencing_token: String(ctx.fencing_token || '0'),
    };
    const tool = this.tools.get(toolCall.name);
    if (!tool) return failure(toolCall.id, `tool not found: ${toolCall.name}`, 'ToolNotFound');
    this.admit(context.session_id, context.fencing_token); // throws StaleFence
    const key = context.idempotency_key ? `${tool.name}\u0000${context.idempotency_key}` : '';
    const result = await this.once(key, () => this.runTool(tool, toolCall, context, cancelled));
    return { ...result, id: toolCall.id };
  }

  authorized(call) {
    if (!this.token) return true;
    const [value] = call.metadata.get('authorization');
    return value === `Bearer ${this.token}`;
  }

  // Start serving; resolves to the address clients use (HOST:PORT with the bound port, or unix:...).
  listen(address, { token = process.env.TRELLIS_TOKEN || '', credentials = null } = {}) {
    const { trellis, health } = loadPackages();
    this.token = token;
    const server = new grpc.Server();
    const guard = (handler) => (call, callback) => {
      if (!this.authorized(call)) {
        callback({ code: grpc.status.UNAUTHENTICATED, details: 'missing or invalid bearer token' });
        return;
      }
      handler(call, callback);
    };
    server.addService(trellis.ActionDispatcher.service, {
      ListTools: guard((call, callback) => {
        callback(null, { tools: [...this.tools.values()].map((tool) => this.toolInfo(tool)) });
      }),
      Dispatch: guard((call, callback) => {
        const cancelled = new Promise((resolve) => call.on('cancelled', resolve));
        this.dispatch(call, cancelled, call.getDeadline()).then(
          (result) => callback(null, { result }),
          (err) =>
            callback({
              code: err instanceof StaleFence ? grpc.status.ABORTED : grpc.status.INTERNAL,
              details: err instanceof StaleFence ? err.message : 'internal error in the sidecar',
            }),
        );
      }),
    });
    const status = (service) => {
      if (service !== '' && service !== SERVICE) return null;
      return this.serving ? 'SERVING' : 'NOT_SERVING';
    };
    server.addService(health.Health.service, {
      Check: (call, callback) => {
        const value = status(call.request.service);
        if (value === null) callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        else callback(null, { status: value });
      },
      Watch: (call) => {
        call.write({ status: status(call.request.service) || 'SERVICE_UNKNOWN' });
      },
    });
    const creds = credentials || grpc.ServerCredentials.createInsecure();
    return new Promise((resolve, reject) => {
      server.bindAsync(address, creds, (err, port) => {
        if (err) return reject(err);
        this.server = server;
        this.serving = true;
        if (address.startsWith('unix:')) resolve(address);
        else resolve(`${address.slice(0, address.lastIndexOf(':'))}:${port}`);
      });
    });
  }

  // Stop taking calls; running ones get graceMs to finish, then are cut off.
  drain(graceMs = 10000) {
    this.serving = false;
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // listen, print where, drain on SIGTERM/SIGINT (a second signal stops at once).
  async run(address, options = {}) {
    const where = await this.listen(address, options);
    console.log(`trellis sidecar: serving on ${where} (pid ${process.pid})`);
    let signals = 0;
    const stop = () => {
      signals += 1;
      if (signals > 1) process.exit(1);
      this.drain(options.graceMs ?? 10000).then(() => process.exit(0));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return where;
  }
}

module.exports = { Sidecar, problems };
