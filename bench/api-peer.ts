// The peer of the "api" benchmark: a bare Express app answering JSON-RPC 2.0 at POST /rpc from
// an in-memory map, with none of vserverd's work (no authentication, schema, references, access
// checks or catalog). Run as its own process by bench/api.ts:
//   node dist/bench/api-peer.js VALUES_JSON
// VALUES_JSON is {"VirtualMachine/<id>": {"get_Name": ..., ...}, ...}; a call of
// VirtualMachine.<member> with {"this": ref} is answered with values[ref][member]. It listens on
// 127.0.0.1, a free port, prints "api-peer: listening on http://127.0.0.1:PORT/" and stops on
// SIGTERM or SIGINT.

import type { AddressInfo } from 'node:net';
import express from 'express';

type Values = Record<string, Record<string, unknown>>;

const values = new Map<string, unknown>();
for (const [ref, members] of Object.entries(JSON.parse(process.argv[2] ?? '{}') as Values)) {
  for (const [member, value] of Object.entries(members)) values.set(`${ref} VirtualMachine.${member}`, value);
}

const app = express();
app.use(express.json());
app.post('/rpc', (req, res) => {
  const { id, method, params } = (req.body ?? {}) as { id?: unknown; method?: unknown; params?: { this?: unknown } };
  const key = `${String(params?.this)} ${String(method)}`;
  if (!values.has(key)) {
    res.json({ jsonrpc: '2.0', id: id ?? null, error: { code: -32601, message: `no value for ${key}` } });
    return;
  }
  res.json({ jsonrpc: '2.0', id, result: values.get(key) });
});

const server = app.listen(0, '127.0.0.1', (error?: Error) => {
  if (error) {
    console.error(`api-peer: cannot listen: ${error.message}`);
    process.exit(1);
  }
  const { port } = server.address() as AddressInfo;
  console.log(`api-peer: listening on http://127.0.0.1:${port}/`);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
