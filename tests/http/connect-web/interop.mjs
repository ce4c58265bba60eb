// The official Connect clients against a trellis server's HTTP listener:
// @connectrpc/connect-web's Connect transport (JSON and binary) and its gRPC-Web
// transport, with the service schemas built at run time from a descriptor set of
// protos/trellis/v1 (no generated code). Run by tests/http/test_connect_web.py:
//
//   node interop.mjs DESCRIPTOR_SET BASE_URL
// Prints one "ok <transport>" line per transport; throws (exit 1) when a check fails.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [descriptorSet, baseUrl] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)));
const Sessions = registry.getService("trellis.v1.Sessions");
const ErrorInfo = registry.getMessage("google.rpc.ErrorInfo");

const transports = {
  "connect-json": createConnectTransport({ baseUrl }),
  "connect-binary": createConnectTransport({ baseUrl, useBinaryFormat: true }),
  "grpc-web": createGrpcWebTransport({ baseUrl }),
};

for (const [name, transport] of Object.entries(transports)) {
  const sessions = createClient(Sessions, transport);
  const id = `interop-${name}`;
  const started = await sessions.start({ sessionId: id });
  assert.equal(started.created, true);
  assert.equal(started.step.state.currentNodeId, "ask_name");

  // A server stream: the watch sees the next step.
  const abort = new AbortController();
  const watch = sessions.watch({ sessionId: id }, { signal: abort.signal })[Symbol.asyncIterator]();
  const firstDiff = watch.next();
  let seen = null;
  for (let attempt = 0; attempt < 100 && seen === null; attempt += 1) {
    // bounded: until the watch is open on the server and shows a step
    await sessions.navigate({ sessionId: id, input: { kind: { case: "text", value: attempt ? "" : "Io" } } });
    seen = await Promise.race([firstDiff, new Promise((resolve) => setTimeout(() => resolve(null), 200))]);
  }
  assert.ok(seen && !seen.done, `${name}: the watch saw no step`);
  assert.equal(seen.value.diff.sessionId, id);
  abort.abort();
  await firstDiff.catch(() => {});

  // The error table's reason arrives as a Connect error detail.
  await assert.rejects(sessions.get({ sessionId: "nobody" }), (err) => {
    assert.ok(err instanceof ConnectError, String(err));
    assert.equal(err.code, Code.NotFound);
    const [info] = err.findDetails(ErrorInfo);
    assert.equal(info.reason, "SESSION_NOT_FOUND");
    assert.equal(info.metadata.session_id, "nobody");
    return true;
  });
  console.log(`ok ${name}`);
}
