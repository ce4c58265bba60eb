'use strict';
// Run by tests/http/test_node_connect.py: the Node client over Connect against a real
// server, checked against the same client over gRPC.
//
//   node node_transports.js CLIENT_DIR GRPC_TARGET HTTP_URL
// Prints "ok" and exits 0 when every check holds; an assertion error otherwise.

const assert = require('assert');
const path = require('path');

async function main([clientDir, grpcTarget, httpUrl]) {
  const { TrellisClient, texts, context } = require(path.resolve(clientDir, 'trellis.js'));
  const grpcClient = new TrellisClient(grpcTarget);
  const connect = new TrellisClient(httpUrl);
  try {
    // Started over Connect, the step is the very object gRPC returns for the session.
    const started = await connect.sessions.start('node-connect', { visits: 2 });
    assert.strictEqual(started.state.current_node_id, 'ask_name');
    assert.deepStrictEqual(await connect.sessions.get('node-connect'), await grpcClient.sessions.get('node-connect'));
    assert.ok(texts(started).some((text) => text.includes('been here 2 time(s)')));

    // A Connect watch sees a step taken over gRPC.
    const watch = connect.sessions.watch('node-connect');
    const first = watch.next();
    let diff = null;
    for (let attempt = 0; attempt < 100 && diff === null; attempt += 1) {
      // bounded: until the watch is open on the server (it shows the next step)
      const step = await grpcClient.sessions.navigate('node-connect', attempt === 0 ? 'Nia' : '');
      assert.ok(step.state);
      diff = await Promise.race([first, new Promise((resolve) => setTimeout(() => resolve(null), 200))]);
    }
    assert.ok(diff && !diff.done, 'the watch saw no step');
    assert.strictEqual(diff.value.session_id, 'node-connect');
    await watch.return();

    const named = await connect.sessions.get('node-connect');
    assert.strictEqual(context(named).name, 'Nia');

    // Errors look the same over both transports.
    const failures = [];
    for (const client of [grpcClient, connect]) {
      try {
        await client.sessions.get('nobody-here');
        failures.push(null);
      } catch (err) {
        failures.push(err);
      }
    }
    assert.ok(failures.every((err) => err && err.codeName === 'NOT_FOUND'), String(failures));
    assert.strictEqual(failures[0].message, failures[1].message);
    assert.strictEqual(failures[1].reason, 'SESSION_NOT_FOUND');

    // A watch of a session that does not exist fails like the call does.
    await assert.rejects(
      (async () => {
        for await (const _ of connect.sessions.watch('nobody-here')) break; // eslint-disable-line no-unused-vars
      })(),
      (err) => err.codeName === 'NOT_FOUND',
    );

    // The stateless engine over Connect.
    const nodes = await connect.engine.inspect();
    assert.ok(nodes.some((node) => node.id === 'menu'));
    console.log('ok');
  } finally {
    grpcClient.close();
    connect.close();
  }
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
