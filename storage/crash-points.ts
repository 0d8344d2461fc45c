// Named points inside long operations where the crash tests kill the process: with
// VSERVER_CRASH_AT=<name> in its environment, a process reaching that point writes a line
// saying so to stderr (so a test can prove where it died) and kills itself with SIGKILL, as a
// kill -9 from outside would. Without the variable a point costs one comparison.

import fs from 'node:fs';

const target = process.env.VSERVER_CRASH_AT ?? '';

export function crashPoint(name: string): void {
  if (!target || target !== name) return;
  try {
    fs.writeSync(2, `crash point ${name} reached in pid ${process.pid}: killing this process\n`);
  } finally {
    process.kill(process.pid, 'SIGKILL');
  }
}
