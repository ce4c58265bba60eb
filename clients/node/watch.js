'use strict';
// Prints the events of one session's watch as JSON lines until the session is deleted:
//   node watch.js HOST:PORT SESSION_ID
// The target may list several servers (ipv4:HOST:PORT,HOST:PORT): when the one in use
// goes away the watch resumes on the next, missing and repeating nothing.
const { TrellisClient } = require('./trellis');

async function main() {
  const [target, sessionId] = process.argv.slice(2);
  if (!target || !sessionId) {
    console.error('usage: node watch.js HOST:PORT SESSION_ID');
    process.exit(2);
  }
  const client = new TrellisClient(target, { token: process.env.TRELLIS_TOKEN });
  try {
    for await (const event of client.sessions.watchEvents(sessionId)) {
      console.log(JSON.stringify(event));
    }
  } finally {
    client.close();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
