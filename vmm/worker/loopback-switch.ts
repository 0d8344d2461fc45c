// A switch inside the worker that joins the VM's adapters on the "loopback" network to each
// other: QEMU's stream netdev sends each Ethernet frame with a 4-byte big-endian length, and a
// frame from one port goes to every other port. Enough to see frames cross until virtual
// networks exist in vserverd.

import net from 'node:net';
import { listenPrivately } from './private-socket.js';

const MAX_FRAME = 65_536 + 4;

export class LoopbackSwitch {
  private readonly ports = new Set<net.Socket>();
  private server: net.Server | null = null;
  framesForwarded = 0;

  async listen(socketPath: string): Promise<void> {
    this.server = net.createServer((port) => this.connect(port));
    await listenPrivately(this.server, socketPath);
  }

  private connect(port: net.Socket): void {
    this.ports.add(port);
    let pending: Buffer = Buffer.alloc(0);
    port.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 4) {
        const length = pending.readUInt32BE(0);
        if (length > MAX_FRAME) { port.destroy(); return; }
        if (pending.length < 4 + length) break;
        const frame = pending.subarray(0, 4 + length);
        pending = pending.subarray(4 + length);
        this.framesForwarded++;
        for (const other of this.ports) if (other !== port) other.write(frame);
      }
    });
    port.on('close', () => this.ports.delete(port));
    port.on('error', () => port.destroy());
  }

  close(): void {
    for (const port of this.ports) port.destroy();
    this.server?.close();
  }
}
