// The unprivileged account QEMU runs as when vserver runs as root. scripts/setup.sh creates it;
// without it QEMU runs as "nobody", and never as root.

import { execFileSync } from 'node:child_process';

export const QEMU_USER = 'vserver-qemu';

export function qemuUser(log: (line: string) => void): string | null {
  if (process.getuid?.() !== 0) return null;
  for (const user of [QEMU_USER, 'nobody']) {
    try {
      execFileSync('id', ['-u', user], { stdio: 'ignore' });
      if (user !== QEMU_USER) log(`the user ${QEMU_USER} does not exist (run scripts/setup.sh); QEMU runs as ${user}`);
      return user;
    } catch { /* try the next */ }
  }
  throw new Error(`neither ${QEMU_USER} nor nobody exists; QEMU will not run as root`);
}
