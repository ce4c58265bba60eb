'use strict';
// A trellis client written from protos/ and docs/ alone, as a Node shop would:
// no code from clients/node. It walks examples/tour against a real server,
// provokes errors on purpose and decodes each one with nothing but the error
// catalog (docs/errors.md) and the google.rpc protos from npm.
//
//   node tour.js HOST:PORT REPO_ROOT        (TRELLIS_TOKEN in the environment)
//
// Prints one JSON object per line: {"event": "step", ...} for each step of the
// walk, {"event": "error", ...} for each decoded error, {"event": "done"} last.
// Exits 1 (with the reason on stderr) when anything disagrees with the docs.

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtos = require('google-proto-files');

const [target, repo] = process.argv.slice(2);
const token = process.env.TRELLIS_TOKEN || '';

// --- the API, from the .proto files ---------------------------------------------------

const definition = protoLoader.loadSync(
  ['sessions.proto', 'engine.proto', 'graph.proto', 'server_info.proto'].map((f) => `trellis/v1/${f}`),
  { includeDirs: [path.join(repo, 'protos')], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).trellis.v1;
const creds = grpc.credentials.createInsecure();
const stubs = {
  sessions: new api.Sessions(target, creds),
  engine: new api.Engine(target, creds),
  graph: new api.GraphLoader(target, creds),
  info: new api.ServerInfo(target, creds),
};

// --- the error details: google/rpc/{status,error_details}.proto (docs/api.md, Errors) ----

const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, file) => path.join(path.dirname(googleProtos.getProtoPath()), file);
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpcRoot.lookupType('google.rpc.Status');
const byTypeUrl = {
  'type.googleapis.com/google.rpc.ErrorInfo': rpcRoot.lookupType('google.rpc.ErrorInfo'),
  'type.googleapis.com/google.rpc.BadRequest': rpcRoot.lookupType('google.rpc.BadRequest'),
};

function decodeDetails(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  const status = Status.decode(raw);
  const out = { code: grpc.status[err.code], message: err.details, reason: null, metadata: {}, violations: [] };
  for (const any of status.details) {
    const type = byTypeUrl[any.type_url || any.typeUrl];
    if (!type) continue;
    const detail = type.toObject(type.decode(any.value));
    if (detail.reason !== undefined) {
      out.reason = detail.reason;
      out.domain = detail.domain;
      out.metadata = detail.metadata || {};
    } else {
      out.violations = (detail.fieldViolations || []).map((v) => ({ field: v.field, reason: v.reason }));
    }
  }
  return out;
}

// --- the catalog: docs/errors.md ------------------------------------------------------

function readCatalog() {
  const text = fs.readFileSync(path.join(repo, 'docs', 'errors.md'), 'utf8');
  const reasons = {};
  const listKeys = new Set();
  for (const line of text.split('\n')) {
    const row = line.match(/^\| `([A-Z_]+)` \| `([A-Z_]+)` \| (.*?) \| .* \|$/);
    if (row) reasons[row[1]] = { code: row[2], keys: (row[3].match(/`([a-z_]+)`/g) || []).map((k) => k.slice(1, -1)) };
    const key = line.match(/^\| `([a-z_]+)` \(\*list\*\) \|/);
    if (key) listKeys.add(key[1]);
  }
  return { reasons, listKeys };
}
const catalog = readCatalog();

function fail(why) {
  process.stderr.write(`${why}\n`);
  process.exit(1);
}

// Checks one decoded error against the catalog and prints it.
function checked(what, decoded, sessionId) {
  if (!decoded || !decoded.reason) fail(`${what}: no ErrorInfo in grpc-status-details-bin`);
  if (decoded.domain !== 'trellis.dev') fail(`${what}: domain ${decoded.domain}`);
  const entry = catalog.reasons[decoded.reason];
  if (!entry) fail(`${what}: reason ${decoded.reason} is not in docs/errors.md`);
  if (entry.code !== decoded.code) fail(`${what}: ${decoded.reason} came as ${decoded.code}, the catalog says ${entry.code}`);
  for (const key of Object.keys(decoded.metadata)) {
    if (key !== 'session_id' && !entry.keys.includes(key)) fail(`${what}: metadata key ${key} is not listed for ${decoded.reason}`);
    if (catalog.listKeys.has(key) && !Array.isArray(JSON.parse(decoded.metadata[key]))) fail(`${what}: ${key} is not a JSON list`);
  }
  if (sessionId && decoded.metadata.session_id !== sessionId) fail(`${what}: session_id ${decoded.metadata.session_id}, expected ${sessionId}`);
  if (decoded.code === 'INVALID_ARGUMENT' && decoded.metadata.field) {
    const v = decoded.violations;
    if (v.length !== 1 || v[0].field !== decoded.metadata.field || v[0].reason !== decoded.reason) {
      fail(`${what}: BadRequest ${JSON.stringify(v)} does not name field ${decoded.metadata.field}`);
    }
  }
  console.log(JSON.stringify({ event: 'error', what, ...decoded }));
  return decoded;
}

// --- calls ----------------------------------------------------------------------------

function call(stub, method, request, withToken = true) {
  const metadata = new grpc.Metadata();
  if (withToken && token) metadata.set('authorization', `Bearer ${token}`);
  const deadline = new Date(Date.now() + 30000);
  return new Promise((resolve, reject) => {
    stubs[stub][method](request, metadata, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// The call must fail; returns its decoded error, checked against the catalog.
async function failing(what, promise, sessionId) {
  try {
    await promise;
  } catch (err) {
    return checked(what, decodeDetails(err), sessionId);
  }
  return fail(`${what}: succeeded, expected an error`);
}

function show(what, step) {
  const s = step.state;
  const ask = step.actions.find((a) => a.kind === 'request_input');
  console.log(JSON.stringify({
    event: 'step',
    what,
    node: s.current_node_id,
    status: s.status,
    terminated: s.terminated,
    terminal: step.terminal,
    signals: step.signals,
    rejected: step.input_rejected,
    nodes: step.actions.map((a) => a.node_id),
    texts: step.actions.filter((a) => a.kind === 'render_content').map((a) => a.render_content),
    notices: step.actions.filter((a) => a.kind === 'system_message').map((a) => a.system_message),
    input: ask ? ask.request_input : null,
    call: (step.actions.find((a) => a.kind === 'call_tool') || {}).call_tool || null,
    context: JSON.parse(s.context_json || '{}'),
  }));
  return step;
}

const SID = 'node-tour';
const say = async (text) => show(`say ${JSON.stringify(text)}`, (await call('sessions', 'Navigate', { session_id: SID, input: { text } })).step);

async function main() {
  const info = await call('info', 'GetServerInfo', {});
  console.log(JSON.stringify({ event: 'info', info }));

  // The walk: every part of the menu, then the end.
  await call('sessions', 'Delete', { session_id: SID }); // a fresh walk, even against a used server
  let step = show('start', (await call('sessions', 'Start', { session_id: SID, context_json: '{}' })).step);
  step = await say('Nadia');
  step = await say('drinks');
  step = await say('bogus'); // matches no transition: asked again, with a notice
  step = await say('tea');
  step = await say('confirm');
  await failing('confirm maybe', call('sessions', 'Navigate', { session_id: SID, input: { text: 'maybe' } }), SID);
  step = await say('yes');
  step = await say('tool'); // the server runs word_stats itself (tools.yaml)
  step = await say('broken tool');
  step = await say('timeout');
  // The question has a deadline: when it passes, the host sends the signal the step names.
  const timed = step.actions.find((a) => a.kind === 'request_input').request_input;
  if (!timed.timeout || !step.signals.includes(timed.timeout_signal)) fail('quick: no timeout signal');
  step = show('timeout elapsed', (await call('sessions', 'Signal', { session_id: SID, signal: timed.timeout_signal })).step);
  await failing('unknown signal', call('sessions', 'Signal', { session_id: SID, signal: 'bogus' }), SID);
  await failing(
    'tool result with no call pending',
    call('sessions', 'Navigate', { session_id: SID, input: { tool_result: { id: 'word_stats', result_json: '{}' } } }),
    SID,
  );
  step = await say('shop');
  step = await say('pay');
  step = await say('greeting');
  step = await say(''); // Enter: the menu's default, finish
  step = await say(''); // Enter at finish: the session ends
  if (!step.state.terminated || step.state.status !== 'STATUS_TERMINATED') fail('the tour did not end');
  await failing('input after the end', call('sessions', 'Navigate', { session_id: SID, input: { text: 'more' } }), SID);

  // Errors of the other services and of bad requests.
  await failing('unknown session', call('sessions', 'Get', { session_id: 'nobody-here' }), 'nobody-here');
  await failing('bad session id', call('sessions', 'Start', { session_id: '', context_json: '{}' }));
  await failing('bad context', call('sessions', 'Start', { session_id: 'ctx', context_json: '{' }), 'ctx');
  await failing('garbage page token', call('sessions', 'List', { page_size: 0, page_token: 'garbage' }));
  await failing('no token', call('sessions', 'Get', { session_id: SID }, false));
  await failing('unknown node', call('graph', 'GetNode', { node_id: 'nope' }));

  // The stateless Engine: the caller carries the (signed) state and answers tool calls.
  // Engine.Start stops at the entry node even when it only shows text (Sessions.Start
  // moves on): an empty input moves on from it (docs/api.md, "Engine").
  let e = show('engine start', (await call('engine', 'Start', { session_id: 'carried', context_json: '{}' })).step);
  if (e.state.current_node_id !== 'start') fail(`Engine.Start moved on to ${e.state.current_node_id}`);
  e = (await call('engine', 'Navigate', { state: e.state, input: { text: '' } })).step;
  e = (await call('engine', 'Navigate', { state: e.state, input: { text: 'Nadia' } })).step;
  e = show('engine tool', (await call('engine', 'Navigate', { state: e.state, input: { text: 'tool' } })).step);
  const pending = e.state.pending_tool_call;
  await failing('text while a tool call is pending', call('engine', 'Navigate', { state: e.state, input: { text: 'hi' } }), 'carried');
  await failing(
    'tool result for another call',
    call('engine', 'Navigate', { state: e.state, input: { tool_result: { id: `${pending}-other`, result_json: '{}' } } }),
    'carried',
  );
  const forged = { ...e.state, context_json: JSON.stringify({ ...JSON.parse(e.state.context_json), name: 'Mallory' }) };
  await failing('forged state', call('engine', 'Navigate', { state: forged, input: { text: 'x' } }), 'carried');
  const answered = await call('engine', 'Navigate', {
    state: e.state,
    input: { tool_result: { id: pending, result_json: JSON.stringify({ word: 'Nadia', letters: 5, vowels: ['a', 'a'] }) } },
  });
  show('engine tool answered', answered.step);

  console.log(JSON.stringify({ event: 'done' }));
  Object.values(stubs).forEach((s) => s.close());
}

main().catch((err) => fail(`unexpected: ${err.stack || err}`));
