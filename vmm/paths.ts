// Where a running VM's private files live: one folder per VM under the run root, holding its
// worker's sockets and status. QEMU may write only in the folder's "qemu" subfolder.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VmStatus } from './state.js';

export function runRoot(): string {
  if (process.env.VSERVER_RUN_DIR) return path.resolve(process.env.VSERVER_RUN_DIR);
  if (process.getuid?.() === 0) return '/run/vserver/vms';
  const base = process.env.XDG_RUNTIME_DIR || os.tmpdir();
  return path.join(base, `vserver-${process.getuid?.() ?? 'user'}`, 'vms');
}

export class VmPaths {
  constructor(readonly dir: string) {}
  static of(vmId: string, root = runRoot()): VmPaths {
    return new VmPaths(path.join(root, vmId));
  }
  get config(): string { return path.join(this.dir, 'config.json'); }
  get status(): string { return path.join(this.dir, 'status.json'); }
  get control(): string { return path.join(this.dir, 'control.sock'); }
  get console(): string { return path.join(this.dir, 'console.sock'); }
  get qmp(): string { return path.join(this.dir, 'qmp.sock'); }
  get vnc(): string { return path.join(this.dir, 'vnc.sock'); }
  /** A clustered VM's run licence (vmm/run-licence.ts), written by whoever starts the worker. */
  get licence(): string { return path.join(this.dir, 'licence.json'); }
  get workerLog(): string { return path.join(this.dir, 'worker.log'); }
  get qemuLog(): string { return path.join(this.dir, 'qemu.log'); }
  disk(slot: string): string { return path.join(this.dir, `disk-${slot}.sock`); }
  /** The one folder QEMU, once it has dropped privileges, may write in. */
  get qemuDir(): string { return path.join(this.dir, 'qemu'); }
  get screenshot(): string { return path.join(this.qemuDir, 'screen.png'); }
  get migrationOut(): string { return path.join(this.qemuDir, 'save.sock'); }
  get migrationIn(): string { return path.join(this.qemuDir, 'restore.sock'); }

  readStatus(): VmStatus | null {
    try {
      return JSON.parse(fs.readFileSync(this.status, 'utf8')) as VmStatus;
    } catch {
      return null;
    }
  }

  /** Replaces status.json whole, so that a reader never sees half of it. */
  writeStatus(status: VmStatus): void {
    const partial = `${this.status}.${process.pid}`;
    fs.writeFileSync(partial, `${JSON.stringify(status, null, 2)}\n`);
    fs.renameSync(partial, this.status);
  }
}
