// A QMP client: QEMU's JSON control protocol on a unix socket. One command at a time is in
// flight (QEMU answers in order); asynchronous events are delivered to listeners as they come.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { onJsonObjects } from './json-lines.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(readonly command: string, readonly errorClass: string, message: string) {
    super(`QEMU refused ${command}: ${message}`);
    this.name = 'QmpError';
  }
}

interface Pending { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void }

export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  private readonly pending: Pending[] = [];
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
    onJsonObjects(socket, (message) => this.dispatch(message));
    socket.on('close', () => this.onClose());
    socket.on('error', () => { /* reported through close */ });
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(socketPath);
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`no QMP greeting on ${socketPath} within ${timeoutMs} ms`)); }, timeoutMs);
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
      let greeting = '';
      const onData = (d: Buffer): void => {
        greeting += d.toString();
        const nl = greeting.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        s.off('data', onData);
        s.removeAllListeners('error');
        if (!greeting.startsWith('{"QMP"')) { s.destroy(); reject(new Error(`${socketPath} is not a QMP socket`)); return; }
        if (nl + 1 < greeting.length) s.unshift(Buffer.from(greeting.slice(nl + 1)));
        resolve(s);
      };
      s.on('data', onData);
    });
    const client = new QmpClient(socket);
    await client.execute('qmp_capabilities');
    return client;
  }

  /**
   * Connects once QEMU listens: QEMU creates its QMP socket some time after it starts. Gives up
   * as soon as `gone()` says QEMU has exited, or when the time is up.
   */
  static async connectWhenReady(socketPath: string, options: { timeoutMs: number; gone: () => boolean }): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      if (options.gone()) throw new Error(`QEMU exited before its QMP socket ${socketPath} answered`);
      try {
        return await QmpClient.connect(socketPath, Math.min(5_000, options.timeoutMs));
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`QEMU did not answer on ${socketPath} within ${options.timeoutMs} ms: ${(e as Error).message}`, { cause: e });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`QMP connection is closed (${command} not sent)`));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /** Resolves with the first event of that name, from now on, for which `match` holds. */
  waitForEvent(name: string, timeoutMs: number, match: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { cleanup(); reject(new Error(`QEMU sent no ${name} event within ${timeoutMs} ms`)); }, timeoutMs);
      const onEvent = (e: QmpEvent): void => {
        if (e.event === name && match(e)) { cleanup(); resolve(e); }
      };
      const onClose = (): void => { cleanup(); reject(new Error(`QEMU closed its control connection before ${name}`)); };
      const cleanup = (): void => { clearTimeout(timer); this.off('event', onEvent); this.off('close', onClose); };
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private dispatch(message: Record<string, unknown>): void {
    if (typeof message.event === 'string') {
      this.emit('event', message as unknown as QmpEvent);
      return;
    }
    const waiting = this.pending.shift();
    if (!waiting) return;
    if ('error' in message) {
      const error = message.error as { class: string; desc: string };
      waiting.reject(new QmpError(waiting.command, error.class, error.desc));
    } else {
      waiting.resolve(message.return);
    }
  }

  private onClose(): void {
    this.closed = true;
    for (const waiting of this.pending.splice(0)) waiting.reject(new Error(`QEMU closed its control connection during ${waiting.command}`));
    this.emit('close');
  }
}
