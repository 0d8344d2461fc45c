// The unprivileged account QEMU runs as when vserver runs as root. scripts/setup.sh creates it;
// without it QEMU runs as "nobody", and never as root.

import { execFileSync } from 'node:child_process';

export const QEMU_USER = 'vserver-qemu';

export interface QemuAccount { name: string; uid: number; gid: number }

/** The account to give QEMU, looked up once; null when the worker is not root (QEMU stays as we are). */
export function qemuUser(log: (line: string) => void): QemuAccount | null {
  if (process.getuid?.() !== 0) return null;
  for (const name of [QEMU_USER, 'nobody']) {
    const account = lookup(name);
    if (!account) continue;
    if (name !== QEMU_USER) log(`the user ${QEMU_USER} does not exist (run scripts/setup.sh); QEMU runs as ${name}`);
    return account;
  }
  throw new Error(`neither ${QEMU_USER} nor nobody exists; QEMU will not run as root`);
}

function lookup(name: string): QemuAccount | null {
  try {
    const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()));
    return { name, uid, gid };
  } catch {
    return null;
  }
}
