// Following a VM worker from a test: its serial console through the console socket (the same
// path a user attaches by), and the sequence of states it announces.

import net from 'node:net';
import type { VmStatus, VmState } from '../../vmm/state.js';
import type { WorkerClient } from '../../vmm/worker-client.js';

export class SerialReader {
  text = '';
  private waiters: Array<() => void> = [];
  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => {
      this.text += s.replace(/\r/g, '');
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => { for (const wake of this.waiters.splice(0)) wake(); });
  }

  static attach(socketPath: string): Promise<SerialReader> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath, () => resolve(new SerialReader(socket)));
      socket.once('error', reject);
    });
  }

  /** Resolves with the index just past the first match at or after `from`. */
  async waitFor(pattern: string | RegExp, timeoutMs = 60_000, from = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.text.slice(from);
      const match = typeof pattern === 'string' ? { index: rest.indexOf(pattern), length: pattern.length } : (() => {
        const m = pattern.exec(rest);
        return { index: m ? m.index : -1, length: m ? m[0].length : 0 };
      })();
      if (match.index >= 0) return from + match.index + match.length;
      if (this.socket.destroyed) throw new Error(`the console closed before ${String(pattern)}; it showed:\n${this.text.slice(-2000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${String(pattern)} did not appear on the console within ${timeoutMs} ms; it showed:\n${this.text.slice(-2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
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
