// An NBD server for this project's VHDs: exports by name, listening on unix sockets (mode
// 0600, the default) and on loopback TCP. Connections are independent: one client's protocol
// error, flood or disconnect closes only that client.

import fs from 'node:fs';
import net from 'node:net';
import { NbdConnection } from './connection.js';
import type { NbdExport } from './export.js';

export interface NbdServerOptions {
  /** Where the server reports closed connections and failed requests. */
  log?: (line: string) => void;
  maxConnections?: number;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export class NbdServer {
  private readonly exports = new Map<string, NbdExport>();
  private readonly connections = new Set<NbdConnection>();
  private readonly sockets = new Set<net.Socket>();
  private readonly listeners: net.Server[] = [];
  private readonly socketPaths: string[] = [];
  private readonly log: (line: string) => void;
  private readonly maxConnections: number;

  constructor(options: NbdServerOptions = {}) {
    this.log = options.log ?? (() => {});
    this.maxConnections = options.maxConnections ?? 64;
  }

  /** Adds an export; the first one added also answers to the default name "". */
  addExport(exp: NbdExport): void {
    if (this.exports.has(exp.name)) throw new Error(`an export named "${exp.name}" already exists`);
    this.exports.set(exp.name, exp);
  }

  /** Removes an export, disconnecting its clients; the caller closes the disk. */
  removeExport(name: string): void {
    const exp = this.exports.get(name);
    if (!exp) return;
    this.exports.delete(name);
    for (const connection of this.connections) if (connection.export === exp) connection.close();
  }

  find(name: string): NbdExport | undefined {
    if (name === '' && !this.exports.has('')) return this.exports.values().next().value;
    return this.exports.get(name);
  }

  list(): NbdExport[] {
    return [...this.exports.values()];
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Listens on a unix socket only its owner may use. A stale socket file is replaced; a live one is refused. */
  async listenUnix(socketPath: string): Promise<void> {
    if (fs.existsSync(socketPath)) {
      if (await socketAnswers(socketPath)) throw new Error(`${socketPath} is in use by another server`);
      fs.rmSync(socketPath, { force: true });
    }
    const listener = this.newListener();
    // The umask makes the socket 0600 from its creation; chmod alone would leave a window.
    const umask = process.umask(0o177);
    try {
      await listen(listener, { path: socketPath });
    } finally {
      process.umask(umask);
    }
    this.socketPaths.push(socketPath);
  }

  /** Listens on loopback TCP; returns the port (pass 0 for any free port). */
  async listenTcp(port: number, host = '127.0.0.1'): Promise<number> {
    if (!LOOPBACK.has(host)) throw new Error(`NBD over TCP listens on loopback only (127.0.0.1 or ::1), not ${host}`);
    const listener = this.newListener();
    await listen(listener, { port, host });
    return (listener.address() as net.AddressInfo).port;
  }

  /** Stops listening and disconnects every client. Exports stay open: their disks are the caller's. */
  async close(): Promise<void> {
    // A listener's close completes only once its connections are gone, so they are cut first.
    const closed = this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(closed);
    for (const p of this.socketPaths) fs.rmSync(p, { force: true });
    await Promise.all([...this.exports.values()].map((e) => e.idle()));
    this.listeners.length = 0;
  }

  private newListener(): net.Server {
    const listener = net.createServer((socket) => this.accept(socket));
    listener.on('error', (e) => this.log(`listener error: ${e.message}`));
    this.listeners.push(listener);
    return listener;
  }

  private accept(socket: net.Socket): void {
    if (this.connections.size >= this.maxConnections) {
      this.log(`refusing a connection: ${this.maxConnections} clients are already connected`);
      socket.destroy();
      return;
    }
    if (socket.remoteFamily) socket.setNoDelay(true);
    const connection = new NbdConnection(socket, this, this.log);
    this.connections.add(connection);
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    void connection.serve().finally(() => this.connections.delete(connection));
  }
}

function listen(listener: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(options, () => {
      listener.off('error', reject);
      resolve();
    });
  });
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
