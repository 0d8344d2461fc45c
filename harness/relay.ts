// How the harness (in the machine's own namespace) reaches addresses on its bridge: one relay
// process in the hub namespace listens on a unix socket per target (the file system is shared)
// and pipes each connection to that target's address. The harness then speaks HTTP over the
// socket; no port is opened outside the namespaces.

import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { HarnessError, type Namespace } from './namespaces.js';

const READY = 'relay-ready';
/** argv: dir, then host:port targets; socket for host:port is DIR/host_port.sock. Exits when stdin closes. */
const RELAY_SCRIPT = `
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const [dir, ...targets] = process.argv.slice(1);
let pending = targets.length;
for (const target of targets) {
  const [host, port] = target.split(':');
  const file = path.join(dir, host + '_' + port + '.sock');
  try { fs.unlinkSync(file); } catch {}
  net.createServer((client) => {
    const t = net.connect(Number(port), host);
    client.pipe(t).pipe(client);
    client.on('error', () => t.destroy());
    t.on('error', () => client.destroy());
  }).listen(file, () => { if (--pending === 0) console.log('${READY}'); });
}
process.stdin.on('end', () => process.exit(0)).resume();
`;

export class Relay {
  private constructor(private readonly child: ChildProcess, private readonly dir: string) {}

  static async start(hub: Namespace, dir: string, targets: string[]): Promise<Relay> {
    fs.mkdirSync(dir, { recursive: true });
    const child = hub.spawn(process.execPath, ['-e', RELAY_SCRIPT, dir, ...targets], { stdio: ['pipe', 'pipe', 'pipe'] });
    let said = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HarnessError(`the relay in ${hub.name} did not start within 10 s: ${said}`)), 10_000);
      const onData = (d: Buffer): void => {
        said += d.toString();
        if (said.includes(READY)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new HarnessError(`the relay in ${hub.name} exited (${code}): ${said}`));
      });
    });
    return new Relay(child, dir);
  }

  socketFor(target: string): string {
    return path.join(this.dir, `${target.replace(':', '_')}.sock`);
  }

  /** POSTs JSON to http://target/path through the relay; resolves with the status and parsed body. */
  post<T>(target: string, urlPath: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 5_000): Promise<{ status: number; body: T }> {
    const payload = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.socketFor(target), path: urlPath, method: 'POST', timeout: timeoutMs,
        headers: { host: target, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { text += c; });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as T });
          } catch {
            reject(new HarnessError(`${target}${urlPath} answered ${res.statusCode} with no JSON: ${text.slice(0, 200)}`));
          }
        });
      });
      req.on('timeout', () => req.destroy(new HarnessError(`${target}${urlPath} did not answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
