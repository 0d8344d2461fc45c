// Reaching a vserverd that runs in its own network namespace (TestServer.start({ netns })): it
// listens on 127.0.0.1 inside the namespace, which the test process cannot reach. A relay in
// the namespace listens on a unix socket in the run folder (the file system is shared) and
// connects each client to vserverd's port; a TCP listener on 127.0.0.1:0 in the test process
// pipes to that socket. The listener's port is known before vserverd starts, so vserverd can be
// told to answer to it (--allowed-host).

import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Netns } from './netns.js';

const RELAY_READY = 'relay-ready';
const RELAY_START_TIMEOUT_MS = 10_000;

/** The relay run in the namespace: argv = socket path, port. Exits when its stdin closes (the test process is gone). */
const RELAY_SCRIPT = `
const net = require('node:net');
const fs = require('node:fs');
const [socketPath, port] = process.argv.slice(1);
try { fs.unlinkSync(socketPath); } catch {}
net.createServer((client) => {
  const target = net.connect(Number(port), '127.0.0.1');
  client.pipe(target).pipe(client);
  client.on('error', () => target.destroy());
  target.on('error', () => client.destroy());
}).listen(socketPath, () => console.log('${RELAY_READY}'));
process.stdin.on('end', () => process.exit(0)).resume();
`;

function pipeBoth(a: net.Socket, b: net.Socket): void {
  a.pipe(b).pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
}

export class NetnsForwarder {
  private relay: ChildProcess | null = null;
  private socketPath: string | null = null;

  private constructor(private readonly listener: net.Server, readonly port: number) {}

  /** The test-side listener on 127.0.0.1 (any free port); connect() points it at vserverd. */
  static async listen(): Promise<NetnsForwarder> {
    let forwarder: NetnsForwarder | null = null;
    const listener = net.createServer((client) => {
      if (!forwarder?.socketPath) {
        client.destroy();
        return;
      }
      pipeBoth(client, net.connect(forwarder.socketPath));
    });
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(0, '127.0.0.1', () => resolve());
    });
    forwarder = new NetnsForwarder(listener, (listener.address() as net.AddressInfo).port);
    return forwarder;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the relay in `netns` to 127.0.0.1:`port` there, its socket in `runDir`. */
  async connect(netns: Netns, runDir: string, port: number): Promise<void> {
    fs.mkdirSync(runDir, { recursive: true });
    const socketPath = path.join(runDir, `forward-${this.port}.sock`);
    const relay = spawn('ip', ['netns', 'exec', netns.name, process.execPath, '-e', RELAY_SCRIPT, socketPath, String(port)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.relay = relay;
    let said = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        relay.kill('SIGKILL');
        reject(new Error(`the relay in ${netns.name} did not start within ${RELAY_START_TIMEOUT_MS / 1000} s: ${said}`));
      }, RELAY_START_TIMEOUT_MS);
      const onData = (chunk: Buffer): void => {
        said += chunk.toString();
        if (said.includes(RELAY_READY)) {
          clearTimeout(timer);
          resolve();
        }
      };
      relay.stdout!.on('data', onData);
      relay.stderr!.on('data', onData);
      relay.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the relay in ${netns.name} exited (${code ?? signal}): ${said}`));
      });
    });
    this.socketPath = socketPath;
  }

  /** Stops the relay and the listener. */
  close(): void {
    const socketPath = this.socketPath;
    this.socketPath = null;
    this.listener.close();
    if (this.relay && this.relay.exitCode === null && this.relay.signalCode === null) this.relay.kill('SIGKILL');
    if (socketPath) fs.rmSync(socketPath, { force: true });
  }
}
