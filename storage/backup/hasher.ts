// SHA-256 of a stream of buffers on a worker thread, so that hashing a backup copy runs beside
// the copy instead of after it. Buffers are handed over (transferred, not copied) and handed
// back once hashed, for the copy to fill again: a fresh 2 MiB buffer per block costs the kernel
// a page fault and a page of zeros per 4 KiB. At most MAX_QUEUED wait at a time, so a slow hash
// holds the copy back rather than filling memory.

import { Worker } from 'node:worker_threads';

const MAX_QUEUED = 16;

const WORKER_CODE = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
parentPort.on('message', (m) => {
  if (m === 'end') { parentPort.postMessage({ digest: hash.digest('hex') }); return; }
  hash.update(new Uint8Array(m));
  parentPort.postMessage(m, [m]);
});
`;

export class BackgroundHash {
  private readonly worker = new Worker(WORKER_CODE, { eval: true });
  private queued = 0;
  private wake: (() => void) | null = null;
  private digest: Promise<string>;
  private failed: Error | null = null;
  private readonly spare: ArrayBuffer[] = [];

  constructor() {
    let resolve!: (d: string) => void;
    let reject!: (e: Error) => void;
    this.digest = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.digest.catch(() => {});
    this.worker.on('message', (m: ArrayBuffer | { digest: string }) => {
      if (m instanceof ArrayBuffer) {
        this.queued--;
        if (this.spare.length < MAX_QUEUED) this.spare.push(m);
        this.wake?.();
        this.wake = null;
      } else {
        resolve(m.digest);
      }
    });
    this.worker.on('error', (e) => { this.failed = e; reject(e); this.wake?.(); });
  }

  /** A buffer of `size` bytes to fill and add: one the hash is done with, or a new one. Its content is undefined. */
  buffer(size: number): Buffer {
    const at = this.spare.findIndex((b) => b.byteLength === size);
    return at >= 0 ? Buffer.from(this.spare.splice(at, 1)[0]) : Buffer.allocUnsafeSlow(size);
  }

  /** Hands `data` over to be hashed next (the caller must not touch it afterwards); waits while too many are queued. */
  async add(data: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    while (this.queued >= MAX_QUEUED) await new Promise<void>((r) => { this.wake = r; });
    // A buffer that owns its memory is transferred; one that shares it (a slice of a pool) is copied.
    const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data.buffer : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    this.queued++;
    this.worker.postMessage(own, [own as ArrayBuffer]);
  }

  async finish(): Promise<string> {
    this.worker.postMessage('end');
    try {
      return await this.digest;
    } finally {
      await this.worker.terminate();
    }
  }

  async abandon(): Promise<void> {
    await this.worker.terminate();
  }
}
