// The VM's COM1: QEMU's stdio in a pseudo-terminal. The console keeps a scrollback of what the
// guest wrote, counts every byte since the turn-on (the positions of GetSerialOutput), serves
// it on a unix socket (scrollback first, then live output; what a client sends is typed into
// the guest).

import net from 'node:net';
import { readFrom, scrollbackBytes, type SerialOutput } from '../serial-output.js';
import { listenPrivately } from './private-socket.js';

export interface Terminal {
  write(data: string | Buffer): void;
}

export class SerialConsole {
  private chunks: Buffer[] = [];
  private size = 0;
  /** Bytes the guest has written since the worker started, which is the VM's turn-on. */
  private total = 0;
  private terminal: Terminal | null = null;
  private readonly clients = new Set<net.Socket>();
  private server: net.Server | null = null;

  constructor(private readonly scrollbackLimit = scrollbackBytes()) {}

  attachTerminal(terminal: Terminal | null): void {
    this.terminal = terminal;
  }

  /** Output from the guest. */
  received(data: Buffer): void {
    this.chunks.push(data);
    this.size += data.length;
    this.total += data.length;
    while (this.size - this.chunks[0].length >= this.scrollbackLimit) this.size -= this.chunks.shift()!.length;
    for (const client of this.clients) client.write(data);
  }

  scrollback(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.scrollbackLimit));
  }

  /** The output from position `since` on (all that is kept when omitted). */
  read(since?: number): SerialOutput {
    const held = this.scrollback();
    return readFrom(held, this.total - held.length, since);
  }

  /** Input to the guest; dropped while no QEMU runs. */
  type(data: string | Buffer): void {
    this.terminal?.write(data);
  }

  async listen(socketPath: string): Promise<void> {
    this.server = net.createServer((client) => {
      this.clients.add(client);
      client.write(this.scrollback());
      client.on('data', (d) => this.type(d));
      client.on('close', () => this.clients.delete(client));
      client.on('error', () => client.destroy());
    });
    await listenPrivately(this.server, socketPath);
  }

  close(): void {
    for (const client of this.clients) client.end();
    this.server?.close();
  }
}
