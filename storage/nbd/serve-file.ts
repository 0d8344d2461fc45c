// Serving one VHD file over NBD until told to stop: what "vsctl vhd serve" and vhdmount run.

import path from 'node:path';
import { VhdDisk } from '../vhd/disk.js';
import { VhdError } from '../vhd/errors.js';
import { abandonWriteLock, acquireWriteLock, lockHolder, releaseWriteLock } from '../vhd/lock.js';
import { NbdExport } from './export.js';
import { NbdServer } from './server.js';

export interface ServeFileOptions {
  socket?: string;
  /** Loopback TCP port (0: any free port). */
  tcpPort?: number;
  readOnly?: boolean;
  /** Export name; the file's name by default. */
  exportName?: string;
  /**
   * Hold the write lock of every disk in the chain (the parents, and with readOnly the disk
   * itself), so that nobody changes what is served while it is served.
   */
  lockChain?: boolean;
  holder?: string;
  log?: (line: string) => void;
  /** Complete re-parentings a crash interrupted in the chain before serving it (a VM worker's disks). */
  finishReparents?: boolean;
}

export interface ServedFile {
  file: string;
  exportName: string;
  readOnly: boolean;
  socket?: string;
  port?: number;
  uri: string;
  server: NbdServer;
  /** The export: its disk may be replaced while served (snapshots, merges); stop() closes the one served then. */
  export: NbdExport;
  /** Stops listening, disconnects clients, flushes and closes the disk, releases its locks. */
  stop(): Promise<void>;
  /** Stops listening, disconnects clients and closes the disk without writing to it or its locks (a fenced VM). */
  abandon(): Promise<void>;
}

export async function serveFile(file: string, options: ServeFileOptions): Promise<ServedFile> {
  if (!options.socket && options.tcpPort === undefined) throw new Error('serving needs a unix socket path or a TCP port');
  const readOnly = options.readOnly ?? false;
  const holder = options.holder ?? `NBD server (pid ${process.pid})`;
  const disk = VhdDisk.open(file, { writable: !readOnly, holder, finishReparents: options.finishReparents });
  const locked: string[] = [];
  let server: NbdServer | null = null;
  try {
    // A disk that another process writes cannot be served consistently, nor can a chain whose parent changes.
    for (const level of disk.chain()) {
      if (level === disk && !readOnly) continue;
      const owner = lockHolder(level.path);
      if (owner) {
        throw new VhdError('VHD_E_LOCKED', `${level.path} is open for writing by ${owner.holder}; it cannot be served while it changes`, level.path);
      }
      if (options.lockChain && (level !== disk || readOnly)) {
        acquireWriteLock(level.path, holder);
        locked.push(level.path);
      }
    }
    const exportName = options.exportName ?? path.basename(file);
    server = new NbdServer({ log: options.log });
    const exp = new NbdExport(disk, { name: exportName, readOnly, description: path.resolve(file) });
    server.addExport(exp);
    let uri: string;
    let port: number | undefined;
    if (options.socket) {
      await server.listenUnix(options.socket);
      uri = `nbd+unix:///${encodeURIComponent(exportName)}?socket=${options.socket}`;
    } else {
      port = await server.listenTcp(options.tcpPort!);
      uri = `nbd://127.0.0.1:${port}/${encodeURIComponent(exportName)}`;
    }
    const running = server;
    let stopped = false;
    return {
      file: path.resolve(file), exportName, readOnly, socket: options.socket, port, uri, server: running, export: exp,
      async stop() {
        if (stopped) return;
        stopped = true;
        await running.close();
        release(exp.disk, locked);
      },
      async abandon() {
        if (stopped) return;
        stopped = true;
        await running.close();
        exp.disk.abandon();
        for (const p of locked) abandonWriteLock(p);
      },
    };
  } catch (e) {
    await server?.close();
    release(disk, locked);
    throw e;
  }
}

function release(disk: VhdDisk, locked: string[]): void {
  try {
    disk.close();
  } finally {
    for (const p of locked) releaseWriteLock(p);
  }
}
