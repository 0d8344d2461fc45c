// The Host header check against a real vserverd (DNS rebinding): a request or WebSocket upgrade
// naming another host is refused with 421 before anything answers, sign-in and /healthz
// included; the loopback names on the port listened on, and a configured extra name, are served.
// Also the allowed names loadConfig derives from the listen address.

import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../server/config.js';
import { TestServer } from './helpers/server.js';

const EXTRA = 'vserver.example.test';

/** Sends one raw HTTP/1.1 request with exactly this Host header; returns the status and body. */
function rawRequest(port: number, host: string, head: string, body = ''): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer to ${head} within 10 s: ${answer}`)); }, 10_000);
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      // The first answer is enough: an accepted upgrade would stay open.
      const end = answer.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(answer)?.[1];
      if (end >= 0 && (length === undefined || answer.length >= end + 4 + Number(length) || /^HTTP\/1\.1 101/.test(answer))) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ status: Number(answer.slice(9, 12)), text: answer.slice(end + 4) });
      }
    });
    socket.on('end', () => { clearTimeout(timer); resolve({ status: Number(answer.slice(9, 12)), text: answer.slice(answer.indexOf('\r\n\r\n') + 4) }); });
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.write(`${head}\r\nHost: ${host}\r\n${/\r\nConnection:/.test(head) ? '' : 'Connection: close\r\n'}${body ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` : ''}\r\n${body}`);
  });
}

const upgrade = (pathname: string, token: string): string =>
  `GET ${pathname} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}`;

describe('the Host header', { timeout: 60_000 }, () => {
  let server: TestServer;
  let port = 0;
  const wrongPassword = JSON.stringify({ user: 'admin', password: 'wrong-password' });
  // No password: answered 400 when the Host is right, and not counted as a failed attempt.
  const noPassword = JSON.stringify({ user: 'admin' });

  /** Every kind of request, each answered by its status with this Host header. */
  async function statuses(host: string): Promise<Record<string, number>> {
    const rpc = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name', params: {} });
    return {
      'GET /login': (await rawRequest(port, host, 'GET /login HTTP/1.1')).status,
      'POST /api/login': (await rawRequest(port, host, 'POST /api/login HTTP/1.1', noPassword)).status,
      'POST /api/rpc': (await rawRequest(port, host, `POST /api/rpc HTTP/1.1\r\nAuthorization: Bearer ${server.adminToken}`, rpc)).status,
      'GET /api/schema': (await rawRequest(port, host, `GET /api/schema HTTP/1.1\r\nAuthorization: Bearer ${server.adminToken}`)).status,
      'GET /healthz': (await rawRequest(port, host, 'GET /healthz HTTP/1.1')).status,
      'upgrade /api/ws': (await rawRequest(port, host, upgrade('/api/ws', server.adminToken))).status,
      'upgrade /console/vnc': (await rawRequest(port, host, upgrade('/console/vnc', server.adminToken))).status,
    };
  }

  before(async () => {
    server = await TestServer.start({ args: ['--allowed-host', EXTRA] });
    port = Number(new URL(server.url).port);
  });

  after(async () => {
    await server?.stop();
    server?.remove();
  });

  test('a foreign name, or an allowed one on another port, is refused with 421 before anything answers: pages, sign-in, the API, /healthz, both WebSockets', async () => {
    for (const host of ['evil.example', `evil.example:${port}`, `localhost:${port + 1}`, 'localhost', `127.0.0.1.evil.example:${port}`, '']) {
      const got = await statuses(host);
      for (const [what, status] of Object.entries(got)) assert.equal(status, 421, `Host "${host}": ${what} answered ${status}`);
    }
    const refusal = await rawRequest(port, 'evil.example', 'GET /login HTTP/1.1');
    assert.match(refusal.text, /does not answer to the name "evil\.example"; add it to allowedHosts/);
    assert.doesNotMatch(refusal.text, /<form/, 'the sign-in page is not shown');
  });

  test('the refused sign-in is not even counted as an attempt: the lockout and the event log see nothing', async () => {
    const before = (await server.call<{ id: number }[]>('VirtualServer.GetEvents', { limit: 1000 })).length;
    for (let i = 0; i < 6; i++) assert.equal((await rawRequest(port, 'evil.example', 'POST /api/login HTTP/1.1', wrongPassword)).status, 421);
    assert.equal((await server.call<{ id: number }[]>('VirtualServer.GetEvents', { limit: 1000 })).length, before);
  });

  test('127.0.0.1, localhost and [::1] on the port listened on, any case, and the configured extra name are served as usual', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LocalHost:${port}`, `[::1]:${port}`, `${EXTRA}:${port}`, `${os.hostname()}:${port}`]) {
      assert.deepEqual(await statuses(host), {
        'GET /login': 200, 'POST /api/login': 400, 'POST /api/rpc': 200, 'GET /api/schema': 200, 'GET /healthz': 200,
        // Upgrades pass the Host check: /api/ws opens, and the console wants its ticket.
        'upgrade /api/ws': 101, 'upgrade /console/vnc': 401,
      }, `Host "${host}"`);
    }
  });

  test('loadConfig: the defaults follow the listen address; extra names come from --allowed-host, VSERVER_ALLOWED_HOSTS or the file; a malformed one is a ConfigError', () => {
    const hosts = (argv: string[], env: NodeJS.ProcessEnv = {}): string[] => loadConfig(argv, env, '/nonexistent').allowedHosts;
    const me = os.hostname().toLowerCase();
    assert.deepEqual(hosts([]), ['127.0.0.1', me, 'localhost', '[::1]']);
    assert.deepEqual(hosts(['--host', '::1']), ['[::1]', me, 'localhost', '127.0.0.1']);
    assert.deepEqual(hosts(['--host', '0.0.0.0']), [me, 'localhost', '127.0.0.1', '[::1]']);
    assert.deepEqual(hosts(['--host', '192.0.2.7']), ['192.0.2.7', me], 'a non-loopback address: no loopback names');
    assert.deepEqual(hosts(['--host', '192.0.2.7', '--allowed-host', 'vs.example.com', '--allowed-host', 'proxy.example.com:443']), ['192.0.2.7', me, 'vs.example.com', 'proxy.example.com:443']);
    assert.deepEqual(hosts(['--host', '192.0.2.7'], { VSERVER_ALLOWED_HOSTS: 'a.example, b.example' }), ['192.0.2.7', me, 'a.example', 'b.example']);
    for (const bad of ['http://a.example', 'a.example/', 'a b', '::1', 'a.example:port']) {
      assert.throws(() => hosts(['--allowed-host', bad]), (e: Error) => e instanceof ConfigError && e.message.includes(`"${bad}" is not a host name`), bad);
    }
  });
});
