// Exact-length reads from a socket. Requests are taken synchronously while bytes are buffered
// (so a burst of pipelined requests costs no promise per request), and the socket is paused
// while too much is buffered, so a client that floods requests cannot exhaust memory.

import type { Socket } from 'node:net';

export class ConnectionClosed extends Error {
  constructor() {
    super('connection closed');
  }
}

export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private waiter: (() => void) | null = null;

  constructor(private readonly socket: Socket, private readonly highWater: number) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered >= this.highWater) socket.pause();
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
  }

  get available(): number {
    return this.buffered;
  }

  /** The next `n` bytes if they have all arrived, else null. */
  tryRead(n: number): Buffer | null {
    if (this.buffered < n) return null;
    // EXPORT_NAME "" and a zero-length WRITE ask for nothing, possibly with nothing buffered.
    if (n === 0) return Buffer.alloc(0);
    let out: Buffer;
    const first = this.chunks[0];
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0];
        const take = Math.min(chunk.length, n - filled);
        chunk.copy(out, filled, 0, take);
        filled += take;
        if (take === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(take);
      }
    }
    this.consumed(n);
    return out;
  }

  async read(n: number): Promise<Buffer> {
    for (;;) {
      const out = this.tryRead(n);
      if (out) return out;
      if (this.ended) throw new ConnectionClosed();
      await this.wait(n);
    }
  }

  /** Discards the next `n` bytes without holding them. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0) {
        if (this.ended) throw new ConnectionClosed();
        await this.wait(1);
        continue;
      }
      const chunk = this.chunks[0];
      const take = Math.min(chunk.length, left);
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
      left -= take;
      this.consumed(take);
    }
  }

  private consumed(n: number): void {
    this.buffered -= n;
    if (this.buffered < this.highWater && this.socket.isPaused()) this.socket.resume();
  }

  private wait(n: number): Promise<void> {
    // A request bigger than the high-water mark must still be able to arrive whole.
    if (this.socket.isPaused() && this.buffered < n) this.socket.resume();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}
