'use strict';
// Run by tests/polyglot/test_node_step_stream.py: the Node client with stepStream
// (clients/node/trellis.js) against a real server, checked against the same client
// making a unary call per step.
//
//   node node_step_stream.js walk CLIENT_DIR TARGET
//       the tour side by side over both clients, the same errors, many sessions at once
//   node node_step_stream.js restart CLIENT_DIR TARGET
//       steps across a graceful restart of the server; paced by lines on stdin
//   node node_step_stream.js deadline CLIENT_DIR TARGET
//       a step whose reply is held back past the client's deadline, over both clients;
//       paced by lines on stdin
// Each mode prints JSON lines for the test, the last one {"event":"done"}; an
// assertion error (exit code 1) when a check made here fails.

const assert = require('assert');
const path = require('path');
const readline = require('readline');

const say = (event) => console.log(JSON.stringify(event));

// A step with what depends on the session's name left out, to compare two sessions'
// steps; the revision too (the server's store numbers the revisions of all sessions).
function comparable(step, sessionId) {
  const text = JSON.stringify(step).split(JSON.stringify(sessionId).slice(1, -1)).join('<session>');
  const copy = JSON.parse(text);
  if (copy.state) delete copy.state.revision;
  return copy;
}

// What a caller sees of an error; the same over both clients.
const seen = (err) => ({
  message: err.message,
  code: err.code,
  codeName: err.codeName,
  details: err.details,
  reason: err.reason,
  metadata: err.metadata,
  fieldViolations: err.fieldViolations,
});

async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('the step succeeded but was expected to fail');
}

const ANSWERS = ['Nadia', 'drinks', 'tea', 'confirm', 'yes', 'tool', 'drinks', 'water', 'finish'];

async function walk(client, unary, target) {
  // The tour, one step at a time on each client: the same steps.
  const steps = [];
  let mine = await client.sessions.start('walk-stream', { visits: 1 });
  let theirs = await unary.sessions.start('walk-unary', { visits: 1 });
  for (const answer of ANSWERS) {
    assert.deepStrictEqual(comparable(mine, 'walk-stream'), comparable(theirs, 'walk-unary'));
    steps.push({ node: mine.state.current_node_id, terminal: mine.terminal, replayed: mine.replayed });
    mine = await client.sessions.navigate('walk-stream', answer);
    theirs = await unary.sessions.navigate('walk-unary', answer);
  }
  assert.deepStrictEqual(comparable(mine, 'walk-stream'), comparable(theirs, 'walk-unary'));
  steps.push({ node: mine.state.current_node_id, terminal: mine.terminal, replayed: mine.replayed });
  say({ event: 'walk', steps, history: mine.state.history });

  // The same request ID again: replayed, over the stream as over a unary call.
  const replays = [];
  for (const [c, id] of [[client, 'walk-stream'], [unary, 'walk-unary']]) {
    const first = await c.sessions.navigate(id, '', { requestId: `last-step-of-${id}` });
    const second = await c.sessions.navigate(id, '', { requestId: `last-step-of-${id}` });
    replays.push([first, second].map((step) => comparable(step, id)));
  }
  assert.deepStrictEqual(replays[0], replays[1]);
  say({ event: 'replay', replayed: replays[0].map((step) => step.replayed), terminated: replays[0][1].state.terminated });

  // Errors: the very objects a unary call's status gives.
  const errors = {
    'unknown session': (c) => c.sessions.navigate('nobody-here', 'hello'),
    'context not an object': (c) => c.sessions.start('bad-context', []),
    'unhandled signal': (c, id) => c.sessions.signal(id, 'no-such-signal'),
    'after the end': (c, id) => c.sessions.navigate(id, 'more'),
  };
  for (const [what, provoke] of Object.entries(errors)) {
    const streamed = seen(await failure(provoke(client, 'walk-stream')));
    const called = seen(await failure(provoke(unary, 'walk-unary')));
    assert.deepStrictEqual(comparable(streamed, 'walk-stream'), comparable(called, 'walk-unary'), what);
    say({ event: 'error', what, ...streamed });
  }

  // Many sessions at once (more than one message holds): all over the one stream.
  const ids = Array.from({ length: 80 }, (_, n) => `many-${n}`);
  const started = await Promise.all(ids.map((id) => client.sessions.start(id)));
  assert.ok(started.every((step) => step.created && step.state.current_node_id === 'ask_name'));
  await Promise.all(ids.map((id) => client.sessions.navigate(id, `Guest ${id}`)));
  for (const answer of ['drinks', 'tea', 'drinks', 'coffee']) {
    await Promise.all(ids.map((id) => client.sessions.navigate(id, answer)));
  }
  const finals = await Promise.all(ids.map((id) => unary.sessions.get(id)));
  say({
    event: 'many',
    sessions: finals.length,
    names: finals.map((step) => JSON.parse(step.state.context_json).name),
    histories: finals.map((step) => step.state.history),
    drinks: finals.map((step) => JSON.parse(step.state.context_json).drink),
    streams: client.stepStream.opened,
  });

  // Over Connect there is no step stream: said when the client is made.
  let refused = null;
  try {
    new (client.constructor)(`http://${target}`, { stepStream: true }); // eslint-disable-line no-new
  } catch (err) {
    refused = err.message;
  }
  say({ event: 'connect', refused });
}

// Paced by the test: `go` once the server is shutting down (the client's retries find
// the restarted server by themselves).
async function restart(client, lines) {
  const ids = ['calm-1', 'calm-2', 'calm-3'];
  await Promise.all(['busy', ...ids].map((id) => client.sessions.start(id)));
  await Promise.all(['busy', ...ids].map((id) => client.sessions.navigate(id, 'Nadia')));
  say({ event: 'ready', streams: client.stepStream.opened });
  // The server runs busy's tool until the test lets it finish.
  const busy = client.sessions.navigate('busy', 'tool');
  assert.strictEqual((await lines.next()).value, 'go');
  // Sent on the open stream of a server that reads no more: answered by the next server.
  const calm = ids.map((id) => client.sessions.navigate(id, 'drinks'));
  await new Promise((resolve) => setImmediate(resolve)); // the steps are written
  say({ event: 'sent' });
  const tooled = await busy;
  const drinks = await Promise.all(calm);
  const teas = await Promise.all(ids.map((id) => client.sessions.navigate(id, 'tea')));
  const finals = await Promise.all(['busy', ...ids].map((id) => client.sessions.get(id)));
  say({
    event: 'after',
    tool: { node: tooled.state.current_node_id, texts: tooled.actions.map((a) => a.render_content || '') },
    drinks: drinks.map((step) => step.state.current_node_id),
    teas: teas.map((step) => step.state.current_node_id),
    histories: Object.fromEntries(finals.map((step) => [step.state.session_id, step.state.history])),
    streams: client.stepStream.opened,
  });
}

// A step whose reply the test holds back (a proxy between client and server) fails at
// the client's deadline as a unary call does; sent again after, it is replayed. Then a
// step the server holds (the tour's tool, held by the test) past the deadline.
async function deadline(client, unary, lines) {
  const sides = [['late-stream', client], ['late-unary', unary]];
  for (const [id, c] of sides) {
    await c.sessions.start(id);
    await c.sessions.navigate(id, 'Nadia');
  }
  say({ event: 'ready' });
  assert.strictEqual((await lines.next()).value, 'go');
  const late = await Promise.all(
    sides.map(([id, c]) => failure(c.sessions.navigate(id, 'drinks', { requestId: `${id}-drinks` }))),
  );
  say({ event: 'late', errors: late.map((err) => seen(err)) });
  assert.strictEqual((await lines.next()).value, 'released');
  const again = await Promise.all(
    sides.map(([id, c]) => c.sessions.navigate(id, 'drinks', { requestId: `${id}-drinks` })),
  );
  say({
    event: 'again',
    steps: again.map((step) => ({ node: step.state.current_node_id, replayed: step.replayed })),
    streams: client.stepStream.opened,
  });

  // A step the server runs too long (the held tool): the test sees the server stop it
  // too, at the timeout the client sent.
  await client.sessions.start('held');
  await client.sessions.navigate('held', 'Nadia');
  const held = await failure(client.sessions.navigate('held', 'tool'));
  say({ event: 'held', error: held.codeName });
}

async function main([mode, clientDir, target]) {
  const { TrellisClient } = require(path.resolve(clientDir, 'trellis.js'));
  const settings = {
    walk: {},
    // Enough retries to outlast the restart (bounded: about a minute at most); a deadline
    // longer than the test waits, so only the stream's end can fail the cut-off steps.
    restart: { retries: 120, backoffMs: 50, backoffCapMs: 500, deadlineMs: 120000 },
    deadline: { deadlineMs: 1000, retries: 0 },
  }[mode];
  const client = new TrellisClient(target, { ...settings, stepStream: true });
  const unary = new TrellisClient(target, settings);
  try {
    const lines = () => readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    if (mode === 'walk') await walk(client, unary, target);
    else if (mode === 'restart') await restart(client, lines());
    else if (mode === 'deadline') await deadline(client, unary, lines());
    else throw new Error(`unknown mode ${mode}`);
    say({ event: 'done' });
  } finally {
    client.close();
    unary.close();
  }
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
