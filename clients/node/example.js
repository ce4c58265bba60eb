'use strict';
// Walks a flow on a trellis server from start to end:
//
//   node example.js HOST:PORT SESSION_ID [ANSWER ...]        (gRPC)
//   node example.js http://HOST:PORT SESSION_ID [ANSWER ...] (Connect, the server's --http-listen)
//
// Each prompt takes the next ANSWER (or the prompt's default); a tool call the
// server does not run is answered here with {"tool": NAME, "by": "node"}.
// Prints the flow's text, and "END <node>" when the session is over.
// Set TRELLIS_TOKEN for a server that requires a bearer token, and TRELLIS_STEP_STREAM=1
// to send the steps over one Sessions.Steps stream (gRPC only) instead of a call each.

const { TrellisClient, texts, toolCall, inputRequest } = require('./trellis');

const MAX_STEPS = 200; // a flow that never ends must not make this loop forever

async function main(argv) {
  const [target, sessionId, ...answers] = argv;
  if (!target || !sessionId) {
    console.error('usage: node example.js HOST:PORT SESSION_ID [ANSWER ...]');
    return 2;
  }
  const stepStream = process.env.TRELLIS_STEP_STREAM === '1';
  const client = new TrellisClient(target, { token: process.env.TRELLIS_TOKEN, stepStream });
  try {
    let step = await client.sessions.start(sessionId);
    for (let n = 0; n < MAX_STEPS; n += 1) {
      texts(step).forEach((text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`));
      if (step.terminal) {
        console.log(`END ${step.state.current_node_id || '(rolled back)'}`);
        return 0;
      }
      const call = toolCall(step);
      if (call) {
        console.log(`TOOL ${call.name} ${call.args_json}`);
        step = await client.sessions.navigate(sessionId, {
          toolResult: { id: call.id, result: { tool: call.name, by: 'node' } },
        });
        continue;
      }
      const request = inputRequest(step) || {};
      const answer = answers.length > 0 ? answers.shift() : request.default_value || '';
      console.log(`> ${answer}`);
      step = await client.sessions.navigate(sessionId, answer);
    }
    console.error(`the flow did not end within ${MAX_STEPS} steps`);
    return 1;
  } catch (err) {
    console.error(`error: ${err.message}`);
    if (err.reason) console.error(`reason: ${err.reason} ${JSON.stringify(err.metadata)}`);
    (err.fieldViolations || []).forEach((v) => console.error(`bad field: ${v.field}`));
    return 1;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
