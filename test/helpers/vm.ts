// Following a VM worker from a test: its serial console through the console socket (the same
// path a user attaches by), and the sequence of states it announces.

import net from 'node:net';
import type { VmStatus, VmState } from '../../vmm/state.js';
import type { WorkerClient } from '../../vmm/worker-client.js';
import { TextWatch } from './text-watch.js';

export class SerialReader {
  private readonly watch = new TextWatch('the console', () => `it showed:\n${this.text.slice(-2000)}`);
  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => this.watch.append(s.replace(/\r/g, '')));
    socket.on('error', () => {});
    socket.on('close', () => this.watch.end('the console closed'));
  }

  static attach(socketPath: string): Promise<SerialReader> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath, () => resolve(new SerialReader(socket)));
      socket.once('error', reject);
    });
  }

  /** What the console showed so far, carriage returns removed. */
  get text(): string {
    return this.watch.text;
  }

  /** Resolves with the index just past the first match at or after `from`. */
  async waitFor(pattern: string | RegExp, timeoutMs = 60_000, from = 0): Promise<number> {
    const match = await this.watch.waitFor(pattern, timeoutMs, from);
    return match.index + match.text.length;
  }

  type(text: string): void {
    this.socket.write(text);
  }

  /** Runs a shell command in the guest and returns what it printed between two markers. */
  async run(command: string, timeoutMs = 60_000): Promise<string> {
    const tag = `R${Math.random().toString(36).slice(2, 8)}`;
    const from = this.text.length;
    // The markers are built by the shell, so the echo of the typed line does not match them.
    this.type(`echo "${tag}"-begin; ${command}; echo "${tag}"-end\n`);
    const start = await this.waitFor(`${tag}-begin\n`, timeoutMs, from);
    const end = await this.waitFor(`${tag}-end`, timeoutMs, start);
    return this.text.slice(start, end - `${tag}-end`.length);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Records every state a worker announces, from now on. */
export function recordStates(client: WorkerClient): { states: VmState[]; last(): VmStatus | null } {
  const states: VmState[] = [];
  let last: VmStatus | null = null;
  client.on('state', (s) => { states.push(s.state); last = s; });
  return { states, last: () => last };
}

/** The last "tick N" the guest's ticker printed. */
export function lastTick(text: string): number {
  const ticks = [...text.matchAll(/^tick (\d+)$/gm)];
  return ticks.length ? Number(ticks[ticks.length - 1][1]) : 0;
}
