'use strict';
// An example tool sidecar in Node.js with two tools:
//   echo   returns its arguments (what `trellis conformance` uses to check dedupe and fencing)
//   sleep  waits {"seconds": N}, stopping early when the deadline passes or the caller cancels
//
//   node example-sidecar.js 127.0.0.1:50070          (or unix:///tmp/tools.sock)
//   trellis conformance dispatcher 127.0.0.1:50070

const { Sidecar } = require('./sidecar');

const sidecar = new Sidecar();

sidecar.tool('echo', { description: 'Returns its arguments.', idempotent: true }, (args) => args);

sidecar.tool(
  'sleep',
  {
    description: 'Waits the given number of seconds.',
    schema: {
      type: 'object',
      properties: { seconds: { type: 'number', minimum: 0 } },
      required: ['seconds'],
      additionalProperties: false,
    },
  },
  ({ seconds }, { signal }) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve({ slept: seconds }), seconds * 1000);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(signal.reason);
      });
    }),
);

sidecar.run(process.argv[2] || '127.0.0.1:50070', { graceMs: 5000 });
